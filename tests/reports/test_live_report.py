"""`telecrm report`: the live report on SQLite and PostgreSQL, every number checked against a
count made here, straight from the tables (never against the report's own output)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, insert, select, text
from typer.testing import CliRunner

from telecrm.analytics.small_cells import MIN_CELL
from telecrm.cli import app
from telecrm.domain.clock import to_micros
from telecrm.domain.lifecycle import RANK, Stage
from telecrm.messaging.tables import messages
from telecrm.reports.live_html import render_live_html
from telecrm.reports.live_markdown import render_live_markdown
from telecrm.reports.live_report import build_live_report
from telecrm.reports.readiness import analyze
from telecrm.reports.spec_loader import load_spec
from telecrm.security.audit import verify_audit
from telecrm.sync.tables import disclosures, sync_dead_letters, sync_records
from tests.support.builders import (
    CANARY_CONDITION,
    CANARY_EMAIL,
    CANARY_FIRST,
    CANARY_LAST,
    CANARY_PHONE,
    MASTER_KEY,
    customer_journey,
    event,
    registration,
)

DAY = timedelta(days=1)
FIXTURES = Path(__file__).parent / "fixtures"
CUSTOMERS = 7  # over MIN_CELL, so their counts are shown
LEADS = 2  # under MIN_CELL: shown as "<5"


@pytest.fixture
def live(api, runtime, clock) -> Any:
    """7 customers (registration → first paid order) and 2 leads, one of them a PHI canary."""
    start = clock.now() - 40 * DAY
    for i in range(CUSTOMERS):
        assert api.post(customer_journey(f"pat_{i}", start + i * DAY)).status_code == 202
    canary = registration(
        "pat_canary",
        start,
        data={
            "first_name": CANARY_FIRST,
            "last_name": CANARY_LAST,
            "email": CANARY_EMAIL,
            "phone": CANARY_PHONE,
        },
    )
    assert api.post([canary, registration("pat_lead", start)]).status_code == 202
    assert api.post(
        event("patient.updated", "pat_canary", start + DAY, {"conditions": [CANARY_CONDITION]})
    ).status_code == 202  # fmt: skip
    runtime.worker().drain()
    return runtime


def scalar(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def report_of(runtime, clock, **kw: Any) -> dict[str, Any]:
    return build_live_report(runtime.engine, now_us=to_micros(clock.now()), **kw)


def shown(n: int) -> str:
    return "<5" if 0 < n < MIN_CELL else f"{n:,}"


def test_stage_counts_equal_the_profiles_table_with_small_cells_hidden(live, clock) -> None:
    r = report_of(live, clock)
    for row in r["stages"]:
        n = scalar(
            live.engine,
            "select count(*) from profiles where stage = :s and merged_into is null "
            "and deleted = false",
            s=row["stage"],
        )
        assert row["patients"]["shown"] == shown(n)
        assert row["patients"]["n"] == (None if 0 < n < MIN_CELL else n)
    by_stage = {row["stage"]: row for row in r["stages"]}
    assert by_stage["active_customer"]["patients"]["n"] == CUSTOMERS
    assert by_stage["lead"]["patients"] == {
        "n": None,
        "shown": "<5",
        "q": by_stage["lead"]["patients"]["q"],
    }


def test_event_counts_equal_the_event_log_and_name_their_query(live, clock) -> None:
    r = report_of(live, clock)
    queries = {q["id"]: q["query"] for q in r["queries"]}
    for row in r["events"]:
        n = scalar(live.engine, "select count(*) from events where type = :t", t=row["type"])
        assert row["events"]["shown"] == shown(n)
        assert queries[row["events"]["q"]] == f"events where type = '{row['type']}'"
    paid = next(e for e in r["events"] if e["type"] == "order.paid")
    assert paid["events"]["n"] == CUSTOMERS


def test_funnels_count_patients_by_the_highest_rung_reached(live, clock) -> None:
    r = report_of(live, clock)
    for f in r["funnels"]["all"]:
        entered = scalar(
            live.engine,
            "select count(*) from profiles where max_rank >= :r and merged_into is null "
            "and deleted = false",
            r=RANK[Stage(f["from"])],
        )
        converted = scalar(
            live.engine,
            "select count(*) from profiles where max_rank >= :r and merged_into is null "
            "and deleted = false",
            r=RANK[Stage(f["to"])],
        )
        assert (f["entered"]["shown"], f["converted"]["shown"]) == (
            shown(entered),
            shown(converted),
        )
    # Every registration carries no channel: one channel group, and cohorts add up to all.
    purchase = [f for f in r["funnels"]["cohort"] if f["funnel"] == "purchase"]
    assert sum(f["entered"]["n"] or 0 for f in purchase) <= CUSTOMERS
    assert {f["group"] for f in r["funnels"]["channel"]} == {"unknown"}


def test_sync_health_and_disclosures_equal_their_tables(live, clock, engine: Engine) -> None:
    now = to_micros(clock.now())
    with engine.begin() as conn:
        for i in range(6):
            conn.execute(insert(sync_records).values(
                destination="hubspot", object="contact", record_key=f"pat_{i}",
                patient_key=f"pat_{i}", state="accepted" if i < 5 else "rejected",
                accepted_us=now - i * 1_000_000 if i < 5 else None,
            ))  # fmt: skip
            conn.execute(insert(disclosures).values(
                at_us=now, destination="hubspot", patient_key=f"pat_{i}", object="contact",
                record_key=f"pat_{i}", fields='["email"]', phi=i == 0, purpose="sync",
            ))  # fmt: skip
        conn.execute(insert(sync_dead_letters).values(
            destination="hubspot", object="contact", record_key="pat_5", patient_key="pat_5",
            code="INVALID_EMAIL", detail="property email: invalid", attempts=1,
            first_failed_us=now, last_failed_us=now, status="open",
        ))  # fmt: skip
    r = report_of(live, clock)
    (hub,) = r["sync"]
    assert hub["destination"] == "hubspot"
    assert hub["baa"] is None  # no TELECRM_DESTINATIONS here: the flag is not known
    q = "select count(*) from sync_records where destination = 'hubspot' and state = :s"
    assert hub["records"]["accepted"]["n"] == scalar(engine, q, s="accepted") == 5
    assert hub["records"]["rejected"]["n"] == scalar(engine, q, s="rejected") == 1
    open_letters = "select count(*) from sync_dead_letters where status = 'open'"
    assert hub["dead_letters_open"]["n"] == scalar(engine, open_letters) == 1
    assert hub["last_success"] == clock.now().isoformat()
    (d,) = r["compliance"]["disclosures"]
    assert d["disclosures"]["n"] == scalar(engine, "select count(*) from disclosures") == 6
    assert d["phi_disclosures"]["n"] == scalar(
        engine, "select count(*) from disclosures where phi = :t", t=True
    )
    with engine.connect() as conn:
        assert r["compliance"]["audit"]["rows_checked"]["n"] == verify_audit(conn).rows_checked
    assert r["compliance"]["audit"]["ok"] is True


def test_message_engagement_equals_the_messages_table(live, clock, engine: Engine) -> None:
    now = to_micros(clock.now())
    with engine.begin() as conn:
        for i in range(8):
            conn.execute(insert(messages).values(
                message_id=f"m{i}", patient_key=f"pat_{i % CUSTOMERS}", channel="email",
                template="welcome", purpose="transactional", language="en", source="api",
                dedupe_key=f"d{i}", status="opened" if i < 6 else "bounced", trail="[]",
                created_us=now, due_us=now, sent_us=now,
                delivered_us=now if i < 6 else None, opened_us=now if i < 6 else None,
            ))  # fmt: skip
    r = report_of(live, clock)
    email = next(m for m in r["messages"] if m["channel"] == "email")
    with engine.connect() as conn:
        sent, opened = conn.execute(
            select(func.count(messages.c.sent_us), func.count(messages.c.opened_us))
        ).one()
    assert (email["sent"]["n"], email["opened"]["n"]) == (sent, opened) == (8, 6)
    assert email["opened_rate"] == "75.0%"
    assert email["bounced_or_failed"]["shown"] == "<5"  # 2 bounced: a small cell


def test_churn_evaluation_reads_are_audited_and_the_chain_stays_intact(live, clock) -> None:
    before = scalar(live.engine, "select count(*) from audit_log")
    r = report_of(live, clock, cipher=live.cipher())
    assert r["churn"]["measured"] is False  # 7 customers are too few to train on; said so
    assert "needs" in r["churn"]["reason"]
    rows = scalar(
        live.engine,
        "select count(*) from audit_log where purpose like 'live report: churn%' "
        "and action = 'read' and record_type = 'event'",
    )
    assert rows == 1 and scalar(live.engine, "select count(*) from audit_log") == before + 1
    assert r["compliance"]["audit"]["ok"] is True


def test_no_phi_value_reaches_any_format(live, clock) -> None:
    r = report_of(live, clock, cipher=live.cipher())
    outputs = [orjson.dumps(r).decode(), render_live_markdown(r), render_live_html(r)]
    for value in (CANARY_FIRST, CANARY_LAST, CANARY_EMAIL, CANARY_PHONE, CANARY_CONDITION):
        assert all(value not in out for out in outputs), value
    assert all("pat_canary" not in out for out in outputs)  # no patient id either


def test_every_count_in_the_page_links_to_a_listed_query(live, clock) -> None:
    r = report_of(live, clock)
    html = render_live_html(r)
    ids = {q["id"].lower() for q in r["queries"]}
    import re

    links = set(re.findall(r'href="#(q\d+)"', html))
    assert links and links <= ids
    assert all(f'id="{q}"' in html for q in links)
    md = render_live_markdown(r)
    assert all(f'<a id="{q}"></a>' in md for q in re.findall(r"\]\(#(q\d+)\)", md))


def test_analyzer_findings_are_set_beside_the_event_log(live, clock) -> None:
    analysis = analyze(load_spec(FIXTURES / "telehealth_openapi31.yaml", validate=False))
    r = report_of(live, clock, spec_report=analysis)
    events = {e["event_type"]: e for e in r["comparison"]["events"]}
    # The fixture documents consultations (list + webhook): they flow.
    sub = events["consultation.submitted"]
    assert sub["analyzer"] == "push" and sub["endpoints"] == ["E5", "E8"]
    n = scalar(live.engine, "select count(*) from events where type = 'consultation.submitted'")
    assert sub["live"]["n"] == n == CUSTOMERS and sub["verdict"] == "flowing"
    # Orders arrive though the document has no endpoint for them.
    assert events["order.paid"]["verdict"] == "flowing without a documented source"
    # A trigger nobody sent and nobody documented.
    assert events["refill.due"]["live"]["n"] == 0
    assert events["refill.due"]["verdict"] == "not available"


@pytest.fixture
def env(engine: Engine, tmp_path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    from telecrm import cli_support

    monkeypatch.setattr(cli_support.console, "width", 200)
    monkeypatch.setattr(cli_support.err_console, "width", 200)
    return {
        "TELECRM_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "TELECRM_MASTER_KEY": MASTER_KEY,
        "TELECRM_HOME": str(tmp_path),
    }


def test_report_command_writes_the_formats_asked_for(live, env, tmp_path) -> None:
    out = tmp_path / "rep"
    result = CliRunner().invoke(
        app,
        ["report", "--out", str(out), "--format", "md,json", "--no-churn", "--spec",
         str(FIXTURES / "telehealth_openapi31.yaml")],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    r = orjson.loads((out / "report.json").read_bytes())
    n = scalar(live.engine, "select count(*) from events where type = 'order.paid'")
    assert next(e for e in r["events"] if e["type"] == "order.paid")["events"]["n"] == n
    assert r["churn"] is None and r["comparison"]["source"] == "telehealth_openapi31.yaml"
    assert f"wrote {out / 'report.md'}" in result.output


def test_report_command_refuses_an_unknown_format(env, tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["report", "--out", str(tmp_path), "--format", "docx"], env=env
    )
    assert result.exit_code == 2
    assert "--format takes a comma-separated list of: md, json, html, pdf" in result.output


def test_the_demo_step_writes_the_report_and_says_where(live, tmp_path) -> None:
    from rich.console import Console

    from telecrm.reports.demo_report import demo_report
    from telecrm.reports.readiness_pdf import chromium_problem

    out = Console(record=True, width=200)
    done = demo_report(live, out, tmp_path / "report")
    text = out.export_text()
    html = tmp_path / "report" / "report.html"
    assert html.exists() and str(html.resolve()) in text
    if chromium_problem() is None:
        assert done["pdf"] == tmp_path / "report" / "report.pdf"
        assert done["pdf"].read_bytes().startswith(b"%PDF-")
    else:
        assert done["pdf"] is None and "no PDF:" in text and "chromium" in text
    r = orjson.loads((tmp_path / "report" / "report.json").read_bytes())
    assert r["comparison"]["title"]  # the simulated platform's own API, analyzed
    assert done["audit_ok"] is True
