"""`telecrm simulate`: write a synthetic platform's events (and its ground truth) as JSON Lines."""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from telecrm.bulk_gc import no_cyclic_collection
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.generator import Simulation
from telecrm.simulate.ground_truth import truth_header
from telecrm.simulate.sender import WebhookSender

_DEFAULTS = {name: f.default for name, f in SimulationConfig.model_fields.items()}
_BATCH = 4096  # lines per write; also how often the progress bar moves

err = Console(stderr=True)

simulate_app = typer.Typer(
    help=(
        "Generate a synthetic telehealth platform's events as JSON Lines: the demo's data "
        "source and the benchmarks' load. Same seed, same bytes. See docs/simulator.md."
    ),
    rich_markup_mode="rich",
)


def _fail(message: str, hint: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}\n[dim]{hint}[/]")
    return typer.Exit(code)


@simulate_app.callback(invoke_without_command=True)
def simulate(
    ctx: typer.Context,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Events file (JSON Lines); - for stdout"
    ),
    send: str | None = typer.Option(
        None,
        "--send",
        help="Instead of a file, post signed webhooks to this intake, e.g. http://127.0.0.1:8080/v1/events",
    ),
    rate: float = typer.Option(500.0, min=0.001, help="With --send: events per second"),
    batch: int = typer.Option(100, min=1, max=1000, help="With --send: events per request"),
    secret: str | None = typer.Option(
        None,
        envvar="TELECRM_WEBHOOK_SECRETS",
        help="With --send: the whsec_... secret (default: the first of TELECRM_WEBHOOK_SECRETS)",
    ),
    truth: Path | None = typer.Option(
        None, "--truth", help="Also write each patient's latent parameters here (JSON Lines)"
    ),
    to_postgres: str | None = typer.Option(
        None,
        "--to-postgres",
        help="Instead of events, write the platform's own tables into this PostgreSQL database "
        "(postgresql://user@host/db); see docs/sources.md",
    ),
    until: str | None = typer.Option(
        None,
        "--until",
        help="With --to-postgres: stop the world at this instant (YYYY-MM-DD[THH:MM]); a later "
        "run with a later --until goes on from there",
    ),
    reset: bool = typer.Option(False, help="With --to-postgres: drop the platform tables first"),
    patients: int = typer.Option(_DEFAULTS["patients"], min=1, help="Patients to simulate"),
    months: int = typer.Option(_DEFAULTS["months"], min=1, max=120, help="Length of the period"),
    seed: int = typer.Option(_DEFAULTS["seed"], min=0, help="Random seed"),
    start: str = typer.Option(
        _DEFAULTS["start"].isoformat(), help="First day of the period, YYYY-MM-DD (00:00 UTC)"
    ),
    progress: bool = typer.Option(True, help="Show a progress bar on stderr"),
) -> None:
    """Write `--patients` patients' events over `--months` months to `--out`, or `--send` them."""
    if ctx.invoked_subcommand is not None:
        return  # e.g. `telecrm simulate serve`: the subcommand has its own options
    if sum(x is not None for x in (out, send, to_postgres)) != 1:
        raise _fail(
            "give exactly one of --out, --send and --to-postgres",
            "see `telecrm simulate --help`",
            2,
        )
    try:
        first_day = date.fromisoformat(start)
    except ValueError:
        raise _fail("--start is not a date", "write it as YYYY-MM-DD, e.g. 2025-01-01", 2) from None
    try:
        config = SimulationConfig(patients=patients, months=months, seed=seed, start=first_day)
    except ValidationError as exc:
        problem = exc.errors(include_input=False, include_url=False)[0]
        raise _fail(
            f"invalid settings: {problem['msg']}", "see `telecrm simulate --help`", 2
        ) from None
    if to_postgres is not None:
        from telecrm.simulate.to_postgres import write_platform_database

        write_platform_database(config, to_postgres, until, reset=reset, show=progress)
        return
    if send is not None:
        if not secret:
            raise _fail(
                "--send needs a webhook secret", "pass --secret or set TELECRM_WEBHOOK_SECRETS", 2
            )
        _send(config, send, secret.split(",")[0].strip(), rate, batch, progress)
        return
    assert out is not None
    for path, flag in ((out, "--out"), (truth, "--truth")):
        if path is not None and str(path) != "-" and not path.parent.is_dir():
            raise _fail(f"the folder for {flag} does not exist", "create it first", 2)

    try:
        with no_cyclic_collection():
            written, seconds = _run(config, out, truth, progress)
    except OSError as exc:
        raise _fail(
            f"cannot write the output: {exc.strerror}", "check the path and free space", 1
        ) from None
    rate = written / seconds if seconds > 0 else float(written)
    err.print(
        f"wrote {written:,} events for {config.patients:,} patients "
        f"({config.start_at:%Y-%m-%d} to {config.end:%Y-%m-%d}) in {seconds:.1f} s: "
        f"{rate:,.0f} events/s",
        highlight=False,
        soft_wrap=True,
    )


