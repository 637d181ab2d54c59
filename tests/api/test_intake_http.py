"""POST /v1/events over HTTP: signed, idempotent, all-or-nothing, problem+json for every refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import func, select
from standardwebhooks import Webhook

from telecrm.ingest.tables import events
from tests.support.builders import SECRET, SignedClient, event, registration


def stored_events(runtime) -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar_one()


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"].endswith("/" + code), body
    assert body["detail"]
    return body


def test_a_signed_single_event_is_stored_and_acknowledged(
    api: SignedClient, runtime, clock
) -> None:
    response = api.post(registration("pat_1", clock.now()))
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert stored_events(runtime) == 1


def test_a_batch_is_accepted_in_any_of_the_three_shapes(api: SignedClient, runtime, clock) -> None:
    now = clock.now()
    assert api.post([registration("pat_a", now)]).json()["accepted"] == 1
    assert api.post({"events": [registration("pat_b", now)]}).json()["accepted"] == 1
    assert stored_events(runtime) == 2


def test_a_duplicate_event_id_answers_2xx_and_changes_nothing(
    api: SignedClient, runtime, clock
) -> None:
    e = registration("pat_1", clock.now())
    api.post(e)
    again = api.post(e)
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 1}
    assert stored_events(runtime) == 1


def test_a_sender_signing_with_the_reference_library_is_accepted(
    api: SignedClient, runtime, clock
) -> None:
    body = orjson.dumps(registration("pat_ref", clock.now())).decode()
    signature = Webhook(SECRET).sign("msg_ref", clock.now(), body)
    response = api.client.post(
        "/v1/events",
        content=body,
        headers={
            "webhook-id": "msg_ref",
            "webhook-timestamp": str(int(clock.now().timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
        },
    )
    assert response.status_code == 202


def test_a_signature_the_reference_library_rejects_is_rejected(
    api: SignedClient, runtime, clock
) -> None:
    body = orjson.dumps(registration("pat_ref", clock.now()))
    headers = {
        "webhook-id": "msg_ref",
        "webhook-timestamp": str(int(clock.now().timestamp())),
        "webhook-signature": "v1,"
        + Webhook("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
        .sign("msg_ref", clock.now(), body.decode())
        .split(",")[1],
    }
    try:
        Webhook(SECRET).verify(body, headers)
        raise AssertionError("the reference library should reject this signature")
    except Exception as exc:  # the library's own WebhookVerificationError
        assert "verif" in type(exc).__name__.lower() or "signature" in str(exc).lower()
    response = api.client.post("/v1/events", content=body, headers=headers)
    assert_problem(response, 401, "bad_signature")
    assert stored_events(runtime) == 0


def test_a_rotated_secret_and_the_previous_one_are_both_accepted(runtime, clock, engine) -> None:
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from telecrm.api.app import create_app
    from telecrm.bootstrap import bootstrap

    new = "whsec_" + "bmV3c2VjcmV0bmV3c2VjcmV0bmV3c2VjcmV0MTI="
    settings = runtime.settings.model_copy(
        update={"webhook_secrets": [SecretStr(new), SecretStr(SECRET)]}
    )
    rt = bootstrap(settings, clock=clock, engine=engine, migrate=False)
    with TestClient(create_app(rt, embedded_worker=False)) as client:
        old_sender = SignedClient(client, clock.now(), SECRET)
        new_sender = SignedClient(client, clock.now(), new)
        assert old_sender.post(registration("pat_old", clock.now())).status_code == 202
        assert (
            new_sender.post(registration("pat_new", clock.now()), msg_id="msg_n").status_code == 202
        )


def test_missing_signature_headers_are_refused(api: SignedClient, runtime, clock) -> None:
    response = api.client.post(
        "/v1/events", content=orjson.dumps(registration("pat_1", clock.now()))
    )
    body = assert_problem(response, 401, "missing_headers")
    assert "webhook-signature" in body["detail"]
    assert stored_events(runtime) == 0


def test_a_tampered_body_fails_the_signature(api: SignedClient, runtime, clock) -> None:
    body = orjson.dumps(registration("pat_1", clock.now()))
    from telecrm.ingest.signatures import signed_headers

    headers = signed_headers(SECRET, "msg_t", int(clock.now().timestamp()), body)
    response = api.client.post("/v1/events", content=body.replace(b"Ada", b"Eve"), headers=headers)
    assert_problem(response, 401, "bad_signature")
    assert stored_events(runtime) == 0


def test_a_stale_timestamp_is_refused(api: SignedClient, runtime, clock) -> None:
    stale = int((clock.now() - timedelta(minutes=6)).timestamp())
    response = api.post(registration("pat_1", clock.now()), timestamp=stale)
    body = assert_problem(response, 401, "stale_timestamp")
    assert "300 s" in body["detail"]


def test_a_replayed_webhook_id_with_another_body_is_refused(
    api: SignedClient, runtime, clock
) -> None:
    assert api.post(registration("pat_1", clock.now()), msg_id="msg_same").status_code == 202
    response = api.post(registration("pat_2", clock.now()), msg_id="msg_same")
    assert_problem(response, 409, "webhook_id_reused")
    assert stored_events(runtime) == 1


def test_a_retried_webhook_message_is_idempotent(api: SignedClient, runtime, clock) -> None:
    payload = registration("pat_1", clock.now())
    assert api.post(payload, msg_id="msg_retry").status_code == 202
    again = api.post(payload, msg_id="msg_retry")
    assert again.status_code == 202
    assert again.json()["accepted"] == 0
    assert stored_events(runtime) == 1


def test_malformed_json_is_a_400_problem(api: SignedClient, runtime) -> None:
    response = api.post(None, raw=b'{"id": "evt_1", "type": ')
    body = assert_problem(response, 400, "malformed_json")
    assert "position" in body["detail"]


def test_a_body_over_the_size_limit_is_refused_before_it_is_read(
    api: SignedClient, runtime
) -> None:
    response = api.post(None, raw=b"[" + b" " * (runtime.settings.max_body_bytes + 10) + b"]")
    assert_problem(response, 413, "body_too_large")


def test_a_batch_over_1000_events_is_refused(api: SignedClient, runtime, clock) -> None:
    batch = [registration(f"pat_{i}", clock.now()) for i in range(1001)]
    body = assert_problem(api.post(batch), 413, "batch_too_large")
    assert "1001" in body["detail"]
    assert stored_events(runtime) == 0


def test_one_invalid_event_refuses_the_whole_batch_and_names_it(
    api: SignedClient, runtime, clock
) -> None:
    now = clock.now()
    batch = [
        registration("pat_1", now),
        registration("pat_2", now, data={"email": "not-an-email"}),
        event("made.up", "pat_1", now),
    ]
    body = assert_problem(api.post(batch), 422, "invalid_events")
    assert [e["index"] for e in body["errors"]] == [1, 2]
    assert body["errors"][0]["reason"] == "invalid_data" and "email" in body["errors"][0]["detail"]
    assert body["errors"][1]["reason"] == "unknown_type"
    assert stored_events(runtime) == 0


def test_wrong_types_unknown_versions_and_future_timestamps_are_422(
    api: SignedClient, runtime, clock
) -> None:
    now = clock.now()
    wrong_type = event("order.paid", "pat_1", now, {"order_id": "o1", "amount": "lots"})
    unknown_version = {**registration("pat_1", now), "version": 9}
    future = registration("pat_1", now + timedelta(hours=1))
    bad_phone = registration("pat_1", now, data={"phone": "+1 000 000 0000"})
    assert "data.phone" in assert_problem(api.post(bad_phone), 422, "invalid_data")["detail"]
    assert_problem(api.post(wrong_type), 422, "invalid_data")
    assert_problem(api.post(unknown_version), 422, "unknown_version")
    assert_problem(api.post(future), 422, "future_timestamp")
    assert stored_events(runtime) == 0


def test_an_update_for_an_unknown_patient_is_refused(api: SignedClient, runtime, clock) -> None:
    response = api.post(event("patient.updated", "pat_ghost", clock.now(), {"language": "en"}))
    assert_problem(response, 422, "unknown_patient")
    assert stored_events(runtime) == 0


def test_an_update_in_the_same_batch_as_the_registration_is_accepted(
    api: SignedClient, clock
) -> None:
    now = clock.now()
    batch = [registration("pat_1", now), event("patient.updated", "pat_1", now, {"language": "es"})]
    assert api.post(batch).json()["accepted"] == 2


def test_unicode_names_are_welcome_but_control_characters_are_not(
    api: SignedClient, runtime, clock
) -> None:
    now = clock.now()
    ok = registration("pat_u", now, data={"first_name": "Zoë", "last_name": "Ñúñez-O'Brien 山田"})
    assert api.post(ok).status_code == 202
    bad = registration("pat_c", now, data={"first_name": "Bad\x07Name"})
    body = assert_problem(api.post(bad), 422, "invalid_data")
    assert "first_name" in body["errors"][0]["detail"]


def test_client_mistakes_never_produce_a_5xx(api: SignedClient, clock) -> None:
    now = clock.now()
    weird = [
        b"null",
        b"42",
        b'"text"',
        b"[]",
        b"[1,2]",
        b'{"events": 5}',
        b"{}",
        b'{"type": null}',
        orjson.dumps({"id": "x" * 500, "type": "patient.registered"}),
        orjson.dumps(registration("pat_1", now, data={"date_of_birth": "1800-01-01"})),
        orjson.dumps({**registration("pat_1", now), "occurred_at": "2026-01-01T00:00:00"}),
        "\ud83d\ude00".encode("utf-8", "surrogatepass") if False else "😀".encode(),
    ]
    for raw in weird:
        response = api.post(None, raw=raw)
        assert 400 <= response.status_code < 500, (raw, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"


def test_health_and_metrics_report_what_happened(api: SignedClient, clock) -> None:
    assert api.client.get("/healthz").json()["status"] == "ok"
    api.post(registration("pat_1", clock.now()))
    api.post(None, raw=b"{bad")
    text = api.client.get("/metrics").text
    assert 'telecrm_events_accepted_total{source="webhook"} 1.0' in text
    assert 'telecrm_events_rejected_total{reason="malformed_json"} 1.0' in text
    assert "telecrm_queue_depth 1.0" in text
    assert "telecrm_processing_lag_seconds" in text


def test_unknown_routes_answer_problem_json(api: SignedClient) -> None:
    assert_problem(api.client.get("/v1/nothing"), 404, "not_found")
    assert_problem(api.client.get("/v1/events"), 405, "method_not_allowed")


def test_the_openapi_document_describes_the_intake(api: SignedClient) -> None:
    doc = api.client.get("/openapi.json").json()
    responses = doc["paths"]["/v1/events"]["post"]["responses"]
    assert {"202", "401", "409", "413", "422"} <= set(responses)


def test_old_webhook_ids_are_pruned_but_events_stay_deduplicated(
    api: SignedClient, runtime, clock
) -> None:
    payload = registration("pat_1", clock.now())
    api.post(payload, msg_id="msg_old")
    clock.advance(timedelta(days=8))
    assert runtime.prune_webhook_receipts() == 1
    api.now = clock.now()
    again = api.post(payload, msg_id="msg_old")  # the id is forgotten; the event is not
    assert again.status_code == 202 and again.json() == {"accepted": 0, "duplicates": 1}
    assert stored_events(runtime) == 1


def test_the_same_fact_under_a_new_event_id_is_a_duplicate(
    api: SignedClient, runtime, clock
) -> None:
    now = clock.now()
    api.post(registration("pat_1", now))
    paid = event("order.paid", "pat_1", now, {"order_id": "o_77", "amount": 40})
    assert api.post(paid).json() == {"accepted": 1, "duplicates": 0}
    # The platform re-sends the same payment under a fresh event id (or a pull finds it again).
    again = {**paid, "id": "evt_resent_o_77"}
    assert api.post(again).json() == {"accepted": 0, "duplicates": 1}
    assert stored_events(runtime) == 2


def test_facts_that_differ_are_all_kept(api: SignedClient, runtime, clock) -> None:
    now = clock.now()
    batch = [
        registration("pat_1", now),
        event(
            "consultation.assigned", "pat_1", now, {"consultation_id": "c1", "provider_id": "dr_a"}
        ),
        # reassigned to another provider: a new fact
        event(
            "consultation.assigned", "pat_1", now, {"consultation_id": "c1", "provider_id": "dr_b"}
        ),
        # the same reassignment twice in one batch: one fact
        event(
            "consultation.assigned", "pat_1", now, {"consultation_id": "c1", "provider_id": "dr_b"}
        ),
        # updates may recur: never facts
        event("patient.updated", "pat_1", now, {"language": "es"}),
        event("patient.updated", "pat_1", now, {"language": "es"}),
    ]
    assert api.post(batch).json() == {"accepted": 5, "duplicates": 1}


def test_each_server_process_builds_its_app_from_the_environment(
    engine, monkeypatch, tmp_path
) -> None:
    from fastapi.testclient import TestClient

    from telecrm.api.app import app_from_environment
    from tests.support.builders import MASTER_KEY

    for name, value in {
        "TELECRM_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "TELECRM_MASTER_KEY": MASTER_KEY,
        "TELECRM_WEBHOOK_SECRETS": SECRET,
        "TELECRM_EMBEDDED_WORKER": "false",
        "TELECRM_HOME": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value)
    with TestClient(app_from_environment()) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        assert (
            SignedClient(client, datetime.now(UTC))
            .post(registration("pat_env", datetime.now(UTC)))
            .status_code
            == 202
        )


def test_the_openapi_document_describes_messages_and_the_provider_webhooks(
    api: SignedClient,
) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    request = paths["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]
    assert {"request_id", "patient_id", "template", "channel"} <= set(
        request["schema"]["properties"]
    )
    for path in ("/webhooks/sendgrid", "/webhooks/twilio/status", "/webhooks/twilio/inbound"):
        assert {"200", "400", "401"} <= set(paths[path]["post"]["responses"])
