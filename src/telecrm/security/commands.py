"""CLI for keys, secrets and the audit log: `keys generate|rotate|list`, `secrets webhook`, `audit verify|show`."""

from __future__ import annotations

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from telecrm.cli_support import console, fail, friendly_errors, now_us, runtime
from telecrm.domain.clock import from_micros
from telecrm.ingest.signatures import generate_secret
from telecrm.security.audit import audit_rows, verify_audit
from telecrm.security.keyring import generate_master_key, list_data_keys, rotate_keys
from telecrm.store.engine import read_only

keys_app = typer.Typer(
    help="Encryption keys: generate a master key, rotate without downtime.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="The hash-chained audit log of every PHI read, write and disclosure.", no_args_is_help=True
)
secrets_app = typer.Typer(
    help="Generate shared secrets for the platform's webhooks.", no_args_is_help=True
)


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new random master key (base64 of 32 bytes) for TELECRM_MASTER_KEY."""
    console.print(generate_master_key(), highlight=False)


@keys_app.command("rotate")
@friendly_errors
def keys_rotate(
    new_data_key: bool = typer.Option(
        True, help="Also start encrypting new values under a fresh data key"
    ),
) -> None:
    """Re-wrap every data key under the current TELECRM_MASTER_KEY (no downtime).

    To rotate the master key: set TELECRM_MASTER_KEY to the new key and
    TELECRM_PREVIOUS_MASTER_KEYS to the old one on every process, run this, then drop the old key.
    """
    rt = runtime()
    current, previous = rt.master_keys()
    with rt.engine.begin() as conn:
        report = rotate_keys(conn, current, previous, now_us=now_us(rt), new_data_key=new_data_key)
    console.print(
        f"[green]rotated[/]: {report.rewrapped} data key(s) re-wrapped under master key {report.kek_id}"
        + (f"; new data key {report.new_data_key_id} is active" if report.new_data_key_id else "")
    )
    if previous:
        console.print(
            "every data key is now wrapped by the current master key: you may remove TELECRM_PREVIOUS_MASTER_KEYS"
        )


@keys_app.command("list")
@friendly_errors
def keys_list() -> None:
    """List data keys (ids, purpose, which master key wraps them). Never prints key material."""
    rt = runtime()
    with read_only(rt.engine).connect() as conn:
        rows = list_data_keys(conn)
    table = Table("key id", "purpose", "active", "wrapped by", "created")
    for r in rows:
        table.add_row(
            r["key_id"],
            r["purpose"],
            "yes" if r["active"] else "",
            r["kek_id"],
            from_micros(r["created_us"]).isoformat(),
        )
    console.print(table)


@secrets_app.command("webhook")
def secrets_webhook() -> None:
    """Print a new Standard Webhooks secret (whsec_...) to share with the platform."""
    console.print(generate_secret(), highlight=False)


@audit_app.command("verify")
@friendly_errors
def audit_verify() -> None:
    """Walk the hash chain and report the first broken link, if any row was edited, inserted or deleted."""
    rt = runtime()
    with Progress(
        SpinnerColumn(),
        TextColumn("verifying audit chain: {task.completed:,} rows"),
        console=console,
    ) as bar:
        task = bar.add_task("verify", total=None)
        with read_only(rt.engine).connect() as conn:
            result = verify_audit(conn, progress=lambda n: bar.update(task, completed=n))
    if result.ok:
        console.print(f"[green]audit chain intact[/]: {result.rows_checked:,} rows verified")
        return
    where = f" at row {result.first_broken_seq}" if result.first_broken_seq is not None else ""
    raise fail(f"audit chain broken{where}: {result.problem}")


@audit_app.command("show")
@friendly_errors
def audit_show(
    record: str = typer.Option(None, help="Only entries about this record id (e.g. a patient id)"),
    limit: int = typer.Option(50, min=1, max=10_000),
) -> None:
    """Show the newest audit entries (who, what, which fields, when, why)."""
    rt = runtime()
    with read_only(rt.engine).connect() as conn:
        rows = audit_rows(conn, record_id=record, limit=limit)
    table = Table("seq", "at", "actor", "action", "record", "fields", "purpose")
    for r in rows:
        ids = r["record_ids"]
        shown = ", ".join(ids[:3]) + (f" (+{len(ids) - 3})" if len(ids) > 3 else "")
        table.add_row(
            str(r["seq"]),
            from_micros(r["at_us"]).isoformat(timespec="seconds"),
            r["actor"],
            r["action"],
            f"{r['record_type']}: {shown}",
            ", ".join(r["fields"][:6]),
            r["purpose"],
        )
    console.print(table)
    if not rows:
        raise fail("no audit entries match")
