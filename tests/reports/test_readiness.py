"""The analyzer against hand-labelled fixtures: endpoints, auth, data points, PHI, findings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from telecrm.domain.fields import FIELDS
from telecrm.reports.readiness import analyze
from telecrm.reports.spec_loader import load_spec
from tests.reports.answer_keys import KEYS, OPENAPI31, SWAGGER2

FIXTURES = Path(__file__).parent / "fixtures"


def report_for(key: dict[str, Any]) -> dict[str, Any]:
    return analyze(load_spec(FIXTURES / key["file"]))


def found_endpoints(report: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {
        (e["kind"], e["method"], e["path"], tuple(e["auth"]), e["relevance"]["level"])
        for e in report["endpoints"]
    }


def found_fields(report: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    out: dict[str, dict[str, str | None]] = {}
    for e in report["endpoints"]:
        fields: dict[str, str | None] = {u["path"]: None for u in e["unmapped"]}
        fields.update({f["path"]: f["catalog_field"] for f in e["fields"]})
        out[f"{e['method']} {e['path']}"] = fields
    return out


def precision_recall(tp: int, fp: int, fn: int) -> tuple[float, float]:
    return (tp / (tp + fp) if tp + fp else 1.0), (tp / (tp + fn) if tp + fn else 1.0)


def scores(key: dict[str, Any], report: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Precision and recall of endpoint extraction and of PHI field classification."""
    truth = {(k, m, p) for k, m, p, _a, _r in key["endpoints"]}
    got = {(k, m, p) for k, m, p, _a, _r in found_endpoints(report)}
    endpoint_pr = precision_recall(len(truth & got), len(got - truth), len(truth - got))
    tp = fp = fn = 0
    found = found_fields(report)
    for endpoint, labels in key["fields"].items():
        predicted = found.get(endpoint, {})
        for path in labels.keys() | predicted.keys():
            is_phi = bool(labels.get(path)) and FIELDS[labels[path]].is_phi
            said_phi = bool(predicted.get(path)) and FIELDS[predicted[path]].is_phi
            tp += is_phi and said_phi
            fp += said_phi and not is_phi
            fn += is_phi and not said_phi
    return {"endpoints": endpoint_pr, "phi_fields": precision_recall(tp, fp, fn)}


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k["file"])
def test_endpoints_with_auth_and_relevance_equal_the_answer_key(key: dict[str, Any]) -> None:
    assert found_endpoints(report_for(key)) == key["endpoints"]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k["file"])
def test_data_point_matches_equal_the_answer_key_but_for_the_listed_errors(
    key: dict[str, Any],
) -> None:
    found = found_fields(report_for(key))
    assert found.keys() == key["fields"].keys()
    wrong = {
        (endpoint, path)
        for endpoint, labels in key["fields"].items()
        for path in labels.keys() | found[endpoint].keys()
        if labels.get(path) != found[endpoint].get(path)
    }
    assert wrong == key["known_misses"] | key["known_false_matches"]


def test_precision_and_recall_on_the_fixtures(capsys: pytest.CaptureFixture[str]) -> None:
    results = {key["file"]: scores(key, report_for(key)) for key in KEYS}
    with capsys.disabled():
        for name, result in results.items():
            for what, (p, r) in result.items():
                print(f"\n{name} {what}: precision {p:.2f} recall {r:.2f}", end="")
        print()
    assert results[OPENAPI31["file"]]["endpoints"] == (1.0, 1.0)
    assert results[SWAGGER2["file"]]["endpoints"] == (1.0, 1.0)
    assert results[OPENAPI31["file"]]["phi_fields"] == (1.0, 7 / 8)  # `onset` is missed
    assert results[SWAGGER2["file"]]["phi_fields"] == (2 / 3, 1.0)  # `member_id` is not insurance


def test_same_endpoint_under_two_parameter_names_is_one_endpoint_with_both_evidences() -> None:
    report = report_for(OPENAPI31)
    [patient] = [e for e in report["endpoints"] if e["path"] == "/patients/{id}"]
    assert patient["evidence"] == [
        "#/paths/~1patients~1{id}/get",
        "#/paths/~1patients~1{patientId}/get",
    ]
    assert patient["aliases"] == ["/patients/{patientId}"]
    assert report["summary"]["duplicates_merged"] == 1


def test_unauthenticated_phi_route_cycle_and_duplicate_are_findings_with_evidence() -> None:
    findings = {f["kind"]: f for f in report_for(OPENAPI31)["findings"]}
    assert set(findings) == {"unauthenticated_phi", "duplicate_endpoint", "ref_cycle"}
    assert findings["unauthenticated_phi"]["evidence"] == [
        "#/paths/~1public~1intake/post",
        "#/paths/~1public~1intake/post/security",
        "#/paths/~1public~1intake/post/requestBody/content/application~1json/schema/properties/symptoms",
    ]
    assert findings["ref_cycle"]["evidence"] == [
        "#/components/schemas/Condition/allOf/1/properties/related"
    ]


def test_change_feed_and_pagination_parameters_are_named_with_their_pointers() -> None:
    report = report_for(SWAGGER2)
    [members] = [e for e in report["endpoints"] if e["path"] == "/members"]
    assert members["change_feed"] == [
        {"name": "modified_after", "evidence": "#/paths/~1members/get/parameters/2"}
    ]
    assert [p["name"] for p in members["pagination"]] == ["offset", "limit"]
    assert members["relevance"]["rule"] == "R2 change_feed"
    [hook] = [e for e in report["endpoints"] if e["webhook"]]
    assert (hook["path"], hook["webhook"]) == ("/hooks/payment-callback", "path")


def test_every_data_point_reports_catalog_phi_class_and_sync_policy() -> None:
    points = {p["key"]: p for p in report_for(OPENAPI31)["data_points"]}
    assert len(points) == 20
    assert points["insurance"]["phi"] and points["insurance"]["sync_policy"] == "one_way_baa_only"
    assert points["insurance"]["evidence"][0] == (
        "E1 #/components/schemas/Patient/properties/insuranceId"
    )
    assert points["billing_preferences"]["catalog_fields"] == []


def test_a_webhook_receiver_without_auth_is_a_finding() -> None:
    findings = report_for(SWAGGER2)["findings"]
    assert [(f["kind"], f["evidence"]) for f in findings] == [
        (
            "unauthenticated_webhook_receiver",
            [
                "#/paths/~1hooks~1payment-callback/post",
                "#/paths/~1hooks~1payment-callback/post/security",
            ],
        )
    ]
