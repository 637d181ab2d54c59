"""Per-client rate limits: bursts, refusals with Retry-After, refill, separate budgets, bounded memory."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest
from pydantic import ValidationError

from telecrm.api.rate_limit import (
    Limit,
    RateLimitMiddleware,
    TokenBuckets,
    bearer_digest,
    limits_from,
    monotonic_seconds,
)
from telecrm.domain.clock import FrozenClock
from telecrm.settings import Settings
from tests.api.test_intake_http import assert_problem, stored_events
from tests.support.builders import SignedClient, registration


class Ticker:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"ok"})


class Answer(SimpleNamespace):
    status: int
    headers: dict[str, str]
    body: bytes


def hit(
    app: Any,
    times: int = 1,
    *,
    path: str = "/v1/patients",
    client: tuple[str, int] | None = ("203.0.113.7", 40_000),
    principal: object | None = None,
    token: str | None = None,
) -> list[Answer]:
    """Sends `times` requests straight through the ASGI app (one event loop, no server)."""

    async def one() -> Answer:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"authorization", f"Bearer {token}".encode())] if token else [],
            "client": client,
            "server": ("testserver", 80),
            "state": {"principal": principal} if principal is not None else {},
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in sent[0]["headers"]}
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return Answer(status=sent[0]["status"], headers=headers, body=body)

    async def all_of_them() -> list[Answer]:
        return [await one() for _ in range(times)]

    return asyncio.run(all_of_them())


def limited(ticker: Ticker, refused: Counter | None = None, **limits: Limit) -> Any:
    return RateLimitMiddleware(ok, limits=limits, clock=ticker, refused=refused)


# -- the bucket: burst, refusal, refill ---------------------------------------------------------


def test_a_burst_passes_then_the_next_request_gets_429_with_the_wait_in_retry_after() -> None:
    ticker = Ticker()
    app = limited(ticker, api=Limit(rate=0.25, burst=3))  # one request every 4 s, 3 at once

    answers = hit(app, 4)

    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert [a.headers["ratelimit"] for a in answers[:3]] == [
        '"api";r=2;t=4',
        '"api";r=1;t=8',
        '"api";r=0;t=12',
    ]
    refused = answers[3]
    assert refused.headers["retry-after"] == "4"
    assert refused.headers["ratelimit"] == '"api";r=0;t=4'
    assert refused.headers["ratelimit-policy"] == '"api";q=3;w=12'
    assert refused.headers["content-type"] == "application/problem+json"
    problem = orjson.loads(refused.body)
    assert problem["status"] == 429
    assert problem["type"].endswith("/rate_limited")
    assert problem["title"] == "Too many requests"
    assert "api rate limit" in problem["detail"]
    assert "retry after 4 s" in problem["detail"]
    assert problem["violated-policies"] == ["api"]


def test_allowed_responses_keep_the_apps_headers_and_gain_the_ratelimit_fields() -> None:
    answer = hit(limited(Ticker(), api=Limit(rate=50, burst=100)))[0]
    assert answer.status == 200 and answer.body == b"ok"
    assert answer.headers["x-app"] == "1"
    assert answer.headers["ratelimit-policy"] == '"api";q=100;w=2'
    assert answer.headers["ratelimit"] == '"api";r=99;t=1'


def test_the_bucket_refills_as_the_injected_clock_advances() -> None:
    ticker = Ticker()
    app = limited(ticker, api=Limit(rate=0.25, burst=3))
    hit(app, 3)

    ticker.advance(3.5)
    still = hit(app)[0]
    assert still.status == 429 and still.headers["retry-after"] == "1"
    ticker.advance(0.5)
    assert [a.status for a in hit(app, 2)] == [200, 429]
    ticker.advance(12)  # an empty bucket is full again after burst / rate seconds
    assert [a.status for a in hit(app, 4)] == [200, 200, 200, 429]


def test_refused_requests_spend_nothing() -> None:
    ticker = Ticker()
    app = limited(ticker, api=Limit(rate=1, burst=1))
    hit(app, 50)  # one allowed, 49 refused
    ticker.advance(1)
    assert hit(app)[0].status == 200


# -- whose budget -------------------------------------------------------------------------------


def test_separate_addresses_do_not_share_a_bucket() -> None:
    app = limited(Ticker(), api=Limit(rate=1, burst=2))
    assert [a.status for a in hit(app, 3, client=("198.51.100.1", 1))] == [200, 200, 429]
    assert [a.status for a in hit(app, 2, client=("198.51.100.2", 1))] == [200, 200]


def test_a_principal_set_before_the_limiter_has_its_own_budget_from_any_address() -> None:
    app = limited(Ticker(), api=Limit(rate=1, burst=2))
    alpha = SimpleNamespace(client_id="clinic-alpha", role="reader")
    beta = SimpleNamespace(client_id="clinic-beta", role="reader")
    # Two clients behind one proxy address: separate budgets.
    assert [a.status for a in hit(app, 2, client=("10.0.0.1", 1), principal=alpha)] == [200, 200]
    assert [a.status for a in hit(app, 2, client=("10.0.0.1", 1), principal=beta)] == [200, 200]
    # The same client from a new address: the same, spent budget.
    assert hit(app, client=("10.9.9.9", 1), principal=alpha)[0].status == 429


class Authenticating:
    """Stands in for the read API: accepts the tokens it knows, as the routes do, by putting the
    caller on `request.state.principal`; answers 401 to any other."""

    def __init__(self) -> None:
        self.accepted = {"good-alpha": "clinic-alpha", "good-beta": "clinic-beta"}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        client_id = self.accepted.get(auth.removeprefix("Bearer "))
        if client_id:
            scope["state"]["principal"] = SimpleNamespace(client_id=client_id, role="reader")
        await send({"type": "http.response.start", "status": 200 if client_id else 401})
        await send({"type": "http.response.body", "body": b""})


def test_a_token_draws_on_its_clients_budget_once_the_app_has_accepted_it() -> None:
    ticker = Ticker()
    app = RateLimitMiddleware(Authenticating(), limits={"api": Limit(1, 3)}, clock=ticker)
    here, there = ("198.51.100.1", 1), ("198.51.100.2", 1)

    # The first request counts against the address (nobody has checked the token yet), the
    # next three against clinic-alpha, whose budget is then spent, from any address.
    assert [a.status for a in hit(app, 5, client=here, token="good-alpha")] == [
        *[200] * 4,
        429,
    ]
    assert hit(app, client=there, token="good-alpha")[0].status == 429
    # clinic-beta behind the same address has a budget of its own.
    assert [a.status for a in hit(app, 4, client=here, token="good-beta")] == [200] * 4
    # The address itself has one request left of its three.
    assert [a.status for a in hit(app, 2, client=here)] == [401, 429]


def test_a_token_the_app_refuses_never_reaches_a_clients_budget() -> None:
    app = RateLimitMiddleware(Authenticating(), limits={"api": Limit(1, 3)}, clock=Ticker())
    hit(app, 4, token="good-alpha")  # clinic-alpha's budget is spent

    forged = hit(app, 4, client=("192.0.2.50", 1), token="forged-alpha")

    assert [a.status for a in forged] == [401, 401, 401, 429]  # the address's budget, not alpha's
    assert len(app.tokens) == 1


def test_a_token_the_app_stops_accepting_is_forgotten() -> None:
    ticker = Ticker()
    authenticating = Authenticating()
    app = RateLimitMiddleware(authenticating, limits={"api": Limit(1, 3)}, clock=ticker)
    hit(app, 2, token="good-alpha")
    assert len(app.tokens) == 1

    del authenticating.accepted["good-alpha"]  # expired or revoked
    assert hit(app, token="good-alpha")[0].status == 401
    assert len(app.tokens) == 0

    authenticating.accepted["good-alpha"] = "clinic-alpha"
    hit(app, token="good-alpha")
    digest = bearer_digest({"headers": [(b"authorization", b"Bearer good-alpha")]})
    assert digest is not None and app.tokens.client_of(digest) == "clinic-alpha"
    ticker.advance(301)  # and any token is forgotten after five idle minutes
    assert app.tokens.client_of(digest) is None


def test_one_ipv6_subscriber_prefix_shares_a_bucket() -> None:
    app = limited(Ticker(), api=Limit(rate=1, burst=2))
    hit(app, 2, client=("2001:db8:1:2::1", 1))
    assert hit(app, client=("2001:db8:1:2:ffff::9", 1))[0].status == 429  # same /64
    assert hit(app, client=("2001:db8:1:3::1", 1))[0].status == 200  # another /64
    hit(app, 2, client=("192.0.2.5", 1))
    assert hit(app, client=("::ffff:192.0.2.5", 1))[0].status == 429  # IPv4-mapped is IPv4


def test_each_class_spends_its_own_budget() -> None:
    app = limited(
        Ticker(),
        intake=Limit(rate=1, burst=2),
        api=Limit(rate=1, burst=2),
        token=Limit(rate=1, burst=2),
    )
    assert [a.status for a in hit(app, 3)] == [200, 200, 429]
    assert [a.status for a in hit(app, 2, path="/v1/events")] == [200, 200]
    # Provider webhooks are intake too: the same sender's intake budget, already spent.
    assert [a.status for a in hit(app, 2, path="/webhooks/twilio/status")] == [429, 429]
    assert [a.status for a in hit(app, 3, path="/oauth/token")] == [200, 200, 429]
    assert hit(app, path="/oauth/token")[0].headers["ratelimit-policy"].startswith('"token"')


def test_health_and_metrics_are_never_limited() -> None:
    app = limited(Ticker(), api=Limit(rate=1, burst=1))
    for path in ("/healthz", "/metrics"):
        answers = hit(app, 20, path=path)
        assert {a.status for a in answers} == {200}
        assert "ratelimit" not in answers[0].headers


def test_a_class_at_rate_0_never_refuses_and_adds_no_headers() -> None:
    limits = limits_from(Settings(rate_limit_api_rate=0, rate_limit_api_burst=0))
    assert "api" not in limits and set(limits) == {"intake", "token"}
    answers = hit(RateLimitMiddleware(ok, limits=limits, clock=Ticker()), 500)
    assert {a.status for a in answers} == {200}
    assert "ratelimit" not in answers[0].headers


def test_a_refusal_names_the_class_never_the_client() -> None:
    registry = CollectorRegistry()
    refused = Counter("telecrm_rate_limited", "refusals", ["class"], registry=registry)
    app = limited(Ticker(), refused, api=Limit(rate=1, burst=1))
    client = SimpleNamespace(client_id="clinic-canary-7f3a", role="admin")

    answers = hit(app, 4, client=("198.51.100.77", 5), principal=client)

    exposed = generate_latest(registry).decode()
    assert 'telecrm_rate_limited_total{class="api"} 3.0' in exposed
    for answer in answers[1:]:
        seen = answer.body.decode() + repr(answer.headers)
        assert "198.51.100.77" not in seen and "clinic-canary-7f3a" not in seen
    assert "198.51.100.77" not in exposed and "clinic-canary-7f3a" not in exposed


# -- memory bound --------------------------------------------------------------------------------


def test_buckets_of_idle_identities_expire() -> None:
    ticker = Ticker()
    buckets = TokenBuckets(Limit(rate=10, burst=20), ticker)
    for i in range(500):
        buckets.take(f"addr:192.0.2.{i}")
    assert len(buckets) == 500

    ticker.advance(0.2)  # a bucket used once is full again after 1 / rate
    buckets.take("addr:newcomer")
    assert len(buckets) == 1


def test_an_attacker_rotating_addresses_cannot_grow_the_table_or_refill_a_flooder() -> None:
    ticker = Ticker()
    buckets = TokenBuckets(Limit(rate=1, burst=5), ticker, max_identities=100)
    for _ in range(5):
        buckets.take("addr:flooder")
    for i in range(20_000):
        buckets.take(f"addr:rotating-{i}")
        if i % 50 == 0:
            assert not buckets.take("addr:flooder").allowed  # seen often: never evicted
    assert len(buckets) <= 100


def test_the_bucket_is_safe_under_threads() -> None:
    buckets = TokenBuckets(Limit(rate=1, burst=250), Ticker())
    allowed: list[int] = []

    def hammer() -> None:
        allowed.append(sum(buckets.take("addr:shared").allowed for _ in range(500)))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 250


# -- settings --------------------------------------------------------------------------------


def test_a_negative_rate_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(rate_limit_api_rate=-1)
    assert caught.value.errors()[0]["loc"] == ("rate_limit_api_rate",)
    assert "greater than or equal to 0" in str(caught.value)


def test_a_rate_without_a_burst_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELECRM_RATE_LIMIT_TOKEN_RATE", "3")
    monkeypatch.setenv("TELECRM_RATE_LIMIT_TOKEN_BURST", "0")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    assert "TELECRM_RATE_LIMIT_TOKEN_BURST must be at least 1" in message
    assert "set the rate to 0 to turn the token limit off" in message


def test_a_rate_that_is_not_a_number_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELECRM_RATE_LIMIT_INTAKE_RATE", "fast")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert caught.value.errors()[0]["loc"] == ("rate_limit_intake_rate",)


def test_the_defaults_are_generous_for_the_intake_and_small_for_the_token_endpoint() -> None:
    assert limits_from(Settings()) == {
        "intake": Limit(2000, 4000),
        "api": Limit(50, 100),
        "token": Limit(5, 20),
    }


def test_a_test_clock_set_back_does_not_freeze_the_buckets() -> None:
    from datetime import UTC, datetime

    clock = FrozenClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    seconds = monotonic_seconds(clock)
    start = seconds()
    clock.set(datetime(2026, 1, 1, tzinfo=UTC))
    assert seconds() == start
    clock.advance(timedelta(seconds=2))
    assert seconds() == start + 2


# -- the property --------------------------------------------------------------------------------


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.05, max_value=500),
    burst=st.integers(min_value=1, max_value=40),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=3), st.integers(min_value=0, max_value=8)),
        max_size=60,
    ),
)
def test_no_window_ever_holds_more_than_burst_plus_rate_times_its_length(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    ticker = Ticker()
    buckets = TokenBuckets(Limit(rate=rate, burst=burst), ticker)
    allowed_at: list[float] = []
    for pause, attempts in steps:
        ticker.advance(pause)
        for _ in range(attempts):
            if buckets.take("addr:x").allowed:
                allowed_at.append(ticker.now)
    for i, first in enumerate(allowed_at):
        for j in range(i, len(allowed_at)):
            assert j - i + 1 <= burst + rate * (allowed_at[j] - first) + 1e-6


@hypothesis_settings(max_examples=100, deadline=None)
@given(rate=st.floats(min_value=0.05, max_value=500), burst=st.integers(1, 40))
def test_a_client_that_keeps_to_the_rate_is_never_refused(rate: float, burst: int) -> None:
    ticker = Ticker()
    buckets = TokenBuckets(Limit(rate=rate, burst=burst), ticker)
    for _ in range(burst):
        assert buckets.take("addr:x").allowed
    for _ in range(200):
        ticker.advance(1 / rate)
        assert buckets.take("addr:x").allowed


# -- the real app, on both databases -------------------------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Small budgets so a flood fits in a test; the runtime's frozen clock is the limiter's time."""
    return settings.model_copy(
        update={
            "rate_limit_api_rate": 1.0,
            "rate_limit_api_burst": 5,
            "rate_limit_intake_rate": 10.0,
            "rate_limit_intake_burst": 20,
        }
    )


