"""`telecrm sources list|check|preview|run`: the database source from the command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine, select

from telecrm.cli_support import console, fail, friendly_errors, runtime
from telecrm.domain.events import Event
from telecrm.domain.fields import FIELDS
from telecrm.observability.logs import configure_logging
from telecrm.security.secret_files import resolve_secret
from telecrm.sources.checks import check_source
from telecrm.sources.config import (
    PATIENT_DATA_PATH,
    SHOWN_DATA_KEYS,
    SourceConfig,
    SourcesFile,
    load_sources,
)
from telecrm.sources.errors import SourceError
from telecrm.sources.platform_db import platform_engine
from telecrm.sources.reader import ModelReport, RunReport, SourceReader
from telecrm.sources.tables import source_checkpoints

sources_app = typer.Typer(
    help="Read the platform's own PostgreSQL through SQL models (docs/sources.md).",
    no_args_is_help=True,
)

FILE = typer.Option(
    Path("sources.yaml"),
    "--file",
    "-f",
    envvar="TELECRM_SOURCES_FILE",
    help="The sources file (default: ./sources.yaml, or TELECRM_SOURCES_FILE)",
)
NAME = typer.Argument(..., help="A source's name in the sources file")
REDACTED = "[redacted]"

# Catalog field of each patient-event data path, to ask the catalog whether it may be shown.
_FIELD_AT = {path: name for name, path in PATIENT_DATA_PATH.items()}
# Other events' data keys that are catalog values the catalog keeps in clear.
_CLEAR_KEYS = {"amount": "total_order_value", "tier": "subscription_tier"}


def _load(path: Path) -> SourcesFile:
    try:
        return load_sources(path)
    except SourceError as exc:
        raise fail(str(exc), hint="see docs/sources.md for the file's shape", code=2) from None


def _source(path: Path, name: str) -> SourceConfig:
    try:
        return _load(path).source(name)
    except LookupError as exc:
        raise fail(str(exc).strip("'\""), code=2) from None


def _engine(source: SourceConfig) -> Engine:
    try:
        return platform_engine(source)
    except SourceError as exc:
        raise fail(str(exc), code=2) from None


def redact(event: Event) -> dict[str, Any]:
    """An event as a preview shows it: ids, types and times; identifying values redacted, by the
    catalog for patient fields, and by default for anything the catalog does not name."""
    wire = event.to_wire()
    wire["data"] = _redact_node(wire["data"], (), event.type.startswith("patient."))
    return wire


def _redact_node(node: Any, path: tuple[str, ...], patient: bool) -> Any:
    if isinstance(node, dict):
        return {k: _redact_node(v, (*path, k), patient) for k, v in node.items()}
    key = path[-1] if path else ""
    if patient:
        name = _FIELD_AT.get(path)
        return node if name is not None and not FIELDS[name].is_identifying else REDACTED
    if (
        key.endswith("_id")
        or key in SHOWN_DATA_KEYS
        or key in ("currency", "recurring", "days_supply", "refills")
    ):
        return node
    if key in _CLEAR_KEYS and not FIELDS[_CLEAR_KEYS[key]].is_identifying:
        return node
    return REDACTED


@sources_app.command("list")
@friendly_errors
def list_command(file: Path = FILE) -> None:
    """The sources in the file, their models, and where each model's reading got to."""
    loaded = _load(file)
    rt = runtime()
    with rt.engine.connect() as conn:
        rows = {(r.source, r.model): r for r in conn.execute(select(source_checkpoints))}
    table = Table(
        "source", "model", "reads", "URL from", "rows changed", "events", "up to", "state"
    )
    for s in loaded.sources:
        url_set = "set" if _url_set(s) else "[red]not set[/]"
        for m in s.models:
            r = rows.get((s.name, m.name))
            mode = f"by {m.cursor}" if m.cursor else "full diff"
            table.add_row(
                s.name,
                m.name,
                f"{m.table or 'query'} {mode}",
                f"{s.url_env} ({url_set})",
                f"{r.rows_seen:,}" if r else "0",
                f"{r.events_emitted:,}" if r else "0",
                (r.high_water or "-")[:19] if r else "-",
                "[red]stopped[/] (`sources run` says why)"
                if r and r.stopped_reason
                else ("[green]ok[/]" if r else "never run"),
            )
    console.print(table)


def _url_set(source: SourceConfig) -> bool:
    try:
        return bool(resolve_secret(source.url_env))
    except Exception:  # a _FILE that cannot be read: `check` says why
        return False


@sources_app.command("check")
@friendly_errors
def check_command(name: str = NAME, file: Path = FILE) -> None:
    """Connectivity, that every model's columns exist, and that the role cannot write."""
    source = _source(file, name)
    findings = check_source(source, _engine(source))
    for f in findings:
        mark = "[green]ok[/]  " if f.ok else "[red]FAIL[/]"
        console.print(f"{mark} {f.check}: {f.detail}", highlight=False, soft_wrap=True)
    if not all(f.ok for f in findings):
        raise typer.Exit(1)


@sources_app.command("preview")
@friendly_errors
def preview_command(
    name: str = NAME,
    file: Path = FILE,
    limit: int = typer.Option(20, min=1, max=1000, help="Events to show at most"),
) -> None:
    """Dry run: the events the next read would emit, PHI redacted. Nothing is stored."""
    source = _source(file, name)
    rt = runtime()
    reader = SourceReader(
        source, _engine(source), rt.engine, rt.intake(), rt.blind_index(), rt.clock
    )
    try:
        events = reader.preview(limit=limit)
    except SourceError as exc:
        raise fail(str(exc)) from None
    for model, event in events:
        wire = redact(event)
        console.print(
            f"[bold]{event.type}[/] patient {event.patient_id or '-'} at {wire['occurred_at'][:19]}"
            f" [dim]({model}, id {event.id})[/]",
            highlight=False,
            soft_wrap=True,
        )
        data = ", ".join(f"{k}={v}" for k, v in _flat(wire["data"]))
        console.print(f"    {escape(data)}", highlight=False, soft_wrap=True)
    console.print(f"{len(events)} event(s) shown (at most {limit}); nothing was stored")


