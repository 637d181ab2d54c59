"""Provider callbacks and platform message requests through telecrm's real API app: signatures
refused with problem+json and nothing changed, replays counted and ignored, and what each
accepted callback does to messages, suppressions and consent. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
import structlog
from sqlalchemy import func, select, update

from telecrm.domain.clock import to_micros
from telecrm.ingest.signatures import signed_headers
from telecrm.ingest.tables import events
from telecrm.messaging.planner import address_bidx
from telecrm.messaging.tables import consent_ledger, message_suppressions, messages
from telecrm.messaging.twilio_webhook import twilio_signature
from telecrm.messaging.wiring import INBOUND_PATH, STATUS_PATH
from telecrm.observability.logs import configure_logging
from telecrm.profiles.tables import profiles
from telecrm.sandbox.sendgrid_events import WebhookSigner, serialise_events
from telecrm.store.schema import metadata
from tests.messaging.harness import PUBLIC, MessagingHarness, messaging_harness
from tests.support.builders import SECRET, event, registration

# 2026-03-02 17:00 UTC: 09:00 in Los Angeles (the patients' zone): inside the default window.
DAYTIME = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
PHONE = "+14155552671"  # registration()'s phone
OTHER_PHONE = "+14155550188"
SG_PATH = "/webhooks/sendgrid"
WATCHED = ("messages", "consent_ledger", "events", "message_suppressions", "provider_receipts")


# -- helpers ------------------------------------------------------------------------------------
def consenting(patient_id: str, at: datetime, **data: Any) -> dict[str, Any]:
    prefs = {"sms_consent": True, "email_consent": True}
    return registration(patient_id, at, data={"communication_preferences": prefs, **data})


def snapshot(h: MessagingHarness) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: a refused request must leave all of them as they were."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with h.runtime.engine.connect() as conn:
        for table in metadata.sorted_tables:
            out[table.name] = sorted((tuple(r) for r in conn.execute(select(table))), key=repr)
    return out


def changed(before: dict[str, list[Any]], after: dict[str, list[Any]]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


def rows(h: MessagingHarness, **where: Any) -> list[Any]:
    query = select(messages)
    for key, value in where.items():
        query = query.where(getattr(messages.c, key) == value)
    with h.runtime.engine.connect() as conn:
        return list(conn.execute(query.order_by(messages.c.created_us, messages.c.channel)))


def one(h: MessagingHarness, **where: Any) -> Any:
    found = rows(h, **where)
    assert len(found) == 1, found
    return found[0]


def ledger(h: MessagingHarness, patient_key: str = "p1") -> list[tuple[str, str, bool, str]]:
    with h.runtime.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(
                    consent_ledger.c.channel,
                    consent_ledger.c.purpose,
                    consent_ledger.c.granted,
                    consent_ledger.c.source,
                )
                .where(consent_ledger.c.patient_key == patient_key)
                .order_by(consent_ledger.c.id)
            )
        ]


def suppressions(h: MessagingHarness) -> list[tuple[str, str, str]]:
    with h.runtime.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(
                    message_suppressions.c.channel,
                    message_suppressions.c.address_bidx,
                    message_suppressions.c.reason,
                )
            )
        ]


def bidx(h: MessagingHarness, channel: str, address: str) -> str:
    key = "email" if channel == "email" else "phone"
    found, valid = address_bidx(h.runtime.blind_index(), channel, {key: address})
    assert found and valid
    return found


def count_events(h: MessagingHarness, type_: str) -> int:
    with h.runtime.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(events).where(events.c.type == type_)
        ).scalar_one()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["type"].endswith("/" + code), body
    assert body["title"] and body["detail"]
    return body


# SendGrid --------------------------------------------------------------------------------------
def sg_event(h: MessagingHarness, kind: str, message_id: str | None, *,
             email: str = "p1@example.com", at: datetime | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    e: dict[str, Any] = {
        "email": email,
        "timestamp": int((at or h.clock.now()).timestamp()),
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "Xa1" + uuid.uuid4().hex[:10] + ".filter0001",
        "smtp-id": "<x@sendgrid.net>",
    }
    if message_id:
        e["telecrm_message_id"] = message_id
    return e | extra


def post_sendgrid(h: MessagingHarness, body: list[dict[str, Any]] | bytes, *,
                  signer: WebhookSigner | None = None, timestamp: int | None = None,
                  headers: dict[str, str] | None = None, sign_body: bytes | None = None) -> httpx.Response:  # fmt: skip
    raw = body if isinstance(body, bytes) else serialise_events(body)
    stamp = str(timestamp if timestamp is not None else int(h.clock.now().timestamp()))
    signed = (signer or h.sendgrid.signer).headers(stamp, sign_body if sign_body else raw)
    return h.api.post(SG_PATH, content=raw, headers=signed if headers is None else headers)


# Twilio ----------------------------------------------------------------------------------------
def post_twilio(h: MessagingHarness, path: str, params: dict[str, str], *,
                url: str | None = None, token: str | None = None, signed_params: dict[str, str] | None = None,
                signature: str | None = None) -> httpx.Response:  # fmt: skip
    sig = signature or twilio_signature(
        token or h.twilio.config.auth_token, url or PUBLIC + path, signed_params or params
    )
    return h.api.post(
        path,
        content=urlencode(params).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig},
    )


def sid() -> str:
    return "SM" + uuid.uuid4().hex


def inbound_params(h: MessagingHarness, from_phone: str, body: str) -> dict[str, str]:
    s = sid()
    return {
        "MessageSid": s, "SmsSid": s, "AccountSid": h.twilio.config.account_sid,
        "MessagingServiceSid": h.twilio.config.messaging_service_sid, "From": from_phone,
        "To": h.twilio.config.sender_pool[0], "Body": body, "NumMedia": "0", "NumSegments": "1",
        "SmsStatus": "received", "ApiVersion": "2010-04-01",
    }  # fmt: skip


def status_params(
    h: MessagingHarness, message_sid: str, status: str, **extra: str
) -> dict[str, str]:
    return {
        "AccountSid": h.twilio.config.account_sid, "From": h.twilio.config.sender_pool[0],
        "To": PHONE, "MessageSid": message_sid, "SmsSid": message_sid, "SmsStatus": status,
        "MessageStatus": status, "ApiVersion": "2010-04-01",
        "MessagingServiceSid": h.twilio.config.messaging_service_sid,
    } | extra  # fmt: skip


# /v1/messages ----------------------------------------------------------------------------------
def post_message(
    h: MessagingHarness, payload: dict[str, Any], *, signed: bool = True
) -> httpx.Response:
    body = orjson.dumps(payload)
    headers = {"content-type": "application/json"}
    if signed:
        headers |= signed_headers(
            SECRET, f"msg_{uuid.uuid4().hex}", int(h.clock.now().timestamp()), body
        )
    return h.api.post("/v1/messages", content=body, headers=headers)


@pytest.fixture
def h(runtime, clock):  # type: ignore[no-untyped-def]
    """A harness at daytime with patient p1 registered (email and SMS consent) and welcomed."""
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock) as harness:
        harness.feed([consenting("p1", DAYTIME - timedelta(minutes=1))])
        _plan, sent = harness.run()
        assert sent.sent == 2
        yield harness


def welcome(h: MessagingHarness, channel: str) -> Any:
    return one(h, patient_key="p1", template="welcome", channel=channel)


def next_consultation(h: MessagingHarness, channel: str, consultation: str = "c1") -> Any:
    """A later trigger for p1, planned and sent: its message on `channel`."""
    h.later(days=2)
    h.feed(
        [event("consultation.submitted", "p1", h.clock.now(), {"consultation_id": consultation})]
    )
    h.run()
    return one(h, patient_key="p1", template="consultation_received", channel=channel)


# -- SendGrid: refused ----------------------------------------------------------------------------
def test_sendgrid_signed_by_another_key_is_refused_and_nothing_changes(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    batch = [sg_event(h, "delivered", welcome(h, "email").message_id)]
    r = post_sendgrid(h, batch, signer=WebhookSigner())
    assert_problem(r, 401, "signature_mismatch")
    assert r.headers.get("WWW-Authenticate")
    assert changed(before, snapshot(h)) == set()


def test_sendgrid_with_a_stale_timestamp_is_refused(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    batch = [sg_event(h, "delivered", welcome(h, "email").message_id)]
    now = int(h.clock.now().timestamp())
    assert_problem(post_sendgrid(h, batch, timestamp=now - 301), 401, "stale_timestamp")
    assert_problem(post_sendgrid(h, batch, timestamp=now + 301), 401, "future_timestamp")
    assert changed(before, snapshot(h)) == set()
    assert post_sendgrid(h, batch, timestamp=now - 299).status_code == 200  # inside 5 minutes


def test_sendgrid_body_altered_after_signing_is_refused(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    mid = welcome(h, "email").message_id
    signed = serialise_events([sg_event(h, "delivered", mid)])
    altered = signed.replace(b'"delivered"', b'"bounce"')
    assert altered != signed
    assert_problem(post_sendgrid(h, altered, sign_body=signed), 401, "signature_mismatch")
    assert changed(before, snapshot(h)) == set()


@pytest.mark.parametrize("drop", ["signature", "timestamp", "both"])
def test_sendgrid_without_its_headers_is_refused(h, drop: str) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    raw = serialise_events([sg_event(h, "delivered", welcome(h, "email").message_id)])
    headers = h.sendgrid.signer.headers(str(int(h.clock.now().timestamp())), raw)
    for name in list(headers):
        if (drop in ("signature", "both") and name.endswith("Signature")) or (
            drop in ("timestamp", "both") and name.endswith("Timestamp")
        ):
            del headers[name]
    assert_problem(post_sendgrid(h, raw, headers=headers), 401, "missing_signature")
    assert changed(before, snapshot(h)) == set()


@pytest.mark.parametrize(
    "raw",
    [b"[{not json", b'{"event": "delivered"}', b"[1, 2]", b'[{"event": "open"}]', b"\xff\xfe"],
)
def test_sendgrid_malformed_but_correctly_signed_is_a_400(h, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    assert_problem(post_sendgrid(h, raw), 400, "malformed_body")
    assert changed(before, snapshot(h)) == set()


# -- SendGrid: accepted -----------------------------------------------------------------------------
def test_a_replayed_sendgrid_batch_is_counted_as_duplicates_and_changes_nothing(h) -> None:  # type: ignore[no-untyped-def]
    mid = welcome(h, "email").message_id
    raw = serialise_events([sg_event(h, "delivered", mid), sg_event(h, "open", mid)])
    first = post_sendgrid(h, raw)
    assert first.status_code == 200
    assert first.json() | {"events": 0} == {"received": 2, "applied": 2, "duplicates": 0,
                                            "unknown_messages": 0, "events": 0}  # fmt: skip
    assert count_events(h, "email.delivered") == 1 and count_events(h, "email.opened") == 1
    before = snapshot(h)
    h.later(seconds=30)  # SendGrid retries a little later, with a fresh signature
    again = post_sendgrid(h, raw)
    assert again.status_code == 200
    assert again.json() == {"received": 2, "applied": 0, "duplicates": 2, "unknown_messages": 0,
                            "events": 0}  # fmt: skip
    assert changed(before, snapshot(h)) == set()
    assert count_events(h, "email.delivered") == 1


def test_the_same_event_twice_in_one_batch_is_applied_once(h) -> None:  # type: ignore[no-untyped-def]
    e = sg_event(h, "delivered", welcome(h, "email").message_id)
    r = post_sendgrid(h, [e, e])
    assert r.json()["applied"] == 1 and r.json()["duplicates"] == 1
    assert count_events(h, "email.delivered") == 1


def test_sendgrid_events_for_unknown_messages_change_no_message_consent_or_event(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    batch = [
        sg_event(h, "delivered", "msg_" + "0" * 24),
        sg_event(h, "open", None),
        sg_event(h, "unsubscribe", "msg_" + "1" * 24),
    ]
    r = post_sendgrid(h, batch)
    assert r.status_code == 200
    assert r.json()["unknown_messages"] == 3 and r.json()["events"] == 0
    # only the receipts (so a retry is a duplicate) are new
    assert changed(before, snapshot(h)) <= {"provider_receipts"}
    assert post_sendgrid(h, batch).json()["duplicates"] == 3


@pytest.mark.parametrize(
    ("kind", "extra", "reason"),
    [("bounce", {"type": "bounce", "status": "5.1.1"}, "hard_bounce"),
     ("spamreport", {}, "spam_report")],
)  # fmt: skip
def test_a_hard_bounce_or_spam_report_suppresses_the_address_for_later_emails(
    h, kind: str, extra: dict[str, Any], reason: str
) -> None:  # type: ignore[no-untyped-def]
    mid = welcome(h, "email").message_id
    assert post_sendgrid(h, [sg_event(h, kind, mid, **extra)]).json()["applied"] == 1
    assert ("email", bidx(h, "email", "p1@example.com"), reason) in suppressions(h)
    if kind == "bounce":
        assert welcome(h, "email").status == "bounced"
    email = next_consultation(h, "email")
    assert (email.status, email.reason) == ("suppressed", "suppressed_address")
    assert reason in orjson.loads(email.trail)[-1]["detail"]
    assert (
        one(h, template="consultation_received", channel="sms").status == "sent"
    )  # sms unaffected


def test_a_blocked_bounce_does_not_suppress(h) -> None:  # type: ignore[no-untyped-def]
    mid = welcome(h, "email").message_id
    post_sendgrid(h, [sg_event(h, "bounce", mid, type="blocked", status="5.7.1")])
    assert suppressions(h) == []
    assert next_consultation(h, "email").status == "sent"


def test_a_global_unsubscribe_revokes_email_consent_and_later_emails_are_suppressed(h) -> None:  # type: ignore[no-untyped-def]
    mid = welcome(h, "email").message_id
    r = post_sendgrid(h, [sg_event(h, "unsubscribe", mid)])
    assert r.json()["applied"] == 1
    entries = ledger(h)
    assert ("email", "transactional", False, "sendgrid_unsubscribe") in entries
    assert ("email", "marketing", False, "sendgrid_unsubscribe") in entries
    assert count_events(h, "email.unsubscribed") == 1
    email = next_consultation(h, "email")
    assert (email.status, email.reason) == ("suppressed", "no_consent")
    assert "sendgrid_unsubscribe" in orjson.loads(email.trail)[-1]["detail"]


def test_a_machine_open_does_not_count_as_opened(h) -> None:  # type: ignore[no-untyped-def]
    mid = welcome(h, "email").message_id
    post_sendgrid(h, [sg_event(h, "delivered", mid)])
    h.later(minutes=1)
    r = post_sendgrid(h, [sg_event(h, "open", mid, sg_machine_open=True, useragent="Mozilla/5.0")])
    assert r.json()["applied"] == 1
    row = welcome(h, "email")
    assert (row.status, row.opened_us) == ("delivered", None)
    assert count_events(h, "email.opened") == 0


def test_out_of_order_open_then_delivered_ends_opened_with_both_times(h) -> None:  # type: ignore[no-untyped-def]
    mid = welcome(h, "email").message_id
    delivered_at = h.clock.now() + timedelta(seconds=2)
    opened_at = h.clock.now() + timedelta(seconds=9)
    h.later(seconds=10)
    post_sendgrid(h, [sg_event(h, "open", mid, at=opened_at, sg_machine_open=False)])
    assert welcome(h, "email").status == "opened"
    post_sendgrid(h, [sg_event(h, "delivered", mid, at=delivered_at)])
    row = welcome(h, "email")
    assert row.status == "opened"
    assert (row.delivered_us, row.opened_us) == (to_micros(delivered_at), to_micros(opened_at))


# -- Twilio: refused ------------------------------------------------------------------------------
def test_twilio_forged_signature_is_refused_and_nothing_changes(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    params = status_params(h, welcome(h, "sms").provider_id, "delivered")
    r = post_twilio(h, STATUS_PATH, params, token="f" * 32)
    assert_problem(r, 401, "signature_mismatch")
    r = post_twilio(h, STATUS_PATH, params, signature="bm90IGEgc2lnbmF0dXJl")
    assert_problem(r, 401, "signature_mismatch")
    assert changed(before, snapshot(h)) == set()


def test_twilio_with_a_parameter_changed_after_signing_is_refused(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    params = inbound_params(h, PHONE, "hello")
    tampered = params | {"Body": "STOP"}
    assert_problem(post_twilio(h, INBOUND_PATH, tampered, signed_params=params), 401,
                   "signature_mismatch")  # fmt: skip
    assert changed(before, snapshot(h)) == set()


def test_twilio_signed_for_another_url_is_refused(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    params = inbound_params(h, PHONE, "STOP")
    for url in (PUBLIC + STATUS_PATH, "https://evil.example" + INBOUND_PATH,
                PUBLIC + INBOUND_PATH + "?x=1"):  # fmt: skip
        assert_problem(post_twilio(h, INBOUND_PATH, params, url=url), 401, "signature_mismatch")
    assert changed(before, snapshot(h)) == set()


def test_twilio_without_a_signature_is_refused(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    r = h.api.post(INBOUND_PATH, content=urlencode(inbound_params(h, PHONE, "STOP")).encode(),
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert_problem(r, 401, "missing_signature")
    assert changed(before, snapshot(h)) == set()


@pytest.mark.parametrize("path", [STATUS_PATH, INBOUND_PATH])
def test_twilio_malformed_but_signed_is_a_400(h, path: str) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    params = (
        status_params(h, sid(), "delivered")
        if path == STATUS_PATH
        else inbound_params(h, PHONE, "STOP")
    )
    del params["MessageSid"]
    assert_problem(post_twilio(h, path, params), 400, "malformed_body")
    assert changed(before, snapshot(h)) == set()


# -- Twilio: inbound ------------------------------------------------------------------------------
def test_hello_from_an_unknown_number_stores_only_the_receipt_and_answers_nothing(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    r = post_twilio(h, INBOUND_PATH, inbound_params(h, OTHER_PHONE, "hello"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    assert "<Response></Response>" in r.text and "<Message>" not in r.text
    after = snapshot(h)
    assert changed(before, after) == {"provider_receipts"}
    assert len(after["provider_receipts"]) == len(before["provider_receipts"]) + 1


def test_stop_from_an_unknown_number_is_remembered_for_when_they_register(h) -> None:  # type: ignore[no-untyped-def]
    r = post_twilio(h, INBOUND_PATH, inbound_params(h, OTHER_PHONE, "STOP"))
    assert r.status_code == 200 and "<Message>" not in r.text  # Twilio itself answers STOP
    assert ("sms", bidx(h, "sms", OTHER_PHONE), "opted_out") in suppressions(h)
    h.later(days=1)
    h.feed([consenting("p2", h.clock.now(), phone=OTHER_PHONE)])
    h.run()
    sms = one(h, patient_key="p2", channel="sms")
    assert (sms.status, sms.reason) == ("suppressed", "suppressed_address")
    assert one(h, patient_key="p2", channel="email").status == "sent"
    assert not [m for m in h.twilio.messages if m["to"] == OTHER_PHONE]


def test_free_text_revocation_from_a_patient_revokes_consent_and_confirms(h) -> None:  # type: ignore[no-untyped-def]
    r = post_twilio(h, INBOUND_PATH, inbound_params(h, PHONE, "please stop texting me"))
    assert r.status_code == 200
    assert "<Message>" in r.text and "no more texts" in r.text
    assert ("sms", "transactional", False, "sms_revocation") in ledger(h)
    assert ("sms", "marketing", False, "sms_revocation") in ledger(h)
    assert count_events(h, "sms.opted_out") == 1
    sms = next_consultation(h, "sms")
    assert (sms.status, sms.reason) == ("suppressed", "no_consent")


def test_help_is_answered_by_telecrm_only_when_configured_to(runtime, clock) -> None:  # type: ignore[no-untyped-def]
    clock.set(DAYTIME)
    with messaging_harness(runtime, clock, settings={"sms_keyword_replies": "telecrm"}) as h:
        h.feed([consenting("p1", DAYTIME)])
        r = post_twilio(h, INBOUND_PATH, inbound_params(h, PHONE, "HELP"))
        assert r.status_code == 200
        assert "<Message>Telecrm Health:" in r.text and "STOP" in r.text
        assert ledger(h) == [] or all(e[3] == "profile" for e in ledger(h))


def test_help_is_left_to_twilio_by_default(h) -> None:  # type: ignore[no-untyped-def]
    r = post_twilio(h, INBOUND_PATH, inbound_params(h, PHONE, "help"))
    assert r.status_code == 200 and "<Message>" not in r.text


def test_a_replayed_inbound_message_is_ignored(h) -> None:  # type: ignore[no-untyped-def]
    params = inbound_params(h, PHONE, "STOP")
    post_twilio(h, INBOUND_PATH, params)
    before = snapshot(h)
    r = post_twilio(h, INBOUND_PATH, params)
    assert r.status_code == 200 and "<Message>" not in r.text
    assert changed(before, snapshot(h)) == set()


# -- Twilio: status callbacks ----------------------------------------------------------------------
def test_a_replayed_status_callback_is_a_duplicate(h) -> None:  # type: ignore[no-untyped-def]
    sms = welcome(h, "sms")
    params = status_params(h, sms.provider_id, "delivered")
    first = post_twilio(h, STATUS_PATH, params)
    assert first.json()["applied"] == 1 and first.json()["duplicates"] == 0
    assert welcome(h, "sms").status == "delivered"
    assert count_events(h, "sms.delivered") == 1
    before = snapshot(h)
    again = post_twilio(h, STATUS_PATH, params)
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    assert again.json()["applied"] == 0
    assert changed(before, snapshot(h)) == set()


def test_undelivered_to_a_landline_suppresses_the_number(h) -> None:  # type: ignore[no-untyped-def]
    sms = welcome(h, "sms")
    params = status_params(h, sms.provider_id, "undelivered", ErrorCode="30006")
    assert post_twilio(h, STATUS_PATH, params).json()["applied"] == 1
    row = welcome(h, "sms")
    assert (row.status, row.code) == ("undelivered", "30006")
    assert ("sms", bidx(h, "sms", PHONE), "invalid") in suppressions(h)
    later = next_consultation(h, "sms")
    assert (later.status, later.reason) == ("suppressed", "suppressed_address")


def test_undelivered_for_a_carrier_reason_does_not_suppress(h) -> None:  # type: ignore[no-untyped-def]
    params = status_params(h, welcome(h, "sms").provider_id, "undelivered", ErrorCode="30003")
    post_twilio(h, STATUS_PATH, params)
    assert suppressions(h) == []


def test_a_stop_telecrm_never_heard_of_comes_back_as_21610_and_is_recorded(h) -> None:  # type: ignore[no-untyped-def]
    h.twilio.account.inbound_url = None  # the inbound webhook is not pointed at telecrm
    h.twilio.inbound(PHONE, "STOP")
    assert h.twilio.is_opted_out(PHONE)
    assert not any(e[3] == "sms_keyword" for e in ledger(h))
    h.later(days=2)
    h.feed([event("consultation.submitted", "p1", h.clock.now(), {"consultation_id": "c1"})])
    _plan, sent = h.run()
    assert sent.opted_out == 1
    sms = one(h, template="consultation_received", channel="sms")
    assert (sms.status, sms.reason, sms.code) == ("opted_out", "opted_out", "21610")
    assert ("sms", "transactional", False, "twilio_21610") in ledger(h)
    assert ("sms", "marketing", False, "twilio_21610") in ledger(h)
    assert one(h, template="consultation_received", channel="email").status == "sent"
    # the next SMS is stopped by telecrm itself, before any call to Twilio
    calls = len(h.twilio.messages)
    h.later(days=2)
    h.feed(
        [
            event(
                "refill.due",
                "p1",
                h.clock.now(),
                {"prescription_id": "rx1", "due_on": "2026-03-10"},
            )
        ]
    )
    h.run()
    nxt = one(h, template="refill_reminder", channel="sms")
    assert (nxt.status, nxt.reason) == ("suppressed", "no_consent")
    assert len(h.twilio.messages) == calls


# -- /v1/messages ------------------------------------------------------------------------------------
def request(
    template: str = "two_factor_code", channel: str = "sms", **extra: Any
) -> dict[str, Any]:
    return {"request_id": f"req_{uuid.uuid4().hex[:12]}", "patient_id": "p1",
            "template": template, "channel": channel, **extra}  # fmt: skip


def test_an_unsigned_message_request_is_refused(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    assert_problem(post_message(h, request(secret={"code": "123456"}), signed=False), 401,
                   "missing_headers")  # fmt: skip
    body = orjson.dumps(request(secret={"code": "123456"}))
    forged = signed_headers("whsec_" + "A" * 32, "msg_forged", int(h.clock.now().timestamp()), body)
    r = h.api.post(
        "/v1/messages", content=body, headers=forged | {"content-type": "application/json"}
    )
    assert_problem(r, 401, "bad_signature")
    assert changed(before, snapshot(h)) == set()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (request("no_such_template"), "unknown_template"),
        (request("welcome", "fax"), "invalid_request"),
        (request("password_reset", "email"), "secret_required"),
        (request("two_factor_code", "sms"), "secret_required"),
        (request("welcome", "sms", secret={"code": "123456"}), "secret_not_allowed"),
        (request(secret={"code": "12"}), "invalid_request"),
        (request(secret={"reset_url": "http://plain.example/reset"}), "invalid_request"),
        (request(secret={"code": "123456"}, extra=1), "invalid_request"),
    ],
)
def test_invalid_message_requests_are_422_and_change_nothing(h, payload, code) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    assert_problem(post_message(h, payload), 422, code)
    assert changed(before, snapshot(h)) == set()


def test_a_request_for_an_unknown_patient_is_404(h) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(h)
    r = post_message(h, request(secret={"code": "123456"}) | {"patient_id": "nobody"})
    assert_problem(r, 404, "unknown_patient")
    assert changed(before, snapshot(h)) == set()


def test_a_two_factor_code_at_3am_goes_at_once_and_is_stored_and_logged_nowhere(
    runtime, clock, caplog, capsys
) -> None:  # type: ignore[no-untyped-def]
    code = "K7q2Zx9Wcan1"  # alphanumeric: it cannot turn up by chance in ids or ciphertext
    three_am = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)  # 03:00 in Los Angeles
    clock.set(three_am - timedelta(hours=10))
    caplog.set_level("DEBUG")
    # Info lines must reach the capture whatever level an earlier test left structlog at.
    configure_logging("DEBUG")
    with structlog.testing.capture_logs() as logs, messaging_harness(runtime, clock) as h:
        h.feed([consenting("p1", h.clock.now())])
        h.run()
        clock.set(three_am)
        payload = request(secret={"code": code})
        r = post_message(h, payload)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"
        row = one(h, template="two_factor_code")
        assert (row.status, row.deferred, row.due_us) == ("queued", False, to_micros(three_am))
        assert h.send().sent == 1
        assert one(h, template="two_factor_code").status == "sent"
        bodies = [m["body"] for m in h.twilio.messages if code in m["body"]]
        assert len(bodies) == 1 and m_to(h, code) == PHONE
        again = post_message(h, payload)
        assert again.status_code == 202 and again.json()["status"] == "duplicate"
        h.later(minutes=1)
        h.callbacks()
        found = where_is(h, code)
        assert "messages.template" in where_is(h, "two_factor_code")  # the scan does find things
    configure_logging("WARNING")  # back to stderr at the suite's level
    assert found == []
    assert any(e.get("event") == "message.requested" for e in logs)  # logs were captured
    assert code not in repr(logs)
    assert code not in caplog.text
    out = capsys.readouterr()
    assert code not in out.out and code not in out.err


def m_to(h: MessagingHarness, code: str) -> str:
    return next(m["to"] for m in h.twilio.messages if code in m["body"])


def where_is(h: MessagingHarness, needle: str) -> list[str]:
    """Every table.column holding `needle`, in text or in bytes."""
    hits = []
    with h.runtime.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in row._mapping.items():
                    if (isinstance(value, str) and needle in value) or (
                        isinstance(value, bytes | memoryview) and needle.encode() in bytes(value)
                    ):
                        hits.append(f"{table.name}.{column}")
    return hits


def test_a_password_reset_email_carries_the_link_and_the_link_is_stored_nowhere(h) -> None:  # type: ignore[no-untyped-def]
    link = "https://app.example.com/reset?t=Zr8canaryResetTokenQ3"
    r = post_message(h, request("password_reset", "email", secret={"reset_url": link}))
    assert r.status_code == 202 and r.json()["status"] == "queued"
    h.send()
    sent = [m for m in h.sendgrid.messages if "Zr8canaryResetTokenQ3" in (m["html"] + m["text"])]
    assert len(sent) == 1
    assert where_is(h, "Zr8canaryResetTokenQ3") == []


def test_a_patient_whose_stored_phone_is_not_valid_is_suppressed_invalid_phone(h) -> None:  # type: ignore[no-untyped-def]
    # The event schema normalises phones, so a bad one can only be a profile stored before a
    # stricter check (or by hand): rewrite p1's sealed phone to a number that is not E.164-valid.
    rt = h.runtime
    with rt.engine.begin() as conn:
        row = conn.execute(select(profiles).where(profiles.c.patient_key == "p1")).one()
        tokens = orjson.loads(row.sealed)
        tokens["phone"] = rt.cipher().encrypt_json("+1415555267", record_id="p1", field="phone")
        conn.execute(
            update(profiles)
            .where(profiles.c.patient_key == "p1")
            .values(sealed=orjson.dumps(tokens, option=orjson.OPT_SORT_KEYS).decode())
        )
    r = post_message(h, request("consultation_received", "sms"))
    assert r.status_code == 202 and r.json()["status"] == "suppressed"
    sms = one(h, template="consultation_received", channel="sms")
    assert (sms.status, sms.reason) == ("suppressed", "invalid_phone")
    assert "+1415555267" not in sms.trail


@pytest.mark.parametrize(
    ("channel", "value", "expected"),
    [
        ("sms", "+14155552671", (True, True)),
        ("sms", "(415) 555-2671", (True, True)),  # national format, the default region
        ("sms", "+1415555267", (False, False)),
        ("sms", "not a phone", (False, False)),
        ("sms", "", (None, False)),
        ("sms", None, (None, False)),
        ("email", "Ada@Example.COM", (True, True)),
        ("email", "not-an-email", (False, False)),
    ],
)
def test_address_bidx(runtime, channel: str, value: Any, expected: tuple[Any, bool]) -> None:  # type: ignore[no-untyped-def]
    key = "email" if channel == "email" else "phone"
    found, valid = address_bidx(
        runtime.blind_index(), channel, {key: value} if value is not None else {}
    )
    present, want_valid = expected
    assert valid is want_valid
    if present is None:
        assert found is None
    elif present:
        assert found and found == address_bidx(runtime.blind_index(), channel, {key: value})[0]
    else:
        assert found == ""
