"""Consultations and prescriptions use the clinical vocabulary the way clinicians would."""

from __future__ import annotations

import random

import pytest

from telecrm.simulate.clinical import AREAS, history_for, treatment_for
from telecrm.simulate.config import GLP1_SBG_ALPHA, GLP1_SBG_BETA
from tests.simulate.conftest import Run

AREA = {a.code: a for a in AREAS}
PAIRS = {
    "hypertension": "lisinopril",
    "type 2 diabetes": "metformin",
    "hyperlipidemia": "atorvastatin",
}


def test_a_comorbidity_comes_with_the_drug_taken_for_it(run: Run) -> None:
    seen = 0
    for e in run.of_type("consultation.submitted"):
        data = e["data"]
        if "conditions" not in data:
            continue  # a follow-up consultation carries symptoms only
        area = AREA[data["condition_area"]]
        for condition in data["conditions"][1:]:
            drug = PAIRS.get(condition)
            if drug is not None and area.code != condition:
                seen += 1
                assert any(m.startswith(drug) for m in data["medications"])
    assert seen > 50


def test_prescriptions_treat_the_consultations_area(run: Run) -> None:
    area_of: dict[str, str] = {}
    for e in run.events:
        if e["type"] == "consultation.submitted":
            area_of[e["data"]["consultation_id"]] = e["data"]["condition_area"]
        if e["type"] == "prescription.approved":
            area = AREA[area_of[e["data"]["consultation_id"]]]
            assert e["data"]["medication"] in {t.medication for t in area.treatments}


def test_symptoms_have_a_severity_on_the_0_to_10_scale(run: Run) -> None:
    severities = [
        s["severity"] for e in run.of_type("consultation.submitted") for s in e["data"]["symptoms"]
    ]
    assert severities and all(0 <= s <= 10 for s in severities)


def test_finasteride_is_never_prescribed_to_women() -> None:
    rng = random.Random(1)
    drugs = {treatment_for(rng, AREA["hair_loss"], "female", ()) for _ in range(500)}
    assert drugs and not any(d.startswith("finasteride") for d in drugs)


def test_a_sulfa_allergy_rules_out_sulfamethoxazole() -> None:
    rng = random.Random(1)
    drugs = {treatment_for(rng, AREA["uti"], "female", ("sulfonamides",)) for _ in range(500)}
    assert drugs == {"nitrofurantoin 100 mg capsule"}


def test_older_patients_bring_more_comorbidities() -> None:
    rng = random.Random(2)
    young = sum(len(history_for(rng, AREA["hypertension"], 25).conditions) for _ in range(2000))
    old = sum(len(history_for(rng, AREA["hypertension"], 70).conditions) for _ in range(2000))
    assert old > young * 1.3


@pytest.mark.parametrize(("months", "target"), [(3, 0.80), (6, 0.68), (12, 0.45)])
def test_glp1_churn_parameters_reproduce_published_persistence(months: int, target: float) -> None:
    survival = 1.0
    for t in range(1, months + 1):
        survival *= (GLP1_SBG_BETA + t - 1) / (GLP1_SBG_ALPHA + GLP1_SBG_BETA + t - 1)
    assert survival == pytest.approx(target, abs=0.025)
