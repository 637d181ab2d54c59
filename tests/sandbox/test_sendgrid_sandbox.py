"""The SendGrid sandbox keeps SendGrid's contract: auth, 400 field names, limits, suppressions, signed events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sendgrid.helpers.eventwebhook import EventWebhook

from telecrm.sandbox.faults import Faults, sandbox_client
from telecrm.sandbox.sendgrid import SendGridSandbox, SendGridSandboxConfig, create_sendgrid_sandbox
from telecrm.sandbox.sendgrid_events import EventRates

KEY = "SG.sandbox-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SEND = "/v3/mail/send"
START = 1_700_000_000.0
HOOK = "https://hooks.example.test/sendgrid"


class FakeClock:
    def __init__(self, start: float = START) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


class Hook:
    """A deliver callable standing in for our webhook endpoint: records posts, answers `status`."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses: list[int] = []

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> int:
        self.posts.append((url, headers, body))
        return self.statuses.pop(0) if self.statuses else 200

    def events(self) -> list[dict[str, Any]]:
        return [e for _, _, body in self.posts for e in json.loads(body)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hook() -> Hook:
    return Hook()


def make(clock: FakeClock, hook: Hook, **config: Any) -> tuple[SendGridSandbox, httpx.Client]:
    config.setdefault("webhook_url", HOOK)
    sandbox = create_sendgrid_sandbox(
        SendGridSandboxConfig(**config), now=clock.now, sleep=clock.sleep, deliver=hook
    )
    return sandbox, sandbox_client(sandbox.app)


@pytest.fixture
def sg(clock: FakeClock, hook: Hook) -> Iterator[tuple[SendGridSandbox, httpx.Client]]:
    sandbox, client = make(clock, hook)
    yield sandbox, client
    client.close()


def mail(*emails: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": e}]} for e in emails],
        "from": {"email": "clinic@telecrm.example"},
        "subject": "Your visit",
        "content": [{"type": "text/plain", "value": "hi"}, {"type": "text/html", "value": "<p>hi</p>"}],
    }  # fmt: skip
    body.update(extra)
    return body


def errors(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 400, response.text
    return list(response.json()["errors"])


# -- mail send --------------------------------------------------------------------------------------
def test_mail_send_without_a_known_api_key_is_401(sg: tuple[SendGridSandbox, httpx.Client]) -> None:
    _, client = sg
    for headers in ({}, {"Authorization": "Bearer SG.wrong"}):
        response = client.post(SEND, json=mail("a@example.com"), headers=headers)
        assert response.status_code == 401
        assert response.json() == {"errors": [{"message": "authorization required", "field": None}]}


def test_accepted_send_is_202_with_a_message_id_and_rate_limit_headers(
    sg: tuple[SendGridSandbox, httpx.Client],
) -> None:
    sandbox, client = sg
    response = client.post(SEND, json=mail("a@example.com", "b@example.com"), headers=AUTH)
    assert response.status_code == 202
    assert response.content == b""
    message_id = response.headers["X-Message-Id"]
    assert len(message_id) == 22
    assert response.headers["X-RateLimit-Limit"] == "600"
    assert response.headers["X-RateLimit-Remaining"] == "599"
    assert response.headers["X-RateLimit-Reset"] == str(int(START) + 1)
    assert [m["sg_message_id"] for m in sandbox.messages] == [
        f"{message_id}.filter0001.0.0",
        f"{message_id}.filter0001.1.0",
    ]
    assert sandbox.stats.accepted_messages == 2


def test_more_than_1000_personalizations_is_400_on_the_field(
    sg: tuple[SendGridSandbox, httpx.Client],
) -> None:
    _, client = sg
    body = mail(*(f"p{i}@example.com" for i in range(1001)))
    assert errors(client.post(SEND, json=body, headers=AUTH))[0]["field"] == "personalizations"


def test_a_repeated_address_is_400_naming_the_repeat_without_echoing_it(
    sg: tuple[SendGridSandbox, httpx.Client],
) -> None:
    _, client = sg
    body = mail("a@example.com", "canary-dup@example.com", "CANARY-DUP@example.com")
    found = errors(client.post(SEND, json=body, headers=AUTH))
    assert [e["field"] for e in found] == ["personalizations.2.to.0.email"]
    assert "canary" not in json.dumps(found).lower()


def test_missing_from_and_bad_recipient_are_each_named(
    sg: tuple[SendGridSandbox, httpx.Client],
) -> None:
    _, client = sg
    body = mail("good@example.com", "not-an-address")
    del body["from"]
    fields = {e["field"] for e in errors(client.post(SEND, json=body, headers=AUTH))}
    assert fields == {"from.email", "personalizations.1.to.0.email"}
    assert all(e["help"] is None for e in errors(client.post(SEND, json=body, headers=AUTH)))


def test_eleven_categories_are_400(sg: tuple[SendGridSandbox, httpx.Client]) -> None:
    _, client = sg
    body = mail("a@example.com", categories=[f"c{i}" for i in range(11)])
    assert errors(client.post(SEND, json=body, headers=AUTH))[0]["field"] == "categories"


def test_custom_args_over_10000_bytes_are_400(sg: tuple[SendGridSandbox, httpx.Client]) -> None:
    _, client = sg
    body = mail("a@example.com")
    body["personalizations"][0]["custom_args"] = {"blob": "x" * 10_001}
    found = errors(client.post(SEND, json=body, headers=AUTH))
    assert found[0]["field"] == "personalizations.0.custom_args"
    assert "x" * 20 not in json.dumps(found)


def test_subject_text_before_html_asm_and_send_at_rules(
    sg: tuple[SendGridSandbox, httpx.Client], clock: FakeClock
) -> None:
    _, client = sg
    no_subject = mail("a@example.com")
    del no_subject["subject"]
    assert errors(client.post(SEND, json=no_subject, headers=AUTH))[0]["field"] == "subject"
    no_subject["personalizations"][0]["subject"] = "per person"
    assert client.post(SEND, json=no_subject, headers=AUTH).status_code == 202
    html_first = mail("a@example.com", content=[{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}])  # fmt: skip
    assert errors(client.post(SEND, json=html_first, headers=AUTH))[0]["field"] == "content"
    unknown_group = mail("a@example.com", asm={"group_id": 999})
    assert errors(client.post(SEND, json=unknown_group, headers=AUTH))[0]["field"] == "asm.group_id"
    late = mail("a@example.com", send_at=int(clock.t) + 72 * 3600 + 1)
    assert errors(client.post(SEND, json=late, headers=AUTH))[0]["field"] == "send_at"


def test_a_body_over_the_size_limit_is_413(clock: FakeClock, hook: Hook) -> None:
    sandbox, client = make(clock, hook, max_body_bytes=2_000)
    big = mail("a@example.com", content=[{"type": "text/plain", "value": "x" * 3_000}])
    response = client.post(SEND, json=big, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["errors"][0]["message"] == "content too large"
    assert sandbox.messages == []


def test_substitutions_and_custom_args_are_applied_per_recipient(
    sg: tuple[SendGridSandbox, httpx.Client],
) -> None:
    sandbox, client = sg
    body = mail(
        "a@example.com", "b@example.com", subject="Hi -name-",
        content=[{"type": "text/plain", "value": "Dear -name-, -link-"},
                 {"type": "text/html", "value": '<a href="-link-">-name-</a>'}],
        custom_args={"source": "telecrm", "kind": "message-level"},
    )  # fmt: skip
    body["personalizations"][0]["substitutions"] = {"-name-": "Ann", "-link-": "https://x.test/1"}
    body["personalizations"][0]["custom_args"] = {"kind": "personal"}
    body["personalizations"][1]["substitutions"] = {"-name-": "Bob -link-", "-link-": "L"}
    assert client.post(SEND, json=body, headers=AUTH).status_code == 202
    ann, bob = sandbox.messages
    assert (ann["subject"], ann["text"], ann["html"]) == (
        "Hi Ann", "Dear Ann, https://x.test/1", '<a href="https://x.test/1">Ann</a>',
    )  # fmt: skip
    assert ann["custom_args"] == {"source": "telecrm", "kind": "personal"}
    assert bob["subject"] == "Hi Bob -link-"  # a value is never substituted again
    assert bob["custom_args"] == {"source": "telecrm", "kind": "message-level"}
    listed = client.get("/_sandbox/messages").json()["results"]
    assert [m["email"] for m in listed] == ["a@example.com", "b@example.com"]


# -- limits and faults --------------------------------------------------------------------------------
def test_over_the_window_is_429_with_the_rate_limit_headers(clock: FakeClock, hook: Hook) -> None:
    sandbox, client = make(clock, hook, requests_per_second=2)
    for _ in range(2):
        assert client.post(SEND, json=mail("a@example.com"), headers=AUTH).status_code == 202
    refused = client.post(SEND, json=mail("a@example.com"), headers=AUTH)
    assert refused.status_code == 429
    assert refused.json() == {"errors": [{"field": None, "message": "too many requests"}]}
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Reset"] == str(int(START) + 1)
    clock.t += 1
    assert client.post(SEND, json=mail("a@example.com"), headers=AUTH).status_code == 202
    assert sandbox.stats.rate_limited == 1


def test_fault_knobs_storm_error_and_drop(sg: tuple[SendGridSandbox, httpx.Client]) -> None:
    sandbox, client = sg
    client.post("/_sandbox/faults", json={"storm_requests": 1})
    assert client.post(SEND, json=mail("a@example.com"), headers=AUTH).status_code == 429
    sandbox.faults.set(Faults(error_rate=1.0))
    failed = client.post(SEND, json=mail("a@example.com"), headers=AUTH)
    assert failed.status_code in (500, 503)
    assert failed.json()["errors"][0]["field"] is None
    sandbox.faults.set(Faults(drop_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(SEND, json=mail("cut@example.com"), headers=AUTH)
    assert [m["email"] for m in sandbox.messages] == ["cut@example.com"]  # applied, then cut
    assert (sandbox.stats.errors_sent, sandbox.stats.dropped) == (1, 1)


# -- suppressions --------------------------------------------------------------------------------------
def test_suppressed_recipients_are_accepted_then_dropped(clock: FakeClock, hook: Hook) -> None:
    sandbox, client = make(
        clock, hook, asm_groups={7: "appointments"}, global_unsubscribes={"gone@example.com"},
        bounces={"bounced@example.com"}, spam_reports={"spam@example.com"},
        invalid_emails={"invalid@example.com"},
    )  # fmt: skip
    client.post("/v3/asm/groups/7/suppressions", json={"recipient_emails": ["group@example.com"]}, headers=AUTH)  # fmt: skip
    emails = ["gone@example.com", "group@example.com", "bounced@example.com", "spam@example.com", "invalid@example.com"]  # fmt: skip
    response = client.post(SEND, json=mail(*emails, asm={"group_id": 7}), headers=AUTH)
    assert response.status_code == 202
    sandbox.flush_events()
    dropped = {e["email"]: e["reason"] for e in hook.events() if e["event"] == "dropped"}
    assert dropped == {
        "gone@example.com": "Unsubscribed Address", "group@example.com": "Unsubscribed Address",
        "bounced@example.com": "Bounced Address", "spam@example.com": "Spam Reporting Address",
        "invalid@example.com": "Invalid",
    }  # fmt: skip
    assert not any(e["event"] == "delivered" for e in hook.events())
    assert sandbox.stats.dropped_recipients == 5


def test_asm_groups_and_suppression_lists_api(sg: tuple[SendGridSandbox, httpx.Client]) -> None:
    _, client = sg
    created = client.post("/v3/asm/groups", json={"name": "billing", "description": "Billing", "is_default": False}, headers=AUTH)  # fmt: skip
    assert created.status_code == 201
    group = created.json()
    assert set(group) == {"id", "name", "description", "is_default"}
    gid = group["id"]
    add = client.post(f"/v3/asm/groups/{gid}/suppressions", json={"recipient_emails": ["x@example.com"]}, headers=AUTH)  # fmt: skip
    assert add.status_code == 201
    assert client.get(f"/v3/asm/groups/{gid}/suppressions", headers=AUTH).json() == [
        "x@example.com"
    ]
    assert client.get(f"/v3/asm/groups/{gid}", headers=AUTH).json()["unsubscribes"] == 1
    assert client.get("/v3/asm/groups", headers=AUTH).json()[0]["name"] == "billing"
    deleted = client.delete(f"/v3/asm/groups/{gid}/suppressions/x@example.com", headers=AUTH)
    assert deleted.status_code == 204
    assert client.get("/v3/asm/groups/999", headers=AUTH).status_code == 404
    client.post("/v3/asm/suppressions/global", json={"recipient_emails": ["y@example.com"]}, headers=AUTH)  # fmt: skip
    got = client.get("/v3/asm/suppressions/global/y@example.com", headers=AUTH).json()
    assert got == {"recipient_email": "y@example.com"}
    unsubscribes = client.get("/v3/suppression/unsubscribes", headers=AUTH).json()
    assert unsubscribes == [{"created": int(START), "email": "y@example.com"}]
    client.delete("/v3/asm/suppressions/global/y@example.com", headers=AUTH)
    assert client.get("/v3/asm/suppressions/global/y@example.com", headers=AUTH).json() == {}
    assert client.get("/v3/suppression/bounces", headers=AUTH).json() == []
    assert client.get("/v3/suppression/spam_reports", headers=AUTH).json() == []


# -- Event Webhook ------------------------------------------------------------------------------------
def test_events_are_signed_so_the_official_sdk_verifies_them(
    sg: tuple[SendGridSandbox, httpx.Client], hook: Hook
) -> None:
    sandbox, client = sg
    body = mail("a@example.com", "b@example.com", categories=["reminder"], custom_args={"telecrm_message_id": "m-1"})  # fmt: skip
    client.post(SEND, json=body, headers=AUTH)
    assert sandbox.flush_events() >= 4
    url, headers, raw = hook.posts[0]
    assert url == HOOK
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Twilio-Email-Event-Webhook-Timestamp"] == str(int(START))
    assert raw.endswith(b"]\r\n")
    key_b64 = client.get("/v3/user/webhooks/event/settings/signed/sandbox-event-webhook", headers=AUTH).json()["public_key"]  # fmt: skip
    assert key_b64 == client.get("/_sandbox/public_key").json()["public_key"] == sandbox.public_key
    sdk = EventWebhook()
    public_key = sdk.convert_public_key_to_ecdsa(key_b64)
    signature = headers["X-Twilio-Email-Event-Webhook-Signature"]
    timestamp = headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    assert sdk.verify_signature(raw.decode(), signature, timestamp, public_key=public_key)
    assert not sdk.verify_signature(raw.decode().rstrip("\r\n"), signature, timestamp, public_key=public_key)  # fmt: skip


def test_events_carry_the_common_fields_custom_args_and_categories(
    sg: tuple[SendGridSandbox, httpx.Client], hook: Hook
) -> None:
    _, client = sg
    client.post("/v3/asm/groups", json={"name": "news", "description": "News"}, headers=AUTH)
    body = mail("a@example.com", categories=["a", "b"], asm={"group_id": 1}, custom_args={"telecrm_message_id": "m-9"})  # fmt: skip
    message_id = client.post(SEND, json=body, headers=AUTH).headers["X-Message-Id"]
    client.post("/_sandbox/events/flush")
    events = hook.events()
    assert events[0]["event"] == "processed"
    for event in events:
        assert event["email"] == "a@example.com"
        assert isinstance(event["timestamp"], int) and event["timestamp"] >= int(START)
        assert event["sg_message_id"] == f"{message_id}.filter0001.0.0"
        assert event["smtp-id"].startswith(f"<{message_id}@")
        assert event["category"] == ["a", "b"]
        assert event["asm_group_id"] == 1
        assert event["telecrm_message_id"] == "m-9"
    assert len({e["sg_event_id"] for e in events}) == len(events)


def test_a_failed_webhook_post_is_kept_and_retried_on_the_next_flush(
    sg: tuple[SendGridSandbox, httpx.Client], hook: Hook
) -> None:
    sandbox, client = sg
    client.post(SEND, json=mail("a@example.com"), headers=AUTH)
    hook.statuses = [500]
    assert sandbox.flush_events() == 0
    assert sandbox.stats.webhook_failures == 1
    pending = len(sandbox.pending_events)
    assert pending >= 2
    assert sandbox.flush_events() == pending
    assert sandbox.stats.webhook_retries == 1
    assert hook.posts[0][2] == hook.posts[1][2]  # the same events, signed again
    assert sandbox.pending_events == []


def test_event_batches_are_capped(clock: FakeClock, hook: Hook) -> None:
    sandbox, client = make(clock, hook, event_batch_max=3)
    client.post(SEND, json=mail(*(f"r{i}@example.com" for i in range(5))), headers=AUTH)
    total = len(sandbox.pending_events)
    assert sandbox.flush_events() == total
    assert all(len(json.loads(body)) <= 3 for _, _, body in hook.posts)


def test_engage_adds_a_click_on_the_first_link_and_group_unsubscribe_sticks(
    clock: FakeClock, hook: Hook
) -> None:
    _, client = make(clock, hook, asm_groups={3: "reminders"})
    html = [{"type": "text/plain", "value": "x"}, {"type": "text/html", "value": '<a href="https://app.test/v">go</a>'}]  # fmt: skip
    client.post(SEND, json=mail("p@example.com", content=html, asm={"group_id": 3}), headers=AUTH)
    click = client.post(
        "/_sandbox/events/engage", json={"email": "p@example.com", "event": "click"}
    )
    assert click.json()["event"]["url"] == "https://app.test/v"
    client.post("/_sandbox/events/engage", json={"email": "p@example.com", "event": "group_unsubscribe"})  # fmt: skip
    assert client.get("/v3/asm/groups/3/suppressions", headers=AUTH).json() == ["p@example.com"]
    unknown = client.post("/_sandbox/events/engage", json={"email": "nobody@example.com", "event": "open"})  # fmt: skip
    assert unknown.status_code == 404


def test_event_mix_is_realistic_and_seeded(clock: FakeClock, hook: Hook) -> None:
    runs = []
    for _ in range(2):
        sandbox, client = make(clock, Hook(), event_rates=EventRates(unsubscribe=0.0))
        body = mail(*(f"r{i}@example.com" for i in range(1000)))
        client.post(SEND, json=body, headers=AUTH)
        kinds = [e["event"] for e in sandbox.pending_events]
        runs.append(kinds)
    kinds = runs[0]
    assert runs[0] == runs[1]
    assert kinds.count("processed") == 1000
    assert 940 <= kinds.count("delivered") <= 995
    assert 5 <= kinds.count("bounce") <= 60
    assert 250 <= kinds.count("open") <= 450
