"""The live integration report: what a running telecrm's database says, as one JSON-ready dict.

Aggregates only. Counts of patients, events and messages under `MIN_CELL` are suppressed the way
`telecrm analytics` does (`analytics/small_cells.py`); operational counts (CRM records, dead
letters, disclosures, audit rows) are exact, since an operator must reconcile them. Every count
carries `q`, the id of the query it came from (the report's `queries` list gives its SQL and the
command that shows the same number). Nothing sealed is decrypted except by the churn model
evaluation (order and subscription payloads), and that read is written to the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Connection, Engine, func, select, union

from telecrm.analytics.small_cells import MIN_CELL, shown_count, shown_share
from telecrm.domain.clock import from_micros
from telecrm.domain.lifecycle import CRM_STATUS, Stage
from telecrm.profiles.tables import profiles, stage_transitions
from telecrm.store.engine import read_only
from telecrm.sync.mapping import BUILTIN_DIR, Mapping, load_mapping
from telecrm.sync.tables import disclosures, sync_dead_letters, sync_dirty, sync_records

FORMAT_VERSION = 1
LIVE = "merged_into is null and deleted = false"  # a live profile: not merged, not erased
Row = dict[str, Any]


@dataclass
class Queries:
    """The evidence list: each distinct query once, numbered Q1, Q2 ... in the order first used."""

    rows: list[Row] = field(default_factory=list)
    _ids: dict[tuple[str, str | None], str] = field(default_factory=dict)

    def ref(self, query: str, command: str | None = None) -> str:
        key = (query, command)
        if key not in self._ids:
            self._ids[key] = f"Q{len(self.rows) + 1}"
            self.rows.append({"id": self._ids[key], "query": query, "command": command})
        return self._ids[key]


def small(n: int, q: str) -> Row:
    """A count about patients: `n` is None (and `shown` "<5") for a small cell."""
    return {"n": None if 0 < n < MIN_CELL else n, "shown": shown_count(n), "q": q}


def exact(n: int, q: str) -> Row:
    """An operational count, shown as is."""
    return {"n": n, "shown": f"{n:,}", "q": q}


def _stages(conn: Connection, qs: Queries) -> tuple[list[Row], Any]:
    from telecrm.profiles.views import stats

    s = stats(conn)
    total = sum(s.patients_by_stage.values())
    rows = []
    for stage, n in s.patients_by_stage.items():
        q = qs.ref(f"profiles where stage = '{stage}' and {LIVE}", "telecrm stats")
        reached = conn.execute(
            select(func.count(func.distinct(stage_transitions.c.patient_key)))
            .select_from(stage_transitions.join(profiles, profiles.c.patient_key == stage_transitions.c.patient_key))
            .where(stage_transitions.c.to_stage == stage)
            .where(profiles.c.merged_into.is_(None), profiles.c.deleted.is_(False))
        ).scalar_one()  # fmt: skip
        rows.append({
            "stage": stage, "crm_status": CRM_STATUS[Stage(stage)], "patients": small(n, q),
            "share": shown_share(n, total),
            "ever_reached": small(int(reached), qs.ref(
                f"count(distinct patient_key) from stage_transitions where to_stage = '{stage}' "
                f"(live profiles)", "telecrm patients show ID (stage history)",
            )),
        })  # fmt: skip
    return rows, s


def _funnels(conn: Connection, s: Any, qs: Queries, now_us: int) -> Row:
    from telecrm.analytics.funnels import funnel_conversions, load_ladder

    def row(funnel: Any, group: str, entered: int, converted: int, q: str) -> Row:
        return {
            "funnel": funnel.name, "from": funnel.start.value, "to": funnel.end.value,
            "group": group, "entered": small(entered, q), "converted": small(converted, q),
            "rate": shown_share(converted, entered),
        }  # fmt: skip

    q_all = qs.ref(f"profiles.max_rank where {LIVE} (highest rung reached)", "telecrm stats")
    out: Row = {"all": [row(f.funnel, "all", f.entered, f.converted, q_all) for f in s.funnels]}
    if not conn.execute(select(func.count()).select_from(stage_transitions)).scalar_one():
        # No stage history yet (analytics' ladder needs at least one transition).
        return {**out, "channel": [], "cohort": []}
    ladder = load_ladder(conn)
    for by, what in (("channel", "acquisition channel"), ("cohort", "month entered")):
        q = qs.ref(
            f"first stage_transitions per rung (live profiles), grouped by {what}",
            f"telecrm analytics funnels --window all --by {by}",
        )
        out[by] = [
            row(r.funnel, r.group, r.result.entered, r.result.converted, q)
            for r in funnel_conversions(ladder, as_of_us=now_us, window=None, by=by)  # type: ignore[arg-type]
        ]
    return out


def _destinations(conn: Connection, mappings: Sequence[Mapping]) -> list[str]:
    seen = conn.execute(
        union(
            select(sync_records.c.destination),
            select(sync_dirty.c.destination),
            select(sync_dead_letters.c.destination),
        )
    ).scalars()
    return sorted(set(seen) | {m.destination for m in mappings})


def _mapping_for(dest: str, mappings: Sequence[Mapping]) -> Mapping:
    for m in mappings:
        if m.destination == dest:
            return m
    if (BUILTIN_DIR / f"{dest}.yaml").exists():
        return load_mapping(dest)
    # A destination no longer configured still has its rows counted; status_of reads only the
    # mapping's destination name.
    return cast(Mapping, SimpleNamespace(destination=dest, baa=False))


def _sync(
    engine: Engine, conn: Connection, mappings: Sequence[Mapping], qs: Queries, now_us: int
) -> list[Row]:
    from telecrm.sync.plan import status_of

    out = []
    for dest in _destinations(conn, mappings):
        m = _mapping_for(dest, mappings)
        st = status_of(engine, m, now_us)
        by_state: dict[str, int] = {}
        for states in st.records.values():
            for state, n in states.items():
                by_state[state] = by_state.get(state, 0) + n
        last = conn.execute(
            select(func.max(sync_records.c.accepted_us)).where(sync_records.c.destination == dest)
        ).scalar()
        q_rec = qs.ref(
            f"sync_records where destination = '{dest}' group by state",
            f"telecrm sync status {dest}",
        )
        out.append({
            "destination": dest,
            # From the configured mapping (TELECRM_DESTINATIONS); None when this process has
            # none for the destination (its `baa` flag cannot be known from the tables).
            "baa": m.baa if any(c.destination == dest for c in mappings) else None,
            "records": {k: exact(v, q_rec) for k, v in sorted(by_state.items())},
            "records_total": exact(sum(by_state.values()), q_rec),
            "dirty": exact(st.dirty, qs.ref(f"sync_dirty where destination = '{dest}'", f"telecrm sync status {dest}")),
            "dead_letters_open": exact(st.dead_letters, qs.ref(
                f"sync_dead_letters where destination = '{dest}' and status = 'open'", "telecrm dlq list")),
            "api_calls": exact(st.calls, qs.ref(f"rate_budgets where account = '{dest}' (calls)", f"telecrm sync status {dest}")),
            "limit_refusals": exact(st.refusals, qs.ref(f"rate_budgets where account = '{dest}' (refusals)", f"telecrm sync status {dest}")),
            "last_success": from_micros(int(last)).isoformat() if last else None,
            "last_success_q": qs.ref(f"max(accepted_us) from sync_records where destination = '{dest}'"),
        })  # fmt: skip
    return out


ENGAGEMENT = ("sent", "delivered", "opened", "clicked", "replied")
FAILED = {"email": ("bounced", "dropped"), "sms": ("failed", "undelivered")}


def _messages(conn: Connection, qs: Queries) -> list[Row]:
    from telecrm.messaging.commands import message_summary

    summary = message_summary(conn)
    rows = []
    for channel, counts in summary["engagement"].items():
        sent = int(counts["sent"])
        row: Row = {"channel": channel}
        for k in ENGAGEMENT:
            col = f"{k}_us"
            row[k] = small(
                int(counts[k]),
                qs.ref(
                    f"messages where channel = '{channel}' and {col} is not null",
                    "telecrm messages stats",
                ),
            )
            row[f"{k}_rate"] = shown_share(int(counts[k]), sent) if k != "sent" else None
        failed = sum(int(summary["by_status"].get(f"{channel}:{s}", 0)) for s in FAILED[channel])
        row["bounced_or_failed"] = small(
            failed,
            qs.ref(
                f"messages where channel = '{channel}' and status in {FAILED[channel]}",
                "telecrm messages stats",
            ),
        )
        suppressed = int(summary["by_status"].get(f"{channel}:suppressed", 0))
        row["suppressed"] = small(
            suppressed,
            qs.ref(
                f"messages where channel = '{channel}' and status = 'suppressed'",
                "telecrm messages stats",
            ),
        )
        rows.append(row)
    return rows


def _compliance(conn: Connection, qs: Queries) -> Row:
    from telecrm.security.audit import verify_audit

    by_dest: dict[str, Row] = {}
    for dest, phi, n in conn.execute(
        select(disclosures.c.destination, disclosures.c.phi, func.count()).group_by(
            disclosures.c.destination, disclosures.c.phi
        )
    ):
        row = by_dest.setdefault(dest, {"destination": dest, "total": 0, "phi": 0})
        row["total"] += int(n)
        row["phi"] += int(n) if phi else 0
    rows = [
        {
            "destination": d,
            "disclosures": exact(r["total"], qs.ref(f"disclosures where destination = '{d}'", "telecrm disclosures PATIENT")),
            "phi_disclosures": exact(r["phi"], qs.ref(f"disclosures where destination = '{d}' and phi", "telecrm disclosures PATIENT")),
        }
        for d, r in sorted(by_dest.items())
    ]  # fmt: skip
    verified = verify_audit(conn)
    return {
        "disclosures": rows,
        "audit": {
            "ok": verified.ok,
            "rows_checked": exact(
                verified.rows_checked,
                qs.ref(
                    "audit_log in seq order, re-hashed, against audit_head", "telecrm audit verify"
                ),
            ),
            "first_broken_seq": verified.first_broken_seq,
            "problem": verified.problem,
        },
    }


def _journeys(conn: Connection, qs: Queries) -> list[Row]:
    from telecrm.journeys.stats import all_journey_names, journey_stats

    out = []
    for name in all_journey_names(conn):
        s = journey_stats(conn, name)
        q = qs.ref(
            f"journey_instances where journey = '{name}' group by grp, converted",
            f"telecrm journeys stats {name}",
        )
        groups = {
            g: {"entered": small(v.entered, q), "converted": small(v.converted, q),
                "rate": shown_share(v.converted, v.entered)}
            for g, v in sorted(s.groups.items())
        }  # fmt: skip
        j, h = s.groups.get("journey"), s.groups.get("holdout")
        measurable = bool(j and h and j.entered >= MIN_CELL and h.entered >= MIN_CELL)
        out.append({
            "journey": name, "groups": groups,
            "lift": s.lift if measurable else None, "p_value": s.p_value if measurable else None,
            "lift_note": None if measurable else (
                "no holdout group" if not h else f"a group under {MIN_CELL} patients: not shown"),
            "q": q,
        })  # fmt: skip
    return out


def _churn(engine: Engine, cipher: Any, qs: Queries, now_us: int, actor: str) -> Row:
    """The churn model's held-out evaluation, as `telecrm analytics churn` prints it; audited."""
    from threadpoolctl import threadpool_limits

    from telecrm.analytics import event_arrays as ea
    from telecrm.analytics.churn import DEFAULT_HORIZON_DAYS, evaluate_churn, train_churn_model
    from telecrm.analytics.clv import ModelNotFitted
    from telecrm.analytics.population import FIT_THREADS
    from telecrm.security.audit import AuditEntry, append_audit

    q = qs.ref(
        "events of type order.paid and subscription.* (payloads decrypted), time-split",
        "telecrm analytics churn",
    )
    log = ea.from_store(engine, cipher)
    if log.patients:
        with engine.begin() as conn:
            append_audit(conn, [AuditEntry(
                actor=actor, action="read", record_type="event",
                record_ids=[str(k) for k in log.keys], fields=["data"],
                purpose="live report: churn model evaluation (aggregates only)",
            )], at_us=now_us)  # fmt: skip
    end = ea.to_days(from_micros(now_us))
    horizon = DEFAULT_HORIZON_DAYS
    evaluate_at = end - horizon
    try:
        with threadpool_limits(FIT_THREADS):  # as `analytics run` fits it: one thread
            model = train_churn_model(
                log, tuple(evaluate_at - horizon * k for k in (1, 2, 3)), horizon_days=horizon
            )
            r = evaluate_churn(model, log, evaluate_at)
    except ModelNotFitted as exc:
        return {"measured": False, "reason": str(exc), "q": q}
    return {
        "measured": True, "q": q, "horizon_days": horizon,
        "customers": small(r.rows, q), "base_rate": round(r.base_rate, 4),
        "auc": round(r.auc, 3), "recency_only_auc": round(r.recency_only_auc, 3),
        "brier": round(r.brier, 4), "brier_of_base_rate": round(r.brier_of_base_rate, 4),
        "top_decile_rate": round(r.top_decile_rate, 3), "lift_top_decile": round(r.lift_top_decile, 2),
    }  # fmt: skip


