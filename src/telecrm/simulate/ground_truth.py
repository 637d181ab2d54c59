"""Ground truth: what the simulator knew and the event stream only hints at.

A truth file is JSON Lines. Line 1 is the header (`kind: "config"`): the full config, the funnel
rates it implies (`expected_funnel`), the sBG Beta per area, plan prices and the provider panel.
Every following line (`kind: "patient"`) is one patient, written when the patient leaves the
simulation, so lines come in departure order, not id order: the latent parameters drawn at
arrival, the fate (deepest funnel step the patient was headed for) and the hidden instants
(silent dropout, churn, win-back) that fell inside the period.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from telecrm.simulate.clinical import AREAS, area_prices
from telecrm.simulate.config import SimulationConfig

if TYPE_CHECKING:
    from telecrm.simulate.actors import Patient
    from telecrm.simulate.generator import Simulation

FUNNEL_STEPS = (
    "registered_to_questionnaire",
    "questionnaire_to_consultation",
    "consultation_to_treatment",
    "treatment_to_first_order",
    "first_order_to_subscription",
)


def expected_funnel(config: SimulationConfig) -> dict[str, float]:
    """Step-to-step conversion the config implies, mixing the areas in their shares.

    Consultation -> treatment is (1 - no-show) x prescription rate. First fill and subscription
    differ between chronic and acute areas, so later steps weight the areas by how many
    patients reach them.
    """
    total = sum(a.share for a in AREAS)
    treated = {a.code: a.share / total for a in AREAS}
    fill = {
        a.code: config.first_fill_rate_chronic if a.chronic else config.first_fill_rate_acute
        for a in AREAS
    }
    ordered = {a.code: treated[a.code] * fill[a.code] for a in AREAS}
    subscribed = {
        a.code: ordered[a.code] * (config.subscription_rate if a.chronic else 0.0) for a in AREAS
    }
    return {
        "registered_to_questionnaire": config.questionnaire_rate,
        "questionnaire_to_consultation": config.consultation_rate,
        "consultation_to_treatment": (1 - config.no_show_rate) * config.prescription_rate,
        "treatment_to_first_order": sum(ordered.values()),
        "first_order_to_subscription": sum(subscribed.values()) / sum(ordered.values()),
    }


def truth_header(config: SimulationConfig, providers: list[dict[str, Any]]) -> dict[str, Any]:
    prices = area_prices(config)
    return {
        "kind": "config",
        "config": config.model_dump(mode="json"),
        "period": {"start": config.start_at.isoformat(), "end": config.end.isoformat()},
        "expected_funnel": expected_funnel(config),
        "areas": [
            {
                "area": a.code,
                "share": a.share,
                "chronic": a.chronic,
                "monthly_price": round(prices[a.code], 2),
                "sbg_alpha": round(config.sbg_params(a.glp1)[0], 4),
                "sbg_beta": round(config.sbg_params(a.glp1)[1], 4),
            }
            for a in AREAS
        ],
        "providers": providers,
    }


def patient_truth(sim: Simulation, p: Patient, *, censored: bool) -> dict[str, Any]:
    cal = sim.cal
    place = sim.world.people.places[p.place]
    latent_instants = {
        "dropped_out_at": p.dropped_out_at,
        "churned_at": p.churned_at,
        "won_back_at": p.won_back_at,
        "lapsed_again_at": p.lapsed_again_at,
    }
    hidden = {name: cal.iso(at) for name, at in latent_instants.items() if 0 < at < cal.end}
    return {
        "kind": "patient",
        "patient_id": p.id,
        "anonymous_id": p.anonymous_id,
        "arrived_at": cal.iso(p.arrival),
        "registered": p.registered,
        "state": place.state.code,
        "timezone": place.timezone,
        "condition_area": p.area_info().code,
        "sex": p.sex,
        "age": p.age,
        "language": p.language,
        "acquisition_channel": p.channel,
        "fate": p.fate.name.lower(),
        "no_show": p.no_show,
        "latent": {
            "churn_hazard_monthly": round(p.churn_hazard, 6),
            "reorder_rate_per_month": round(p.reorder_rate, 6),
            "dropout_per_order": round(p.dropout, 6),
            "spend_multiplier": round(p.spend, 6),
            "mean_order_value": round(sim.world.prices[p.area_info().code] * p.spend, 2),
            "plan_amount": p.plan_amount,
            "wins_back_if_churned": p.wins_back,
        },
        "hidden": hidden,
        "provider_id": p.provider or None,
        "active_at_end": censored,
    }


def write_ground_truth(config: SimulationConfig, path: Path) -> int:
    """Run the simulation for its truth alone (events are discarded); returns patients written.

    To get events and truth from one run, pass a sink to `generate(config, on_truth=...)`, as
    `telecrm simulate --truth` does.
    """
    from telecrm.simulate.generator import Simulation

    written = 0
    with path.open("wb") as out:
        sim = Simulation(config)
        out.write(orjson.dumps(truth_header(config, sim.providers)) + b"\n")

        def sink(record: dict[str, Any]) -> None:
            nonlocal written
            out.write(orjson.dumps(record) + b"\n")
            written += 1

        sim.on_truth = sink
        for _ in sim.events():
            pass
    return written
