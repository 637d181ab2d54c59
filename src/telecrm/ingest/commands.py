"""`telecrm import FILE` (bulk JSONL/CSV, resumable) and `telecrm pull` (the platform's REST API)."""

from __future__ import annotations

from pathlib import Path

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from telecrm.cli_support import console, fail, friendly_errors, runtime
from telecrm.ingest.bulk_import import import_file, write_rejections
from telecrm.ingest.puller import RESOURCES, PlatformPuller, PullError
from telecrm.security.secret_files import resolve_secret

PLATFORM_TOKEN = "TELECRM_PLATFORM_TOKEN"  # noqa: S105 (a variable's name, not a secret)


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))


@friendly_errors
def import_command(
    file: Path = typer.Argument(..., help="A .jsonl file (one event per line) or a .csv file"),
    rejects: Path | None = typer.Option(
        None,
        help="Where to write rejected lines (line, reason; never content). Default: FILE.rejected.jsonl",
    ),
    process: bool = typer.Option(True, help="Fold the imported events into profiles afterwards"),
) -> None:
    """Bulk-import events. Re-running the same file resumes where it stopped; nothing is stored twice.

    CSV columns: id,type,version,occurred_at,patient_id,anonymous_id,data (data is JSON).
    """
    if not file.is_file():
        raise fail(f"no such file: {file}")
    rt = runtime()
    total = _count_lines(file)
    with Progress(
        TextColumn("[bold]importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("import", total=total or None)
        report = import_file(
            file,
            rt.intake(),
            rt.clock,
            engine_connect=rt.engine.connect,
            progress=lambda line: bar.update(task, completed=line),
        )
    if report.resumed_from_line:
        console.print(f"resumed after line {report.resumed_from_line:,}")
    console.print(
        f"[green]{report.accepted:,} accepted[/], {report.duplicates:,} duplicates, "
        f"[{'red' if report.rejected else 'green'}]{report.rejected:,} rejected[/]"
    )
    if report.rejections:
        out = rejects or file.with_name(file.name + ".rejected.jsonl")
        write_rejections(report, out)
        table = Table("line", "reason", "detail", title="first rejected lines")
        for r in report.rejections[:10]:
            table.add_row(str(r.line), r.reason, r.detail)
        console.print(table)
        console.print(f"all {len(report.rejections):,} rejections: {out}")
    if process:
        with console.status("folding events into profiles"):
            done = rt.worker().drain()
        console.print(f"profiles updated: {done.patients:,} patients, {done.events:,} events")


@friendly_errors
def pull_command(
    url: str = typer.Option(..., envvar="TELECRM_PLATFORM_URL", help="The platform API's base URL"),
    token: str | None = typer.Option(
        None,
        help="A bearer token the platform API accepts (default: TELECRM_PLATFORM_TOKEN, or the "
        "file TELECRM_PLATFORM_TOKEN_FILE names; either keeps it out of `ps`)",
        show_default=False,
    ),
    resources: str = typer.Option(",".join(RESOURCES), help="Collections to read, in order"),
    page_size: int = typer.Option(200, min=1, max=500, help="Records per page"),
    process: bool = typer.Option(True, help="Fold the pulled events into profiles afterwards"),
) -> None:
    """Read the platform's REST API incrementally; store what no webhook delivered.

    Resumes where the last pull stopped (per collection checkpoint); what already came by webhook
    is recognised as the same fact and not stored twice.
    """
    wanted = tuple(r.strip() for r in resources.split(",") if r.strip())
    unknown = [r for r in wanted if r not in RESOURCES]
    if unknown:
        raise fail(
            f"unknown collection(s): {', '.join(unknown)}",
            hint=f"choose from {', '.join(RESOURCES)}",
            code=2,
        )
    token = token or resolve_secret(PLATFORM_TOKEN)
    if not token:
        raise fail(
            "no platform API token",
            hint=f"set {PLATFORM_TOKEN} (or {PLATFORM_TOKEN}_FILE), or pass --token",
            code=2,
        )
    rt = runtime()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        puller = PlatformPuller(client, rt.intake(), rt.engine, rt.clock, page_size=page_size)
        with console.status("pulling") as status:
            try:
                report = puller.pull(
                    wanted,
                    on_page=lambda res, r: status.update(f"pulling {res}: {r.records:,} records"),
                )
            except PullError as exc:
                raise fail(
                    str(exc), hint="the checkpoint is kept: run `telecrm pull` again"
                ) from None
    console.print(
        f"{report.records:,} records in {report.pages:,} pages: [green]{report.accepted:,} new events[/], "
        f"{report.duplicates:,} already known, {len(report.rejected):,} rejected"
    )
    for record, reason, detail in report.rejected[:10]:
        console.print(f"  [red]{record}[/] {reason}: {detail}")
    if process and report.accepted:
        done = rt.worker().drain()
        console.print(f"profiles updated: {done.patients:,} patients")