def _events(s: Any, qs: Queries) -> list[Row]:
    return [
        {"type": t, "events": small(n, qs.ref(f"events where type = '{t}'", "telecrm stats"))}
        for t, n in s.events_by_type.items()
    ]


def build_live_report(
    engine: Engine,
    *,
    now_us: int,
    mappings: Sequence[Mapping] = (),
    cipher: Any = None,
    spec_report: dict[str, Any] | None = None,
    actor: str = "cli",
) -> dict[str, Any]:
    """Every section of the live report. `cipher` enables the (audited) churn evaluation."""
    from telecrm.reports.live_compare import compare_with_analysis, measured_impact

    qs = Queries()
    churn = _churn(engine, cipher, qs, now_us, actor) if cipher is not None else None
    with read_only(engine).connect() as conn:
        stages, s = _stages(conn, qs)
        report: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": "live",
            "generated_at": from_micros(now_us).isoformat(),
            "database": engine.url.get_backend_name(),
            "min_cell": MIN_CELL,
            "patients": small(sum(s.patients_by_stage.values()), qs.ref(f"profiles where {LIVE}", "telecrm stats")),
            "pending_events": exact(s.pending_events, qs.ref("events where processed = false", "telecrm stats")),
            "stages": stages,
            "events": _events(s, qs),
            "funnels": _funnels(conn, s, qs, now_us),
            "sync": _sync(engine, conn, mappings, qs, now_us),
            "messages": _messages(conn, qs),
            "compliance": _compliance(conn, qs),
            "journeys": _journeys(conn, qs),
            "churn": churn,
        }  # fmt: skip
    report["comparison"] = compare_with_analysis(report, spec_report, qs) if spec_report else None
    report["business_impact"] = measured_impact(report)
    report["queries"] = qs.rows
    return report
