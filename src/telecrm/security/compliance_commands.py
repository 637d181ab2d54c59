"""CLI for a patient's rights: `disclosures PATIENT_ID` (the accounting, 45 CFR 164.528),
`disclosures prune` (six-year retention) and `patients export` (right of access, 164.524).

Every command that reads a patient's data asks for `--reason` and writes it to the audit log.
"""

from __future__ import annotations

import io
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection
from typer.core import TyperGroup

from telecrm.cli_support import console, fail, friendly_errors, now_us, runtime
from telecrm.domain.clock import from_micros
from telecrm.profiles.views import PatientNotFound, find_patient_key
from telecrm.security.blind_index import BlindIndex
from telecrm.security.compliance_html import render_accounting_html, when
from telecrm.security.disclosures import (
    Accounting,
    InvalidSince,
    accounting_for,
    audit_accounting_read,
    parse_since,
    prune_disclosures,
)
from telecrm.security.export import export_patient, render_export_html
from telecrm.security.safe_names import check_writable, export_paths, write_private
from telecrm.security.tables import audit_log

REASON_MAX = int(getattr(audit_log.c.purpose.type, "length", 64) or 64)  # the audit column


class _ShowByDefault(TyperGroup):
    """`telecrm disclosures PATIENT_ID` means `telecrm disclosures show PATIENT_ID`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: typer vendors click
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["show", *args]
        return super().parse_args(ctx, args)


disclosures_app = typer.Typer(
    cls=_ShowByDefault,
    help="The accounting of disclosures: where a patient's data went, when and why. "
    "`telecrm disclosures PATIENT_ID --reason TEXT` shows one patient's "
    "(a patient whose id is `prune` or `show`: `telecrm disclosures show ID`).",
    no_args_is_help=True,
)


class AccountingFormat(StrEnum):
    table = "table"
    json = "json"
    html = "html"


def checked_reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise fail("--reason is empty: say why (it is kept in the audit log)", code=2)
    if len(text) > REASON_MAX:
        raise fail(
            f"--reason is {len(text)} characters; the audit log keeps at most {REASON_MAX}",
            hint="say it shortly, e.g. a ticket number: 'patient request #1234'",
            code=2,
        )
    return text


def _resolve(conn: Connection, index: BlindIndex, patient_id: str) -> str:
    try:
        return find_patient_key(conn, index, patient_id=patient_id, email=None, phone=None)
    except PatientNotFound as exc:
        raise fail(
            f"{exc}: check the patient id (`telecrm patients show` finds by email)"
        ) from None


def _table(a: Accounting) -> Table:
    table = Table(
        "date", "recipient", "information disclosed", "PHI", "purpose", "sent by",
        title=f"disclosures of {a.patient_id}, {when(a.period_start)} to {when(a.period_end)} "
        f"({len(a.disclosures)})",
    )  # fmt: skip
    for d in a.disclosures:
        recipient = d.recipient + (f"\n{d.recipient_address}" if d.recipient_address else "")
        table.add_row(
            when(d.at), recipient, d.description, "yes" if d.phi else "no", d.purpose, d.source
        )
    return table


@disclosures_app.command("show")
@friendly_errors
def disclosures_show(
    patient_id: str = typer.Argument(..., help="The platform's patient id"),
    reason: str = typer.Option(..., help="Why you are reading it (kept in the audit log)"),
    since: str = typer.Option(
        None, help="Start of the period (a date, 2025-01-31, or an ISO time); default six years ago"
    ),
    fmt: AccountingFormat = typer.Option(
        AccountingFormat.table, "--format", help="table (terminal), json, or html for the patient"
    ),
    out: Path = typer.Option(None, help="Write to this file instead of the terminal"),
    force: bool = typer.Option(False, help="Replace --out if it exists"),
    actor: str = typer.Option("cli", help="Who is asking (recorded in the audit log)"),
) -> None:
    """The accounting of disclosures for one patient (45 CFR 164.528), audited."""
    why = checked_reason(reason)
    rt = runtime()
    now = rt.clock.now()
    try:
        start = parse_since(since, now=now) if since is not None else None
    except InvalidSince as exc:
        raise fail(str(exc), code=2) from None
    if out is not None:
        check_writable([out], force=force)
    s = rt.settings
    index = rt.blind_index()  # keys before the transaction: opening them may need one of its own
    with rt.engine.begin() as conn:
        key = _resolve(conn, index, patient_id)
        accounting = accounting_for(
            conn,
            key,
            now=now,
            organisation=s.brand_name,
            contact=(s.brand_address, s.support_email, s.support_phone),
            since=start,
        )
        audit_accounting_read(conn, key, actor=actor, reason=why, now_us=now_us(rt))
    if fmt is AccountingFormat.table:
        if out is None:
            console.print(_table(accounting))
            return
        text = io.StringIO()
        Console(file=text, width=160, no_color=True).print(_table(accounting))
        data = text.getvalue().encode()
    elif fmt is AccountingFormat.json:
        data = orjson.dumps(accounting.to_json(), option=orjson.OPT_INDENT_2)
    else:
        data = render_accounting_html(accounting).encode()
    if out is None:
        typer.echo(data.decode(), nl=False)
        return
    write_private(out, data, force=force)
    console.print(f"wrote {out} ({len(accounting.disclosures)} disclosures)")


@disclosures_app.command("prune")
@friendly_errors
def disclosures_prune(
    actor: str = typer.Option("cli", help="Who prunes (recorded in the audit log)"),
) -> None:
    """Delete disclosures older than TELECRM_DISCLOSURE_RETENTION_DAYS (at least six years), audited."""
    rt = runtime()
    days = rt.settings.disclosure_retention_days
    with rt.engine.begin() as conn:
        report = prune_disclosures(conn, now_us=now_us(rt), retention_days=days, actor=actor)
    console.print(
        f"deleted {report.deleted:,} disclosures of {report.patients:,} patients recorded before "
        f"{when(report.cutoff)} (retention {days:,} days); younger ones are kept"
    )


@friendly_errors
def export_command(
    patient_id: str = typer.Argument(..., help="The platform's patient id"),
    reason: str = typer.Option(..., help="Why (e.g. the patient's request number); audited"),
    out: Path = typer.Option(Path("."), help="Folder to write <id>.json and <id>.html into"),
    force: bool = typer.Option(False, help="Replace files of an earlier export"),
    actor: str = typer.Option("cli", help="Who exports (recorded in the audit log)"),
) -> None:
    """Export a patient's whole record (right of access): decrypted JSON and a readable HTML page.

    The files hold PHI: they are created readable by you only. Hand them over securely.
    """
    why = checked_reason(reason)
    json_path, html_path = export_paths(out, patient_id, (".json", ".html"))
    check_writable([json_path, html_path], force=force)
    rt = runtime()
    cipher, index = rt.cipher(), rt.blind_index()  # before the transaction (see above)
    with rt.engine.begin() as conn:
        key = _resolve(conn, index, patient_id)
        record = export_patient(conn, cipher, key, actor=actor, reason=why, now_us=now_us(rt))
    write_private(json_path, orjson.dumps(record, option=orjson.OPT_INDENT_2), force=force)
    html = render_export_html(record, organisation=rt.settings.brand_name)
    write_private(html_path, html.encode(), force=force)
    counts = ", ".join(
        f"{len(record[k])} {k.replace('_', ' ')}"
        for k in ("events", "messages", "consent", "disclosures")
    )
    console.print(f"exported {key} as of {when(from_micros(now_us(rt)))} ({counts})")
    console.print(f"  {json_path}\n  {html_path}", highlight=False)


@friendly_errors
def erase_command(
    patient_id: str = typer.Argument(..., help="The platform's patient id"),
    reason: str = typer.Option(..., help="Why (e.g. the request's number); audited"),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation"),
    actor: str = typer.Option("cli", help="Who erases (recorded in the audit log)"),
) -> None:
    """Erase a patient: every identifying and health value goes, in the log too.

    Writes a `patient.deleted` event (source `erasure`), destroys the patient's key so none of
    their earlier events can be decrypted again (crypto-shredding), and folds what is left: the
    profile's values are removed, no message is sent to the patient again, journeys end, and CRMs whose
    mapping has `mode: mirror` archive or delete the patient's records on the next sync. Export
    the record first if the patient asked for a copy (`telecrm patients export`).
    """
    from telecrm.security.erasure import request_erasure

    why = checked_reason(reason)
    if not yes:
        typer.confirm(f"Erase {patient_id}? This cannot be undone", abort=True)
    rt = runtime()
    index, cipher = rt.blind_index(), rt.cipher()  # keys before the transaction
    try:
        done = request_erasure(
            rt.engine,
            rt.intake(),
            index,
            patient_id,
            cipher=cipher,
            reason=why,
            actor=actor,
            now=rt.clock.now(),
        )
    except PatientNotFound as exc:
        raise fail(f"{exc}: check the patient id") from None
    folded = rt.worker().drain()
    mirrors = [m.destination for m in rt.mappings() if m.mode == "mirror"]
    console.print(
        f"erased {done.patient_key}: {done.sealed_fields} encrypted profile values removed, "
        f"{done.keys_destroyed} patient key(s) destroyed, {done.events_shredded:,} event "
        f"payloads now unreadable (event {done.event_id}; {folded.events:,} events folded); "
        "audited with the reason"
    )
    console.print(
        "CRMs in mirror mode, archived on their next sync: "
        + (", ".join(mirrors) if mirrors else "none configured (records stay in the CRMs)")
    )
    console.print(
        "the log keeps each event's id, type and time; no key opens their values any more "
        "(crypto-shredding: docs/compliance.md)"
    )


retention_app = typer.Typer(
    help="Retention: remove patients inactive for longer than TELECRM_EVENT_RETENTION_DAYS.",
    no_args_is_help=True,
)


@retention_app.command("prune")
@friendly_errors
def retention_prune(
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; change nothing"),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation"),
    actor: str = typer.Option("cli", help="Who prunes (recorded in the audit log)"),
) -> None:
    """Remove every patient with no event for longer than the retention, whole and audited.

    A patient goes with their linked visitors: events, profile, stage history, messages,
    consent, journeys, sync bookkeeping and their key (so backups of the log are shredded for
    them too). Kept: the accounting of disclosures (`disclosures prune`), the audit log, CRM
    record digests. A rebuild afterwards agrees with the live projection.
    """
    from telecrm.security.retention import prune_inactive_patients

    rt = runtime()
    days = rt.settings.event_retention_days
    if days is None:
        raise fail(
            "TELECRM_EVENT_RETENTION_DAYS is not set: telecrm keeps every patient",
            hint="set it to 2192 (six years) or more, then run this again",
            code=2,
        )
    if not dry_run and not yes:
        typer.confirm(
            f"Remove every patient inactive for more than {days:,} days? This cannot be undone",
            abort=True,
        )
    with rt.engine.begin() as conn:
        report = prune_inactive_patients(
            conn, now_us=now_us(rt), retention_days=days, actor=actor, dry_run=dry_run
        )
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{verb} {report.patients:,} patients (and visitors) with no event since "
        f"{when(report.cutoff)} (retention {days:,} days): {report.events:,} events"
    )
    for table, n in sorted(report.rows.items()):
        console.print(f"  {table}: {n:,} rows", highlight=False)
