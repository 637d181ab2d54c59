"""Messaging throughput benchmark: registrations → triggers → planned messages → SendGrid and
Twilio sandboxes over loopback HTTP. Prints JSON.

1. Serves the SendGrid and Twilio sandboxes, each in its own process (`telecrm sandbox sendgrid|
   twilio --port N --rate R`, free 127.0.0.1 ports) with --rate high enough that the limits never
   bind (checked: the connectors count every 429 they get).
2. A fresh SQLite runtime (messaging on, providers wired from settings at the sandboxes, its own
   Twilio pacing at --rate) on real time shifted to start at NOW = 2026-03-02 19:00 UTC, daytime
   in every US zone the patients live in, so quiet hours defer nothing and the run does not
   depend on when it is started; every timing is wall time (perf_counter).
3. Setup (not measured as throughput): --patients patient.registered events, email consent for
   all, SMS consent for --sms-consent-share, ~--spanish-share in Spanish, accepted through
   runtime.intake() in chunks and projected by runtime.worker().drain(): the projection writes
   the trigger rows exactly as in production. Each registration fires welcome email + welcome SMS.
4. Planning: MessagePlanner.drain() (trigger rows → messages through the send rules).
5. Dispatch: MessageDispatcher.drain(limit=--dispatch-limit): claim, render, send, record. Emails
   go in SendGrid mail sends of up to 1000 personalizations, SMS one Twilio call each. Checked:
   every planned message is `sent` in the messages table and the sandboxes hold the same counts.
6. The naive baseline in the same run, on the first --naive-patients registrations, against the
   same sandboxes (reset first): per registration, render with our templates, then one
   `sendgrid` SDK mail send and one `twilio` SDK message create; no rules, no recording.

    .venv/bin/python bench/messaging_throughput.py --patients 20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog
from sqlalchemy import func, select

from bench.messaging_support import (
    NOW,
    MessagingSandbox,
    Timed,
    feed,
    naive_send,
    new_runtime,
    registrations,
)
from telecrm.bootstrap import Runtime
from telecrm.messaging.tables import message_triggers, messages
from telecrm.messaging.wiring import build_messaging, email_provider, sms_provider
from telecrm.sync.tables import disclosures


def rate(n: int, seconds: float) -> float | None:
    return round(n / seconds, 1) if seconds > 0 else None


def statuses(rt: Runtime) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(messages.c.channel, messages.c.status, func.count()).group_by(
                messages.c.channel, messages.c.status
            )
        )
        for channel, status, n in rows:
            out.setdefault(channel, {})[status] = n
    return out


def count(rt: Runtime, table: Any) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def run(args: argparse.Namespace, sendgrid: MessagingSandbox, twilio: MessagingSandbox) -> dict:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rt = new_runtime(Path(tmp), sendgrid.url, twilio.url, args.rate)
        raw = registrations(
            args.patients,
            args.seed,
            sms_consent_share=args.sms_consent_share,
            spanish_share=args.spanish_share,
        )
        out["setup"] = feed(rt, raw, args.intake_chunk)
        out["setup"]["trigger_rows"] = count(rt, message_triggers)

        email = Timed(email_provider(rt.settings))
        sms = Timed(sms_provider(rt.settings))
        parts = build_messaging(rt, email=email, sms=sms, from_settings=False)

        # -- planning ----------------------------------------------------------------------------
        started = time.perf_counter()
        plan = parts.planner.drain(limit=args.plan_limit)
        plan_s = time.perf_counter() - started
        out["planning"] = {
            "round_limit": args.plan_limit,
            "triggers": plan.triggers,
            "messages_planned": plan.planned,
            "queued": plan.queued,
            "deferred": plan.deferred,
            "suppressed": plan.suppressed,
            "reasons": dict(plan.reasons),
            "seconds": round(plan_s, 2),
            "triggers_per_s": rate(plan.triggers, plan_s),
            "messages_per_s": rate(plan.planned, plan_s),
        }

        # -- dispatch ----------------------------------------------------------------------------
        before = statuses(rt)
        queued = {c: s.get("queued", 0) for c, s in before.items()}
        started = time.perf_counter()
        sent = parts.dispatcher.drain(limit=args.dispatch_limit)
        dispatch_s = time.perf_counter() - started
        after = statuses(rt)
        sg_stats, tw_stats = sendgrid.stats(), twilio.stats()
        tw_held = twilio.twilio_message_count()
        per_channel: dict[str, Any] = {}
        for channel, timed, held, held_calls in (
            ("email", email, sg_stats["accepted_messages"], sg_stats["accepted_requests"]),
            ("sms", sms, tw_stats["created"], tw_stats["created"] + tw_stats["rejected"]),
        ):
            n = after.get(channel, {}).get("sent", 0)
            per_channel[channel] = {
                "queued_before": queued.get(channel, 0),
                "sent": n,
                "calls": timed.stats.calls,
                "messages_per_call": round(n / timed.stats.calls, 1) if timed.stats.calls else None,
                "largest_batch_handed_to_connector": max(timed.batches, default=0),
                "rate_limited_calls": timed.stats.rate_limited,
                "seconds_in_provider_calls": round(timed.seconds, 2),
                "messages_per_s_in_provider_calls": rate(n, timed.seconds),
                "call_ms": timed.call_ms(),
                "sandbox_holds": held,
                "sandbox_api_requests": held_calls,
            }
        provider_s = email.seconds + sms.seconds
        total_sent = sent.sent
        all_queued = sum(queued.values())
        checks = {
            "every_queued_message_sent": all(
                after.get(c, {}).get("sent", 0) == q for c, q in queued.items()
            )
            and total_sent == all_queued,
            "no_message_left_queued": all(s.get("queued", 0) == 0 for s in after.values()),
            "sendgrid_holds_same_count": sg_stats["accepted_messages"]
            == per_channel.get("email", {}).get("sent"),
            "sendgrid_requests_equal_calls": sg_stats["accepted_requests"] == email.stats.calls,
            "twilio_holds_same_count": tw_stats["created"] == tw_held
            and tw_held == per_channel.get("sms", {}).get("sent"),
            "twilio_requests_equal_calls": tw_stats["created"] == sms.stats.calls,
            "no_429_seen": sg_stats["rate_limited"] == 0 and tw_stats["rate_limited"] == 0,
            "disclosures_recorded": count(rt, disclosures) == total_sent,
        }
        out["dispatch"] = {
            "round_limit": args.dispatch_limit,
            "claimed": sent.claimed,
            "sent": sent.sent,
            "rejected": sent.rejected,
            "retried": sent.retried,
            "suppressed_at_send": sent.suppressed,
            "calls": sent.calls,
            "seconds": round(dispatch_s, 2),
            "messages_per_s": rate(total_sent, dispatch_s),
            "seconds_in_provider_calls": round(provider_s, 2),
            "seconds_telecrm_side": round(dispatch_s - provider_s, 2),
            "note_telecrm_side": "claim, consent re-check, decrypt, render, PHI guard, record",
            "by_channel": per_channel,
            "messages_table": after,
            "checks": checks,
        }
        out["end_to_end"] = {
            "plan_plus_dispatch_s": round(plan_s + dispatch_s, 2),
            "messages_per_s": rate(total_sent, plan_s + dispatch_s),
        }

        # -- naive baseline ------------------------------------------------------------------------
        if args.naive_patients:
            subset = raw[: args.naive_patients]
            sendgrid.reset()
            twilio.reset()
            naive = naive_send(rt, parts.catalog, subset, sendgrid.url, twilio.url)
            sg_n, tw_n = sendgrid.stats(), twilio.stats()
            n_msgs = sum(naive["counts"].values())
            ours_mps = rate(total_sent, dispatch_s) or 0.0
            naive_mps = rate(n_msgs, naive["wall_s"]) or 0.0
            ours_e2e = rate(total_sent, plan_s + dispatch_s) or 0.0
            ours_calls = email.stats.calls + sms.stats.calls
            naive_calls = sg_n["accepted_requests"] + tw_n["created"]
            by_channel = {}
            for channel, calls, held in (
                ("email", sg_n["accepted_requests"], sg_n["accepted_messages"]),
                ("sms", tw_n["created"], tw_n["created"]),
            ):
                n = naive["counts"][channel]
                by_channel[channel] = {
                    "messages": n,
                    "calls": calls,
                    "sandbox_holds": held,
                    "seconds_render_plus_send": round(naive["seconds"][channel], 2),
                    "messages_per_s": rate(n, naive["seconds"][channel]),
                    "seconds_in_sdk_calls": round(naive["in_calls"][channel], 2),
                    "messages_per_s_in_sdk_calls": rate(n, naive["in_calls"][channel]),
                }
            out["naive_baseline"] = {
                "scope": f"SUBSET: the first {len(subset)} registrations; ratios are per message",
                "clients": {
                    "email": f"sendgrid {version('sendgrid')} SDK, SendGridAPIClient(api_key, "
                    "host=sandbox url), one Mail (one personalization) per send",
                    "sms": f"twilio {version('twilio')} SDK, Client(account_sid, auth_token) "
                    "with client.api.base_url = sandbox url, one messages.create per SMS",
                },
                "messages": n_msgs,
                "calls": naive_calls,
                "seconds": round(naive["wall_s"], 2),
                "messages_per_s": naive_mps,
                "by_channel": by_channel,
                "failures": naive["failures"][:10],
                "ratios": {
                    "telecrm_dispatch_over_naive_messages_per_s": round(ours_mps / naive_mps, 2)
                    if naive_mps
                    else None,
                    "telecrm_plan_plus_dispatch_over_naive_messages_per_s": round(
                        ours_e2e / naive_mps, 2
                    )
                    if naive_mps
                    else None,
                    "email_on_the_wire_telecrm_over_naive_messages_per_s": _ratio(
                        per_channel.get("email", {}).get("messages_per_s_in_provider_calls"),
                        by_channel["email"]["messages_per_s_in_sdk_calls"],
                    ),
                    "sms_on_the_wire_telecrm_over_naive_messages_per_s": _ratio(
                        per_channel.get("sms", {}).get("messages_per_s_in_provider_calls"),
                        by_channel["sms"]["messages_per_s_in_sdk_calls"],
                    ),
                    "note": "on the wire: time inside the connector's send call (telecrm) or "
                    "building the SDK object and its call (naive); rendering excluded on both",
                    "naive_over_telecrm_calls_per_message": round(
                        (naive_calls / n_msgs) / (ours_calls / total_sent), 2
                    )
                    if n_msgs and total_sent and ours_calls
                    else None,
                    "naive_over_telecrm_email_calls_per_message": round(
                        (sg_n["accepted_requests"] / by_channel["email"]["messages"])
                        / (email.stats.calls / per_channel["email"]["sent"]),
                        1,
                    )
                    if by_channel["email"]["messages"] and email.stats.calls
                    else None,
                },
            }
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--sms-consent-share",
        type=float,
        default=1.0,
        help="share of patients with SMS consent (the others' SMS are suppressed at planning)",
    )
    parser.add_argument("--spanish-share", type=float, default=0.1)
    parser.add_argument("--intake-chunk", type=int, default=500)
    parser.add_argument("--plan-limit", type=int, default=500, help="planner triggers per round")
    parser.add_argument(
        "--dispatch-limit",
        type=int,
        default=1000,
        help="dispatcher messages per round and channel (what `telecrm serve` uses: 1000 emails "
        "fill one SendGrid request)",
    )
    parser.add_argument("--rate", type=int, default=100_000, help="sandbox requests per second")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="each provider answer takes this long (e.g. 50 for a real API's round trip)",
    )
    parser.add_argument("--naive-patients", type=int, default=1000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    out: dict[str, Any] = {
        "benchmark": "messaging_throughput",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "database": "sqlite (WAL, synchronous=NORMAL)",
        "clock": f"real time shifted to start at {NOW.isoformat()} (daytime in all patient "
        "zones); timings are wall time",
        "scale": {
            "patients": args.patients,
            "seed": args.seed,
            "sms_consent_share": args.sms_consent_share,
            "spanish_share": args.spanish_share,
        },
        "sandboxes": {
            "processes": "each sandbox in its own process (uvicorn), loopback HTTP",
            "rate_per_s": args.rate,
            "note": "limits raised so they never bind: this measures telecrm, not the quotas",
        },
    }
    out["sandboxes"]["latency_ms"] = args.latency_ms
    sendgrid = MessagingSandbox("sendgrid", args.rate)
    try:
        twilio = MessagingSandbox("twilio", args.rate)
        try:
            sendgrid.set_latency(args.latency_ms / 1000)
            twilio.set_latency(args.latency_ms / 1000)
            out.update(run(args, sendgrid, twilio))
        finally:
            twilio.stop()
    finally:
        sendgrid.stop()
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
