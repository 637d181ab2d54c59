"""The /v1/ read API as each role sees it: fields cut to the role, reasons and break-glass
audited, search through the blind index, timelines and lists in keyset pages."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi import Depends, Request
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from telecrm.domain.clock import to_micros
from telecrm.domain.fields import FIELDS
from telecrm.observability.logs import configure_logging
from telecrm.security.audit import audit_rows
from telecrm.security.roles import Permission, Role, visible_fields
from telecrm.settings import Settings
from telecrm.sync.tables import disclosures, sync_dead_letters
from tests.support.builders import CANARY_EMAIL, CANARY_FIRST, CANARY_PHONE
from tests.support.read_api import (
    PATIENT,
    REASON,
    ReadApi,
    bearer,
    canaries_in,
    open_read_api,
    read_api_settings,
)

GLASS = {"X-Telecrm-Break-Glass": "patient unresponsive"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return read_api_settings(tmp_path)


@pytest.fixture
def api(runtime, clock) -> Iterator[ReadApi]:
    with open_read_api(runtime, clock) as read_api:
        read_api.seed_canary_patient()
        yield read_api


def get(api: ReadApi, role: Role, path: str, headers: dict[str, str] | None = None, **params):
    return api.http.get(
        path, headers={**bearer(api.token(role)), **(headers or {})}, params=params or None
    )


def audit_of(api: ReadApi, record_id: str) -> list[dict]:
    with api.runtime.engine.connect() as conn:
        return audit_rows(conn, record_id=record_id, limit=100)


# -- one patient ----------------------------------------------------------------------------------


def test_marketing_sees_only_fields_that_are_neither_identifying_nor_phi(api: ReadApi) -> None:
    response = get(api, Role.MARKETING, f"/v1/patients/{PATIENT}")
    assert response.status_code == 200
    body = response.json()
    assert body["patient_id"] == PATIENT and body["stage"]
    assert body["fields"]["orders_count"] == 1
    assert body["fields"]["marketing_consent"] is True
    assert all(not FIELDS[n].encrypted and not FIELDS[n].is_phi for n in body["fields"])
    assert "first_name" not in body["fields"] and "conditions" not in body["fields"]
    assert not canaries_in(response.text)


def test_a_care_coordinator_must_say_why(api: ReadApi) -> None:
    response = get(api, Role.CARE_COORDINATOR, f"/v1/patients/{PATIENT}")
    assert response.status_code == 422
    assert response.json()["type"].endswith("/reason_required")
    for bad in ("x", "a" * 65, "tab\there"):
        response = get(
            api, Role.CARE_COORDINATOR, f"/v1/patients/{PATIENT}", {"X-Telecrm-Reason": bad}
        )
        assert response.status_code == 422, bad
        assert response.json()["type"].endswith("/invalid_reason")


def test_a_care_coordinator_reads_phi_but_not_payment_or_insurance(api: ReadApi) -> None:
    response = get(api, Role.CARE_COORDINATOR, f"/v1/patients/{PATIENT}", REASON)
    assert response.status_code == 200
    fields = response.json()["fields"]
    assert fields["first_name"] == CANARY_FIRST and fields["phone"] == CANARY_PHONE
    assert fields["conditions"] and fields["symptoms"]
    assert "insurance_member_id" not in fields and "insurance_provider" not in fields
    assert set(fields) <= visible_fields(Role.CARE_COORDINATOR)
    (entry,) = [e for e in audit_of(api, PATIENT) if e["actor"].startswith("client:")]
    assert entry["action"] == "read" and entry["purpose"] == "care review"
    assert "first_name" in entry["fields"] and "conditions" in entry["fields"]
    assert entry["actor"] == f"client:{api.clients[Role.CARE_COORDINATOR]}"


def test_break_glass_shows_every_field_and_raises_the_alert(api: ReadApi) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        response = get(api, Role.CARE_COORDINATOR, f"/v1/patients/{PATIENT}", GLASS)
    finally:
        configure_logging("WARNING")
    assert response.status_code == 200
    assert response.json()["fields"]["insurance_member_id"] == "CANARYMEMBER77"
    (entry,) = [e for e in audit_of(api, PATIENT) if e["action"] == "break_glass"]
    assert entry["purpose"] == "patient unresponsive"
    assert "insurance_member_id" in entry["fields"]
    alert = [orjson.loads(line) for line in stream.getvalue().splitlines() if "break_glass" in line]
    assert alert and alert[0]["event"] == "access.break_glass"
    assert alert[0]["record_ids"] == [PATIENT] and alert[0]["level"] == "warning"
    assert "patient unresponsive" not in stream.getvalue()
    assert not canaries_in(stream.getvalue())
    metrics = api.http.get("/metrics").text
    assert 'telecrm_break_glass_reads_total{role="care_coordinator"} 1.0' in metrics


def test_break_glass_is_refused_to_other_roles(api: ReadApi) -> None:
    response = get(api, Role.MARKETING, f"/v1/patients/{PATIENT}", GLASS)
    assert response.status_code == 403
    assert response.json()["type"].endswith("/break_glass_not_allowed")


def test_an_unknown_patient_is_404_and_the_attempt_is_audited(api: ReadApi) -> None:
    response = get(api, Role.CARE_COORDINATOR, "/v1/patients/pat_nobody", REASON)
    assert response.status_code == 404
    assert [e["outcome"] for e in audit_of(api, "pat_nobody")] == ["not_found"]


@pytest.mark.parametrize("bad_id", ["' OR 1=1 --", "a" * 200, "..%2F..%2Fetc", "-leading"])
def test_a_malformed_patient_id_is_422_or_404(api: ReadApi, bad_id: str) -> None:
    response = get(api, Role.CARE_COORDINATOR, f"/v1/patients/{bad_id}", REASON)
    assert response.status_code in (404, 422), response.text


# -- search ---------------------------------------------------------------------------------------


def search(api: ReadApi, role: Role, body: object, headers: dict[str, str] | None = None):
    return api.http.post(
        "/v1/patients/search",
        headers={**bearer(api.token(role)), **(headers if headers is not None else REASON)},
        content=orjson.dumps(body),
    )


def test_search_by_email_or_phone_finds_the_patient(api: ReadApi) -> None:
    for body in ({"email": CANARY_EMAIL.upper()}, {"phone": "(415) 555-0123"}):
        response = search(api, Role.CARE_COORDINATOR, body)
        assert response.status_code == 200, response.text
        (found,) = response.json()["patients"]
        assert found["patient_id"] == PATIENT and found["fields"]["first_name"] == CANARY_FIRST
    entries = [e for e in audit_of(api, PATIENT) if e["action"] == "read"]
    assert [e["fields"][0] for e in entries] == ["phone", "email"]


def test_compliance_locates_a_patient_without_seeing_a_value(api: ReadApi) -> None:
    response = search(api, Role.COMPLIANCE, {"email": CANARY_EMAIL})
    assert response.json() == {"patients": [{"patient_id": PATIENT}]}


def test_search_needs_a_reason_from_every_role(api: ReadApi) -> None:
    response = search(api, Role.COMPLIANCE, {"email": CANARY_EMAIL}, headers={})
    assert response.status_code == 422
    assert response.json()["type"].endswith("/reason_required")


def test_an_address_nobody_has_finds_nothing(api: ReadApi) -> None:
    response = search(api, Role.CARE_COORDINATOR, {"email": "nobody@example.com"})
    assert response.status_code == 200 and response.json() == {"patients": []}


@pytest.mark.parametrize(
    "body",
    [
        {"email": "' OR 1=1 --"},
        {"phone": "' OR 1=1 --"},
        {"email": "x@example.com", "phone": "+14155550123"},
        {},
        {"email": "a" * 300 + "@example.com"},
        {"email": CANARY_EMAIL, "extra": 1},
        ["not", "an", "object"],
    ],
)
def test_bad_search_input_is_422_and_never_echoed(api: ReadApi, body: object) -> None:
    response = search(api, Role.CARE_COORDINATOR, body)
    assert response.status_code == 422, response.text
    assert "OR 1=1" not in response.text and "example.com" not in response.text


@given(text=st.text(max_size=80))
@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_search_text_finds_nothing_or_is_refused_never_fails(api: ReadApi, text: str) -> None:
    response = search(api, Role.CARE_COORDINATOR, {"email": text})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert all(p["patient_id"] == PATIENT for p in response.json()["patients"])


# -- timeline -------------------------------------------------------------------------------------


def test_marketing_sees_event_types_and_stage_changes_but_no_event_data(api: ReadApi) -> None:
    response = get(api, Role.MARKETING, f"/v1/patients/{PATIENT}/timeline")
    items = response.json()["items"]
    kinds = {i["kind"] for i in items}
    assert kinds == {"event", "stage"}
    assert [i["type"] for i in items if i["kind"] == "event"][:2] == [
        "patient.registered",
        "session.tracked",
    ]
    assert not any("data" in i for i in items)
    assert not canaries_in(response.text)


def test_a_care_coordinator_sees_event_data_only_where_every_field_is_visible(
    api: ReadApi,
) -> None:
    items = get(api, Role.CARE_COORDINATOR, f"/v1/patients/{PATIENT}/timeline", REASON).json()[
        "items"
    ]
    by_type = {i["type"]: i for i in items if i["kind"] == "event"}
    assert "data" not in by_type["patient.registered"]  # it sets insurance fields
    assert by_type["consultation.submitted"]["data"]["symptoms"][0]["severity"] == 4
    glass = get(api, Role.CARE_COORDINATOR, f"/v1/patients/{PATIENT}/timeline", GLASS).json()
    registered = next(i for i in glass["items"] if i.get("type") == "patient.registered")
    assert registered["data"]["insurance"]["member_id"] == "CANARYMEMBER77"


def test_timeline_pages_walk_every_item_once_in_time_order(api: ReadApi) -> None:
    everything = get(api, Role.MARKETING, f"/v1/patients/{PATIENT}/timeline").json()["items"]
    assert len(everything) > 6
    walked: list[dict] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = get(api, Role.MARKETING, f"/v1/patients/{PATIENT}/timeline", **params).json()
        walked.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == everything
    assert [i["at"] for i in walked] == sorted(i["at"] for i in walked)


@pytest.mark.parametrize("cursor", ["!!", "bm90LWEtY3Vyc29y", "MS4yLjk"])
def test_a_cursor_we_did_not_issue_is_422(api: ReadApi, cursor: str) -> None:
    response = get(api, Role.MARKETING, f"/v1/patients/{PATIENT}/timeline", cursor=cursor)
    assert response.status_code == 422


@pytest.mark.parametrize("limit", [0, 201, -1])
def test_page_sizes_are_capped(api: ReadApi, limit: int) -> None:
    response = get(api, Role.MARKETING, f"/v1/patients/{PATIENT}/timeline", limit=limit)
    assert response.status_code == 422


# -- compliance and operations --------------------------------------------------------------------


def test_compliance_reads_the_disclosures_of_a_patient_in_pages(api: ReadApi, clock) -> None:
    now_us = to_micros(clock.now())
    with api.runtime.engine.begin() as conn:
        conn.execute(
            disclosures.insert(),
            [
                {"at_us": now_us + i, "destination": "hubspot", "patient_key": PATIENT,
                 "object": "contact", "record_key": PATIENT, "fields": '["email","first_name"]',
                 "phi": False, "purpose": "crm sync"}
                for i in range(3)
            ],
        )  # fmt: skip
    first = get(api, Role.COMPLIANCE, f"/v1/patients/{PATIENT}/disclosures", limit=2).json()
    assert len(first["disclosures"]) == 2 and first["next_cursor"]
    assert first["disclosures"][0]["fields"] == ["email", "first_name"]
    rest = get(
        api,
        Role.COMPLIANCE,
        f"/v1/patients/{PATIENT}/disclosures",
        limit=2,
        cursor=first["next_cursor"],
    ).json()
    assert len(rest["disclosures"]) == 1 and rest["next_cursor"] is None
    assert {e["record_type"] for e in audit_of(api, PATIENT)} >= {"disclosures"}
    assert not canaries_in(str(first) + str(rest))


def test_the_audit_log_reads_newest_first_in_pages(api: ReadApi) -> None:
    first = get(api, Role.COMPLIANCE, "/v1/audit", limit=3).json()
    assert len(first["entries"]) == 3
    seqs = [e["seq"] for e in first["entries"]]
    assert seqs == sorted(seqs, reverse=True)
    second = get(api, Role.COMPLIANCE, "/v1/audit", limit=3, cursor=first["next_cursor"]).json()
    assert second["entries"][0]["seq"] < seqs[-1]
    mine = get(api, Role.ADMIN, "/v1/audit", record_id=PATIENT).json()["entries"]
    assert mine and all(PATIENT in e["record_ids"] for e in mine)


def test_dead_letters_are_listed_by_id_with_codes_only(api: ReadApi, clock) -> None:
    now_us = to_micros(clock.now())
    with api.runtime.engine.begin() as conn:
        conn.execute(
            sync_dead_letters.insert(),
            [
                {"destination": "hubspot", "object": "contact", "record_key": f"pat_{i}",
                 "patient_key": f"pat_{i}", "code": "INVALID_EMAIL", "detail": "property email",
                 "attempts": 1, "first_failed_us": now_us, "last_failed_us": now_us,
                 "status": "open"}
                for i in range(3)
            ],
        )  # fmt: skip
    page = get(api, Role.INTEGRATION, "/v1/sync/dead-letters", limit=2).json()
    assert [d["patient_id"] for d in page["dead_letters"]] == ["pat_0", "pat_1"]
    rest = get(
        api, Role.INTEGRATION, "/v1/sync/dead-letters", limit=2, cursor=page["next_cursor"]
    ).json()
    assert [d["patient_id"] for d in rest["dead_letters"]] == ["pat_2"]
    response = get(api, Role.INTEGRATION, "/v1/sync/dead-letters", destination="' OR 1=1 --")
    assert response.status_code == 422


def test_journeys_segments_and_funnels_describe_configuration_and_counts(api: ReadApi) -> None:
    journeys = get(api, Role.MARKETING, "/v1/journeys").json()["journeys"]
    assert "lead_nurturing" in {j["name"] for j in journeys}
    stats = get(api, Role.MARKETING, "/v1/journeys/lead_nurturing/stats").json()
    assert stats["journey"] == "lead_nurturing"
    assert get(api, Role.MARKETING, "/v1/journeys/no_such_journey/stats").status_code == 404
    segments = get(api, Role.INTEGRATION, "/v1/segments").json()["segments"]
    assert "marketable_email" in {s["name"] for s in segments}
    funnels = get(api, Role.ADMIN, "/v1/funnels").json()
    assert sum(funnels["patients_by_stage"].values()) == 1 and len(funnels["funnels"]) == 4
    clients = get(api, Role.ADMIN, "/v1/clients").json()["clients"]
    assert {c["role"] for c in clients} == {r.value for r in Role}
    assert "secret" not in str(clients).lower()


def test_the_principal_is_on_request_state_for_rate_limiting(api: ReadApi) -> None:
    app = api.http.app
    access = app.state.access  # type: ignore[attr-defined]

    @app.get("/v1/_whoami")  # type: ignore[attr-defined]
    def whoami(request: Request, _: object = Depends(access.require(Permission.SYNC_READ))):
        return {"client_id": request.state.principal.client_id,
                "role": request.state.principal.role.value}  # fmt: skip

    response = get(api, Role.INTEGRATION, "/v1/_whoami")
    assert response.json() == {"client_id": api.clients[Role.INTEGRATION], "role": "integration"}


def test_the_openapi_document_lists_the_read_api_and_its_security(api: ReadApi) -> None:
    schema = api.http.get("/openapi.json").json()
    for path in (
        "/oauth/token",
        "/v1/patients/{patient_id}",
        "/v1/patients/search",
        "/v1/patients/{patient_id}/timeline",
        "/v1/audit",
        "/v1/sync/dead-letters",
    ):
        assert path in schema["paths"], path  # fmt: skip
    assert "telecrm_oauth" in schema["components"]["securitySchemes"]
    flows = schema["components"]["securitySchemes"]["telecrm_oauth"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "/oauth/token"


# -- right of access ------------------------------------------------------------------------------


def test_compliance_exports_the_whole_record_with_a_reason_and_it_is_audited(api: ReadApi) -> None:
    path = f"/v1/patients/{PATIENT}/export"
    refused = get(api, Role.COMPLIANCE, path)
    assert refused.status_code == 422 and refused.json()["type"].endswith("/reason_required")
    response = get(api, Role.COMPLIANCE, path, headers=REASON)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    record = response.json()
    assert record["schema_version"] == 1
    values = {v["field"]: v["value"] for v in record["profile"]}
    assert values["first_name"] == CANARY_FIRST  # the patient's own record: every value
    page = get(api, Role.COMPLIANCE, path, headers=REASON, format="html")
    assert page.headers["content-type"].startswith("text/html")
    assert CANARY_FIRST in page.text
    assert get(api, Role.COMPLIANCE, path, headers=REASON, format="pdf").status_code == 422
    exports = [e for e in audit_of(api, PATIENT) if e["action"] == "export"]
    assert len(exports) == 2 and exports[0]["purpose"] == REASON["X-Telecrm-Reason"]
    unknown = get(api, Role.COMPLIANCE, "/v1/patients/nobody_here/export", headers=REASON)
    assert unknown.status_code == 404 and not canaries_in(unknown.text)
