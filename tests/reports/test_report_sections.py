"""The readiness report's plan sections: lifecycle support, per-CRM plans, roadmap, impact.

Counts are checked against the fixtures and the mapping files read independently (plain YAML),
never against what the code under test produced elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from telecrm.domain.events import TRIGGERS
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import Stage
from telecrm.reports.crm_plans import WEIGHTS, complexity
from telecrm.reports.readiness import analyze
from telecrm.reports.readiness_markdown import render_markdown
from telecrm.reports.spec_loader import load_spec

FIXTURES = Path(__file__).parent / "fixtures"
MAPPINGS = Path(__file__).parents[2] / "src" / "telecrm" / "connectors" / "mappings"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return analyze(load_spec(FIXTURES / "telehealth_openapi31.yaml", validate=False))


def stage(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["lifecycle"]["stages"] if s["stage"] == name)


def test_every_stage_funnel_and_trigger_is_listed_once(report) -> None:
    life = report["lifecycle"]
    assert [s["stage"] for s in life["stages"]] == [s.value for s in Stage]
    assert [f["funnel"] for f in life["funnels"]] == [
        "consultation",
        "purchase",
        "subscription",
        "advocacy",
    ]
    assert tuple(t["trigger"] for t in life["triggers"]) == TRIGGERS


def test_the_consultation_webhook_and_list_evidence_the_prospect_stage(report) -> None:
    # The fixture has GET /consultations and the 3.1 webhook consultationSubmitted.
    prospect = stage(report, "prospect")
    assert prospect["status"] == "evidenced"
    by_path = {e["path"]: e for e in prospect["endpoints"]}
    assert by_path["consultationSubmitted"]["how"] == "push (webhook)"
    assert by_path["consultationSubmitted"]["evidence"] == ["#/webhooks/consultationSubmitted/post"]
    assert by_path["/consultations"]["evidence"] == ["#/paths/~1consultations/get"]
    trigger = next(
        t for t in report["lifecycle"]["triggers"] if t["trigger"] == "consultation.submitted"
    )
    assert trigger["status"] == "push"


def test_stages_the_fixture_cannot_feed_say_what_is_missing(report) -> None:
    # No orders, subscriptions, prescriptions, referrals or sessions in the fixture.
    for name in ("visitor", "patient", "active_customer", "subscriber", "advocate"):
        s = stage(report, name)
        assert s["status"] == "missing" and s["endpoints"] == []
        assert all(e in s["missing"] for e in s["events"])
    # at_risk / churned / won_back are computed from purchases, which are missing too.
    assert stage(report, "churned")["status"] == "missing"
    assert "active_customer" in stage(report, "churned")["missing"]
    assert report["lifecycle"]["summary"]["stages_evidenced"] == 2  # lead and prospect
    assert all(f["status"] == "not measurable" for f in report["lifecycle"]["funnels"])


def test_a_platform_with_orders_feeds_the_purchase_stages_and_the_derived_ones(tmp_path) -> None:
    spec = tmp_path / "shop.json"
    spec.write_text(
        '{"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {'
        '"/orders": {"get": {"responses": {"200": {"description": "ok"}}}},'
        '"/prescriptions": {"get": {"responses": {"200": {"description": "ok"}}}},'
        '"/patients": {"get": {"responses": {"200": {"description": "ok"}}}}}}'
    )
    life = analyze(load_spec(spec, validate=False))["lifecycle"]
    status = {s["stage"]: s["status"] for s in life["stages"]}
    assert status["active_customer"] == "evidenced" and status["patient"] == "evidenced"
    assert status["at_risk"] == status["churned"] == status["won_back"] == "derived"
    funnels = {f["funnel"]: f["status"] for f in life["funnels"]}
    assert funnels["purchase"] == "measurable"
    assert funnels["consultation"] == "partial"  # patient reached, no visitor data
    assert funnels["subscription"] == "not measurable"


@pytest.mark.parametrize("crm", ["salesforce", "hubspot", "pipedrive", "dynamics"])
def test_crm_plan_counts_come_from_the_mapping_file(report, crm: str) -> None:
    plan = next(p for p in report["crm_plans"] if p["crm"] == crm)
    raw = yaml.safe_load((MAPPINGS / f"{crm}.yaml").read_text())
    assert len(plan["custom_fields"]) == len(raw["custom_properties"])
    assert len(plan["custom_tables"]) == len(raw.get("custom_tables", []))
    assert {o["crm_object"] for o in plan["objects"]} == {o["crm_object"] for o in raw["objects"]}
    assert plan["mapping_baa"] is raw["baa"] is False
    # Every custom field's evidence is the file and the line that declares it.
    lines = (MAPPINGS / f"{crm}.yaml").read_text().splitlines()
    for f in plan["custom_fields"]:
        file, line = f["evidence"].rsplit(":", 1)
        assert file == f"connectors/mappings/{crm}.yaml"
        assert f["name"] in lines[int(line) - 1] or "crm_object" in lines[int(line) - 1]


def test_phi_data_points_never_go_to_pipedrive_and_need_a_baa_elsewhere(report) -> None:
    phi_found = {p["key"] for p in report["data_points"] if p["phi"] and p["catalog_fields"]}
    assert phi_found == {"medical_history", "symptoms", "providers", "insurance"}
    plans = {p["crm"]: p for p in report["crm_plans"]}
    for crm, plan in plans.items():
        verdicts = {d["data_point"]: d["verdict"] for d in plan["data_points"]}
        for key in phi_found:
            if crm == "pipedrive":
                assert verdicts[key] == "never: no BAA"
            else:
                assert verdicts[key] != "synced"
    # Dynamics under Microsoft's BAA: dynamics-baa.yaml carries conditions (medical history).
    dyn = {d["data_point"]: d for d in plans["dynamics"]["data_points"]}
    assert dyn["medical_history"]["verdict"].startswith("only with dynamics-baa")
    assert "conditions" in dyn["medical_history"]["mapped_fields"]
    assert FIELDS["conditions"].is_phi


def test_complexity_is_the_weighted_sum_of_counted_work(report) -> None:
    phi_fields = {f["catalog_field"] for e in report["endpoints"] for f in e["fields"] if f["phi"]}
    webhooks = sum(1 for e in report["endpoints"] if e["webhook"])
    for plan in report["crm_plans"]:
        raw = yaml.safe_load((MAPPINGS / f"{plan['crm']}.yaml").read_text())
        counts = {t["work"]: t["count"] for t in plan["complexity"]["terms"]}
        assert counts["custom_fields"] == len(raw["custom_properties"])
        assert counts["crm_objects"] == len({o["crm_object"] for o in raw["objects"]})
        assert counts["webhooks_to_receive"] == webhooks == 1
        assert counts["phi_fields_baa_decision"] == len(phi_fields) == 4
        assert counts["endpoints_to_pull"] == 4  # GET E1, E3, E4, E5 (high/medium, not webhooks)
        expected = sum(counts[k] * w for k, w in WEIGHTS.items())
        assert plan["complexity"]["total"] == expected


def test_complexity_bands_follow_the_stated_limits() -> None:
    zero = dict.fromkeys(WEIGHTS, 0)
    assert complexity({**zero, "custom_fields": 39})["band"] == "low"
    assert complexity({**zero, "custom_fields": 40})["band"] == "medium"
    assert complexity({**zero, "custom_fields": 80})["band"] == "high"


def test_the_roadmap_starts_with_the_high_finding_and_cites_its_evidence(report) -> None:
    steps = report["roadmap"]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    first = steps[0]
    assert "unauthenticated phi" in first["title"]
    assert "#/paths/~1public~1intake/post" in first["evidence"]
    titles = [s["title"] for s in steps]
    assert any(t.startswith("Provision Dynamics 365") for t in titles)
    assert any("change feed" in t for t in titles)
    assert titles[-1].startswith("Clean up")


def test_business_impact_has_no_measured_figure_and_sources_every_assumption(report) -> None:
    impact = report["business_impact"]
    assert impact["measured"] == []
    research = Path(__file__).parents[3] / "shared" / "research"
    for a in impact["assumptions"]:
        assert a["source"].split("https://")[1]  # a URL
        url = "https://" + a["source"].split("https://")[1]
        if research.exists():  # the research notes are the source of each figure
            notes = "".join(p.read_text() for p in research.glob("*.md"))
            assert url.rstrip("/") in notes


def test_markdown_links_each_plan_count_to_its_section(report) -> None:
    md = render_markdown(report)
    for heading in (
        "## Channels and triggers",
        "## Lifecycle and funnels",
        "## CRM plans",
        "## Roadmap",
        "## Business impact",
    ):
        assert heading in md
    assert "| lifecycle stages evidenced | 2 of 10 (+0 derived) | [Lifecycle and funnels]" in md
    dyn = next(p for p in report["crm_plans"] if p["crm"] == "dynamics")
    assert f"| Dynamics 365 complexity | {dyn['complexity']['total']} (" in md
    assert '<a id="crm-dynamics"></a>' in md
    assert "[E8](#e8)" in md.split("## Channels and triggers")[1]


def test_a_source_trees_own_triggers_evidence_stages_and_triggers() -> None:
    from telecrm.reports.source_report import analyze_tree

    report = analyze_tree(FIXTURES / "fastapi_app")
    in_source = {t["name"]: t["evidence"] for t in report["messages"]["triggers"]}
    paid = next(t for t in report["lifecycle"]["triggers"] if t["trigger"] == "order.paid")
    assert paid["status"] == "in source"
    assert paid["source"] == [{"name": "order.paid", "evidence": in_source["order.paid"]}]
    active = stage(report, "active_customer")
    assert active["status"] == "evidenced"
    assert {"name": "order.paid", "evidence": in_source["order.paid"]} in active["source"]
    md = render_markdown(report)
    assert f"`{in_source['order.paid']}`" in md.split("## Channels and triggers")[1]