def test_the_intake_stays_open_for_the_platform_while_an_api_client_floods(
    api: SignedClient, runtime, clock
) -> None:
    flood = [api.client.get("/v1/patients") for _ in range(60)]
    intake = [api.post(registration(f"pat_{i}", clock.now())) for i in range(15)]
    flood += [api.client.get("/v1/patients") for _ in range(60)]

    assert all(r.status_code != 429 for r in flood[:5])
    assert all(r.status_code == 429 for r in flood[5:])
    assert [r.status_code for r in intake] == [202] * 15
    assert stored_events(runtime) == 15
    assert intake[-1].headers["ratelimit"].startswith('"intake";r=5;')
    exposed = api.client.get("/metrics").text
    assert 'telecrm_rate_limited_total{class="api"} 115.0' in exposed
    assert 'telecrm_rate_limited_total{class="intake"}' not in exposed


def test_an_intake_request_over_budget_is_refused_before_it_is_read_and_can_be_retried(
    api: SignedClient, runtime, clock
) -> None:
    for i in range(20):
        assert api.post(registration(f"pat_{i}", clock.now())).status_code == 202

    refused = api.post(registration("pat_late", clock.now()), msg_id="msg_late")
    body = assert_problem(refused, 429, "rate_limited")
    assert "intake" in body["detail"]
    assert refused.headers["retry-after"] == "1"
    assert stored_events(runtime) == 20

    clock.advance(timedelta(seconds=1))
    again = api.post(registration("pat_late", clock.now()), msg_id="msg_late")
    assert again.status_code == 202
    assert stored_events(runtime) == 21


