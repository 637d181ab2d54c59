"""CRM backfill benchmark: every patient of a simulated platform to HubSpot, Salesforce, Pipedrive
and/or Dynamics 365 sandboxes over loopback HTTP, in real time, under the CRMs' documented limits.
Prints JSON.

1. Simulates the platform, bulk-imports and projects it into a fresh SQLite database (setup).
2. Per destination: serves a sandbox in its own process (`telecrm sandbox ...`, free 127.0.0.1 port) with
   the documented limits, their windows divided by --time-scale (HubSpot 100 requests per 10 s →
   per 10/scale s; Salesforce 100,000 per rolling 86,400 s → per 86,400/scale s; Pipedrive 20
   requests and 10 searches per 2 s → per 2/scale s, daily token and write budgets lifted and
   reported instead; Dataverse 6,000 requests and 1,200 s execution per 300 s → per 300/scale s,
   served from an inline program: `telecrm sandbox` cannot scale them), gives telecrm
   the built-in mapping with `limits.per_seconds` divided the same way, provisions the custom
   properties, marks every patient dirty and runs `SyncWorker.drain()` on the real clock.
3. Reports calls against the lower bound (full batches), wall time against the time the limit
   allows (calls * per_seconds / requests), limit refusals the sandbox sent, the agreement check,
   and a second drain after marking everyone dirty again (should cost no call).
4. The naive baseline in the same run, on the first --naive-patients patients only, against a
   fresh sandbox with the same limits: one official-SDK call per record (hubspot-api-client,
   simple-salesforce; plain httpx for Pipedrive and Dynamics, see bench/sync_naive.py),
   retrying after a pause on a limit refusal. Its ratios are per record.

    .venv/bin/python bench/sync_backfill.py --patients 100000 --time-scale 2 --destination both
    .venv/bin/python bench/sync_backfill.py --patients 2000 --time-scale 20 --destination pipedrive
    .venv/bin/python bench/sync_backfill.py --patients 20000 --time-scale 1 --destination dynamics
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from bench.sync_naive import naive_client, naive_dynamics, naive_pipedrive
from bench.sync_support import (
    api_requests,
    crm_records,
    desired_for,
    held_counts,
    limit_refusals,
    load_platform,
    lower_bound,
    mark_all,
    naive_hubspot,
    naive_salesforce,
    new_runtime,
    new_sandbox,
    open_worker,
    patient_keys,
    provision,
    refusals_in_requests,
    scaled_mapping,
    tokens_spent,
)
from telecrm.bootstrap import Runtime
from telecrm.sync.agreement import check_agreement
from telecrm.sync.mapping import Mapping


def backfill(rt: Runtime, kind: str, keys: list[str], args: argparse.Namespace) -> dict[str, Any]:
    mapping = scaled_mapping(kind, args.time_scale)
    sandbox = new_sandbox(kind, args.time_scale)
    served = sandbox
    try:
        provision(rt, mapping, served.url)
        setup_calls, setup_refusals = api_requests(sandbox), limit_refusals(sandbox)
        setup_tokens = tokens_spent(sandbox)
        mark_all(rt, mapping.destination, keys)
        if kind in ("hubspot", "pipedrive"):  # let provisioning's calls leave the window: idle
            time.sleep(mapping.limits.per_seconds)
        worker, connector, gate = open_worker(rt, mapping, served.url, per_round=args.per_round)
        rounds: list[float] = []
        started = time.perf_counter()
        report = worker.drain(on_round=lambda r: rounds.append(time.perf_counter() - started))
        wall = time.perf_counter() - started
        calls = connector.stats.calls
        by_endpoint = dict(connector.stats.by_endpoint)
        held = held_counts(sandbox, mapping)
        bound = lower_bound(mapping, held, report.converted)
        allowed = calls * mapping.limits.per_seconds / mapping.limits.requests
        pace = mapping.limits.per_seconds / (mapping.limits.requests - mapping.limits.burst)
        started = time.perf_counter()
        agreement = check_agreement(rt.engine, rt.cipher(), mapping, crm_records(sandbox))
        agree_s = time.perf_counter() - started
        spent = tokens_spent(sandbox)
        before_again = api_requests(sandbox)
        mark_all(rt, mapping.destination, keys)
        started = time.perf_counter()
        again = worker.drain()
        again_s = time.perf_counter() - started
        again_sandbox = api_requests(sandbox) - before_again
        out = {
            "limits_scaled": mapping.limits.model_dump(),
            "patients_marked": len(keys),
            "patients_per_round": args.per_round,
            "rounds": len(rounds),
            "records_planned": report.records,
            "records_written": report.written,
            "records_rejected": report.rejected,
            "records_deferred": report.deferred,
            "leads_converted": report.converted,
            "crm_holds_by_object": held,
            "api_calls": calls,
            "api_calls_by_endpoint": by_endpoint,
            "token_calls": connector.stats.token_calls,
            "lower_bound_calls": bound,
            "calls_over_lower_bound": round(calls / bound, 3) if bound else None,
            "wall_s": round(wall, 1),
            "rate_limit_allows_s": round(allowed, 1),
            "wall_over_allowed": round(wall / allowed, 3) if allowed else None,
            "gcra_min_s": round(max(0, calls - mapping.limits.burst) * pace, 1),
            "gate_waited_s": round(gate.waited_seconds, 1),
            "records_per_s": round(report.written / wall, 1),
            "s_per_record": wall / report.written if report.written else None,
            "calls_per_record": round(calls / report.written, 4) if report.written else None,
            "limit_refusals_seen_by_sandbox": limit_refusals(sandbox) - setup_refusals,
            "sandbox_api_requests": api_requests(sandbox) - setup_calls,
            "agreement": {
                "ok": agreement.ok,
                "summary": agreement.summary(),
                "expected": agreement.expected,
                "crm_records": agreement.crm_records,
                "check_s": round(agree_s, 1),
            },
            "rerun_all_dirty": {
                "patients": again.patients,
                "api_calls": again.calls,
                "sandbox_api_requests": again_sandbox,
                "unchanged": again.unchanged,
                "seconds": round(again_s, 1),
            },
        }
        out.update(crm_specific(kind, mapping, out, by_endpoint, spent, setup_tokens))
    finally:
        served.stop()
    if args.naive_patients:
        out["naive_baseline"] = naive(rt, kind, mapping, keys[: args.naive_patients], out, args)
    return out


def crm_specific(
    kind: str,
    mapping: Mapping,
    out: dict[str, Any],
    by_endpoint: dict[str, int],
    spent: int | None,
    setup_tokens: int | None,
) -> dict[str, Any]:
    """What only Pipedrive (searches, links, tokens) or Dynamics ($batch, lookups) reports."""
    records = sum(out["crm_holds_by_object"].values())
    if kind == "pipedrive":
        searches = sum(n for e, n in by_endpoint.items() if e.endswith(".search"))
        writes = sum(n for e, n in by_endpoint.items() if e.endswith((".create", ".update")))
        links = sum(n for e, n in by_endpoint.items() if e.endswith(".link"))
        tokens = spent - setup_tokens if spent is not None and setup_tokens is not None else None
        return {
            "lower_bound_note": "one write per record + one exact search per person or deal not "
            "yet known (all, in an empty CRM); activities and notes of a person created in this "
            "run need no lookup; a deal's person link rides in its create body",
            "pipedrive": {
                "writes": writes,
                "searches": searches,
                "records_not_yet_known": records,
                "link_patches": links,
                "other_calls": out["api_calls"] - searches - writes - links,
                "calls_over_lower_bound_without_links": round(
                    (out["api_calls"] - links) / out["lower_bound_calls"], 3
                )
                if out["lower_bound_calls"]
                else None,
                "documented_limits_allow_s": round(  # 10 searches and 20 others per 2 s, apart
                    max(searches / 10, (out["api_calls"] - searches) / 20)
                    * mapping.limits.per_seconds,
                    1,
                ),
                "tokens_spent": tokens,
                "tokens_per_record": round(tokens / records, 2) if tokens and records else None,
                "lite_one_seat_days_at_30000_tokens": round(tokens / 30_000, 1) if tokens else None,
                "lite_one_seat_days_at_mapping_daily_1200": round(out["api_calls"] / 1200, 1),
            },
        }
    if kind == "dynamics":
        batches = sum(n for e, n in by_endpoint.items() if e.startswith("$batch"))
        return {
            "lower_bound_note": "ceil(records / 1000) $batch per object; lookups bound inside the "
            "upsert (@odata.bind), no association calls in the built-in mapping",
            "dynamics": {
                "batches": batches,
                "upserts_per_batch": round(records / batches, 1) if batches else None,
                "other_calls": out["api_calls"] - batches,
            },
        }
    return {}


def naive(
    rt: Runtime,
    kind: str,
    mapping: Mapping,
    keys: list[str],
    ours: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    records = desired_for(rt, mapping, keys)
    sandbox = new_sandbox(kind, args.time_scale)
    served = sandbox
    clients = {
        "hubspot": naive_hubspot,
        "salesforce": naive_salesforce,
        "pipedrive": naive_pipedrive,
        "dynamics": naive_dynamics,
    }
    try:
        provision(rt, mapping, served.url)
        before, refused = api_requests(sandbox), limit_refusals(sandbox)
        tokens_before = tokens_spent(sandbox)
        pause = mapping.limits.per_seconds / 10  # a tenth of the (scaled) window
        started = time.perf_counter()
        clients[kind](served.url, mapping, records, pause)
        wall = time.perf_counter() - started
        calls = api_requests(sandbox) - before
        refusals = limit_refusals(sandbox) - refused
        tokens_after = tokens_spent(sandbox)
        held = held_counts(sandbox, mapping)
        agreement = check_agreement(
            rt.engine, rt.cipher(), mapping, crm_records(sandbox), patients=set(keys)
        )
    finally:
        served.stop()
    counted = refusals_in_requests(kind)  # SF and Dataverse count refusals apart
    accepted = calls - refusals if counted else calls
    requests = calls if counted else calls + refusals
    ours_cpr = ours["calls_per_record"]
    ours_spr = ours["s_per_record"]
    extra: dict[str, Any] = {}
    if tokens_after is not None and tokens_before is not None:
        extra["tokens_spent"] = tokens_after - tokens_before
        extra["tokens_per_record"] = (
            round(extra["tokens_spent"] / len(records), 2) if records else None
        )
    return {
        "scope": f"SUBSET: the first {len(keys)} patients (sorted ids); ratios are per record"
        if len(keys) < ours["patients_marked"]
        else f"ALL {len(keys)} patients, against a fresh sandbox",
        "client": naive_client(kind),
        "records": len(records),
        "crm_holds_by_object": held,
        "agreement": {"ok": agreement.ok, "summary": agreement.summary()},
        **extra,
        "http_requests": requests,
        "accepted_calls": accepted,
        "limit_refusals": refusals,
        "wall_s": round(wall, 1),
        "calls_per_record": round(accepted / len(records), 3) if records else None,
        "requests_per_record_incl_refusals": round(requests / len(records), 3) if records else None,
        "s_per_record": wall / len(records) if records else None,
        "naive_over_telecrm_calls_per_record": round(accepted / len(records) / ours_cpr, 1)
        if records and ours_cpr
        else None,
        "naive_over_telecrm_time_per_record": round(wall / len(records) / ours_spr, 1)
        if records and ours_spr
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--time-scale", type=float, default=2.0)
    parser.add_argument(
        "--destination",
        choices=("hubspot", "salesforce", "pipedrive", "dynamics", "both", "all"),
        default="both",
        help="both = hubspot and salesforce; all = the four",
    )
    parser.add_argument("--naive-patients", type=int, default=2000)
    parser.add_argument(
        "--per-round",
        type=int,
        default=10_000,
        help="SyncWorker patients per round (telecrm sync backfill: 10,000)",
    )
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30)
    )  # keep warnings (rate limits), drop info
    kinds = {
        "both": ["hubspot", "salesforce"],
        "all": ["hubspot", "salesforce", "pipedrive", "dynamics"],
    }.get(args.destination, [args.destination])
    out: dict[str, Any] = {
        "benchmark": "sync_backfill",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "database": "sqlite (WAL, synchronous=NORMAL)",
        "scale": {
            "patients_simulated": args.patients,
            "months": args.months,
            "seed": args.seed,
            "time_scale": args.time_scale,
            "note": "rate windows divided by time_scale on both sides; daily caps unchanged "
            "(except Pipedrive's daily token / write budgets: lifted, spent tokens reported)",
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        rt = new_runtime(Path(tmp))
        out["setup"] = load_platform(rt, Path(tmp), args.patients, args.months, args.seed)
        keys = patient_keys(rt)
        out["setup"]["patients_with_id"] = len(keys)
        for kind in kinds:
            out[kind] = backfill(rt, kind, keys, args)
            print(f"{kind} done", file=sys.stderr, flush=True)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
