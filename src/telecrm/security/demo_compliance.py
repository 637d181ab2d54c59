"""The demo's compliance part: the accounting of disclosures as the compliance client reads it,
the right-of-access export and the accounting written for the patient, and the audit trail.

Field names, data point titles, recipients and counts on the terminal; the values go only into
the export files, created readable by their owner alone (they hold PHI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from telecrm.bootstrap import Runtime
from telecrm.cli_support import fail
from telecrm.domain.clock import to_micros
from telecrm.security.audit import audit_rows
from telecrm.security.compliance_html import render_accounting_html
from telecrm.security.disclosures import accounting_for, audit_accounting_read
from telecrm.security.export import export_patient, render_export_html
from telecrm.security.safe_names import export_paths, write_private

EXPORT_REASON = "demo right-of-access request"


def show_accounting(
    console: Console, http: httpx.Client, bearer: dict[str, str], patient: str
) -> int:
    """The accounting of disclosures as the compliance client reads it: by recipient, no values."""
    listed: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        response = http.get(
            f"/v1/patients/{patient}/disclosures",
            headers=bearer,
            params={"limit": 200, **({"cursor": cursor} if cursor else {})},
        )
        if response.status_code != 200:
            raise fail(f"the disclosures read answered {response.status_code}")
        body = response.json()
        listed += body["disclosures"]
        cursor = body["next_cursor"]
        if not cursor:
            break
    by_recipient: dict[str, list[dict[str, Any]]] = {}
    for d in listed:
        by_recipient.setdefault(d["destination"], []).append(d)
    table = Table(
        "destination",
        "disclosures",
        "with PHI",
        "data points disclosed",
        title=f"GET /v1/patients/{patient}/disclosures as compliance",
        caption="the accounting of disclosures (45 CFR 164.528): names, never values",
    )
    for destination, found in by_recipient.items():
        points = dict.fromkeys(p for d in found for p in d["data_points"])
        table.add_row(
            destination,
            str(len(found)),
            str(sum(1 for d in found if d["phi"])),
            "; ".join(points) or "ids, statuses and dates only",
        )
    console.print(table)
    return len(listed)


def export_for_patient(rt: Runtime, console: Console, patient: str, out_dir: Path) -> list[Path]:
    """`telecrm patients export` and `telecrm disclosures --format html`, audited, files 0600."""
    json_path, html_path, accounting_path = export_paths(
        out_dir, patient, (".json", ".html", "-disclosures.html")
    )
    s = rt.settings
    cipher = rt.cipher()  # keys before the transaction
    now = rt.clock.now()
    with rt.engine.begin() as conn:
        record = export_patient(
            conn, cipher, patient, actor="demo", reason=EXPORT_REASON, now_us=to_micros(now)
        )
        accounting = accounting_for(
            conn,
            patient,
            now=now,
            organisation=s.brand_name,
            contact=(s.brand_address, s.support_email, s.support_phone),
        )
        audit_accounting_read(
            conn, patient, actor="demo", reason=EXPORT_REASON, now_us=to_micros(now)
        )
    write_private(json_path, orjson.dumps(record, option=orjson.OPT_INDENT_2), force=True)
    html = render_export_html(record, organisation=s.brand_name)
    write_private(html_path, html.encode(), force=True)
    write_private(accounting_path, render_accounting_html(accounting).encode(), force=True)
    counts = ", ".join(
        f"{len(record[k])} {k.replace('_', ' ')}" for k in ("events", "messages", "disclosures")
    )
    console.print(
        f"right of access: {patient}'s record ({counts})\n"
        f"and its accounting; reason {EXPORT_REASON!r}, audited; files 0600:",
        highlight=False,
    )
    for path in (json_path, html_path, accounting_path):
        console.print(f"  {path}", highlight=False, soft_wrap=True)
    return [json_path, html_path, accounting_path]


def show_audit_trail(rt: Runtime, console: Console, patient: str, after_seq: int) -> None:
    with rt.engine.connect() as conn:
        rows = [r for r in audit_rows(conn, record_id=patient, limit=200) if r["seq"] > after_seq]
    actions: dict[str, int] = {}
    for r in reversed(rows):
        key = r["action"] if r["outcome"] == "ok" else f"{r['action']} ({r['outcome']})"
        actions[key] = actions.get(key, 0) + 1
    console.print(
        f"audit log, this part, naming {patient}: "
        + ", ".join(f"{n} {action}" for action, n in actions.items()),
        highlight=False,
    )


ERASE_REASON = "demo erasure request"


def erase_patient(rt: Runtime, console: Console, patient: str) -> dict[str, Any]:
    """`telecrm patients erase`: the patient's key destroyed, then every payload of theirs tried."""
    from sqlalchemy import select

    from telecrm.ingest.tables import events
    from telecrm.security.erasure import linked_visitor_keys, request_erasure
    from telecrm.security.shredding import open_payload, with_salts

    index, cipher = rt.blind_index(), rt.cipher()  # keys before the transaction
    done = request_erasure(
        rt.engine,
        rt.intake(),
        index,
        patient,
        cipher=cipher,
        reason=ERASE_REASON,
        actor="demo",
        now=rt.clock.now(),
    )
    rt.worker().drain()
    with rt.engine.connect() as conn:
        keys = [done.patient_key, *linked_visitor_keys(conn, patient)]
        rows = conn.execute(with_salts(select(events)).where(events.c.patient_key.in_(keys))).all()
    still_open = sum(
        1 for r in rows if r.type != "patient.deleted" and open_payload(cipher, r) is not None
    )
    console.print(
        f"erasure: {patient} asked to be forgotten; {done.keys_destroyed} key(s) destroyed, "
        f"{done.events_shredded:,} event payloads shredded ({still_open} still open), "
        f"{done.sealed_fields} profile values removed; the log keeps their {len(rows):,} events, "
        "type and time only; audited",
        highlight=False,
    )
    return {"erased": done.events_shredded, "still_open": still_open}