def _send(
    config: SimulationConfig, url: str, secret: str, rate: float, batch: int, show: bool
) -> None:
    parsed = httpx.URL(url)
    started = time.perf_counter()
    with (
        httpx.Client(base_url=f"{parsed.scheme}://{parsed.netloc.decode()}", timeout=30) as client,
        Progress(
            TextColumn("[bold]sending[/]"),
            TextColumn("{task.completed:>10,} events"),
            TimeElapsedColumn(),
            console=err,
            disable=not show,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("send", total=None)
        try:
            sender = WebhookSender(
                client, parsed.path or "/v1/events", secret, rate=rate, batch=batch
            )
            report = sender.send(
                Simulation(config).events(), on_batch=lambda r: bar.update(task, completed=r.events)
            )
        except ValueError as exc:
            raise _fail(str(exc), "check the secret (whsec_...) and --rate/--batch", 2) from None
    seconds = time.perf_counter() - started
    err.print(
        f"sent {report.events:,} events in {seconds:.1f} s ({report.events / max(seconds, 1e-9):,.0f} events/s): "
        f"{report.accepted:,} accepted, {report.duplicates:,} duplicates, {report.retries:,} retries",
        highlight=False,
        soft_wrap=True,
    )
    if report.gave_up:
        raise _fail(
            f"stopped after {len(report.failed)} failed requests in a row",
            f"is the intake at {url} up? ({report.failed[-1][1]})",
            1,
        )
    if report.failed:
        shown = "; ".join(
            f"{status or 'no answer'}: {title}" for status, title in report.failed[:5]
        )
        raise _fail(
            f"{len(report.failed):,} request(s) failed ({shown})", "see the intake's logs", 1
        )


def _run(config: SimulationConfig, out: Path, truth: Path | None, show: bool) -> tuple[int, float]:
    with ExitStack() as stack:
        events_file: BinaryIO = (
            sys.stdout.buffer if str(out) == "-" else stack.enter_context(out.open("wb"))
        )
        sink = None
        sim = Simulation(config)
        if truth is not None:
            truth_file = stack.enter_context(truth.open("wb"))
            truth_file.write(orjson.dumps(truth_header(config, sim.providers)) + b"\n")

            def sink(record: dict[str, Any]) -> None:
                truth_file.write(orjson.dumps(record) + b"\n")

        sim.on_truth = sink
        bar = stack.enter_context(
            Progress(
                TextColumn("[bold]simulating[/] {task.fields[day]}"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%  {task.fields[events]:>12,} events"),
                TimeElapsedColumn(),
                console=err,
                disable=not show,
                transient=True,
            )
        )
        start, span = config.start_at, (config.end - config.start_at).total_seconds()
        task = bar.add_task("simulate", total=span, day=f"{start:%Y-%m-%d}", events=0)
        began = time.perf_counter()
        written, batch = 0, []
        dumps = orjson.dumps
        for event in sim.events():
            batch.append(dumps(event))
            if len(batch) == _BATCH:
                events_file.write(b"\n".join(batch) + b"\n")
                written += len(batch)
                batch.clear()
                at = datetime.fromisoformat(event["occurred_at"])
                elapsed = (at - start).total_seconds()
                bar.update(task, completed=elapsed, day=f"{at:%Y-%m-%d}", events=written)
        if batch:
            events_file.write(b"\n".join(batch) + b"\n")
            written += len(batch)
        events_file.flush()
        return written, time.perf_counter() - began


@simulate_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind"),
    port: int = typer.Option(8090, min=1, max=65535, help="Port to listen on"),
    jwt_secret: str = typer.Option(
        ...,
        envvar="TELECRM_PLATFORM_JWT_SECRET",
        help="HS256 secret for bearer tokens (>= 32 bytes)",
    ),
    patients: int = typer.Option(_DEFAULTS["patients"], min=1, help="Patients to simulate"),
    months: int = typer.Option(_DEFAULTS["months"], min=1, max=120, help="Length of the period"),
    seed: int = typer.Option(_DEFAULTS["seed"], min=0, help="Random seed"),
    admin_token: bool = typer.Option(
        False, "--print-admin-token", help="Print a 24-hour admin token on stderr"
    ),
) -> None:
    """Serve the simulated platform's own REST API (patients, consultations, orders) over HTTP."""
    import uvicorn

    from telecrm.simulate.platform_api import create_platform_app, mint_token
    from telecrm.simulate.platform_data import PlatformData

    if len(jwt_secret.encode()) < 32:
        raise _fail("--jwt-secret is too short", "use at least 32 bytes", 2)
    config = SimulationConfig(patients=patients, months=months, seed=seed)
    data = PlatformData.from_events(Simulation(config).events())
    if admin_token:
        token = mint_token(jwt_secret, sub="admin", role="admin", ttl_seconds=86_400)
        err.print(f"admin token: {token}", highlight=False, soft_wrap=True)
    app = create_platform_app(data, jwt_secret=jwt_secret, now=lambda: datetime.now(UTC))
    err.print(f"platform API on http://{host}:{port} (OpenAPI at /docs)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