def test_the_read_api_counts_each_clients_requests_against_that_client(
    engine, clock, tmp_path
) -> None:
    from fastapi.testclient import TestClient

    from telecrm.bootstrap import bootstrap
    from telecrm.security.roles import Role
    from tests.support.read_api import bearer, open_read_api, read_api_settings

    limited_settings = read_api_settings(tmp_path, rate_limit_api_rate=1.0, rate_limit_api_burst=3)
    runtime = bootstrap(limited_settings, clock=clock, engine=engine, migrate=False)
    with open_read_api(runtime, clock) as read_api:
        alpha = bearer(read_api.token(Role.ADMIN))
        beta = bearer(read_api.token(Role.COMPLIANCE))

        def statuses(http: TestClient, times: int, headers: dict[str, str]) -> list[int]:
            return [http.get("/v1/journeys", headers=headers).status_code for _ in range(times)]

        as_alpha = statuses(read_api.http, 5, alpha)
        as_beta = statuses(read_api.http, 4, beta)
        anonymous = statuses(read_api.http, 2, {})
        elsewhere = TestClient(read_api.http.app, client=("198.51.100.9", 50_000))
        alpha_elsewhere = statuses(elsewhere, 1, alpha)

    assert 429 not in as_alpha[:4] and as_alpha[4] == 429
    assert 429 not in as_beta  # one request on the shared address, three on its own budget
    assert anonymous == [401, 429]  # the address had one of its three left
    assert alpha_elsewhere == [429]  # the client's budget follows it