def _flat(node: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in node.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


POLL_ALL_EVERY = 60  # with --cdc: every 60th round also polls every model (the safety net)
POLL_INTERVAL = 5.0  # seconds between polling reads with --follow
CDC_INTERVAL = 0.5  # between slot peeks: lag p99 0.3-0.6 s at 100 changes/s (docs/benchmarks.md)


@sources_app.command("run")
@friendly_errors
def run_command(
    name: str = NAME,
    file: Path = FILE,
    follow: bool = typer.Option(False, "--follow", help="Keep reading every --interval seconds"),
    interval: float | None = typer.Option(
        None,
        min=0.1,
        help="With --follow: seconds between reads (default 5; 0.5 with --cdc, where a round "
        "with no change costs one slot peek)",
        show_default=False,
    ),
    full: bool = typer.Option(False, "--full", help="Scan every row by key now (finds deletes)"),
    cdc: bool = typer.Option(
        False,
        "--cdc",
        help="With --follow: take changes from a logical-replication slot (polling if it "
        "cannot be used)",
    ),
    metrics_port: int | None = typer.Option(
        None, min=1, max=65535, help="With --follow: serve Prometheus metrics on this port"
    ),
    accept_drift: list[str] = typer.Option(
        [], "--accept-drift", help="Forget MODEL's recorded columns (after fixing the models file)"
    ),
    process: bool = typer.Option(True, help="Fold the new events into profiles afterwards"),
    parallel: bool | None = typer.Option(
        None,
        "--parallel/--no-parallel",
        help="Prepare an initial load or full scan a page ahead in a helper process (default: "
        "when the rows ahead are over 20,000 and the machine has two cores or more)",
        show_default=False,
    ),
    max_rounds: int | None = typer.Option(None, min=1, hidden=True),  # tests: stop --follow
) -> None:
    """Read the source once (or keep reading with --follow): progress, then counts per model."""
    source = _source(file, name)
    rt = runtime()
    configure_logging(rt.settings.log_level.upper())  # JSON on stderr; the tables on stdout
    platform = _engine(source)
    reader = SourceReader(source, platform, rt.engine, rt.intake(), rt.blind_index(), rt.clock)
    if accept_drift:
        reader.checkpoints.forget_schema(accept_drift)
    capture = None
    if follow and metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=rt.metrics.registry)
    if follow and cdc:
        from telecrm.sources.cdc import LogicalCapture

        capture = LogicalCapture(source, platform, reader, registry=rt.metrics.registry)
        why_not = capture.start()
        if why_not is not None:
            console.print(f"[yellow]polling:[/] {why_not}", highlight=False, soft_wrap=True)
            capture = None
        else:
            console.print(f"changes from replication slot {capture.slot}", highlight=False)
    if interval is None:
        interval = CDC_INTERVAL if capture is not None else POLL_INTERVAL
    failed, rounds = False, 0
    while True:
        started = time.perf_counter()
        try:
            if capture is not None and rounds % POLL_ALL_EVERY:
                captured = capture.poll()
                report = reader.run(models=capture.polled)
                report.models = captured.models + report.models
                note = f" ({captured.changes:,} changes from the slot, lag {captured.lag_bytes or 0:,} bytes)"
            else:
                with console.status(f"reading {source.name}") as status:

                    def progress(mr: ModelReport) -> None:
                        status.update(
                            f"reading {source.name}.{mr.model}: {mr.rows:,} rows, "
                            f"{mr.events:,} events"
                        )

                    report = reader.run(full=full, on_page=progress, parallel=parallel)
                note = ""
        except SourceError as exc:
            if not follow:
                raise fail(
                    str(exc), hint="nothing was lost: the checkpoint is where it was"
                ) from None
            console.print(f"[red]error:[/] {exc} (retrying in {interval:g} s)", highlight=False)
            time.sleep(interval)
            continue
        rounds += 1
        seconds = time.perf_counter() - started
        if rounds == 1 or report.events or report.stopped:
            _print_report(source.name, report, seconds, note)
        failed = bool(report.stopped)
        if process and report.events:
            done = rt.worker().drain()
            console.print(f"profiles updated: {done.patients:,} patients")
        if not follow or (max_rounds is not None and rounds >= max_rounds):
            break
        full = False
        time.sleep(interval)
    if failed:
        raise typer.Exit(1)


def _print_report(source: str, report: RunReport, seconds: float, note: str) -> None:
    table = Table(
        "model",
        "rows read",
        "changed",
        "new events",
        "already stored",
        "held",
        "rejected",
        "state",
        title=f"{source}: {report.events:,} new events in {seconds:.1f} s{note}",
    )
    for m in report.models:
        table.add_row(
            m.model,
            f"{m.rows:,}",
            f"{m.changed:,}",
            f"{m.events:,}",
            f"{m.duplicates:,}",
            f"{m.held:,}",
            f"{len(m.rejected):,}",
            "[red]stopped[/]" if m.stopped else ("full scan" if m.full_scan else "ok"),
        )
    console.print(table)
    for m in report.models:
        if m.stopped:
            console.print(f"[red]stopped:[/] {escape(m.stopped)}", highlight=False, soft_wrap=True)
        for key, reason, detail in m.rejected[:5]:
            console.print(f"  [red]{m.model} row {key}[/] {reason}: {detail}", highlight=False)
