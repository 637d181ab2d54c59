"""`telecrm doctor`: every check in order, one line each (or `--json`), exit 1 if any failed."""

from __future__ import annotations

import os
from collections.abc import Mapping

import orjson
import typer
from pydantic import ValidationError
from pydantic_settings import DotEnvSettingsSource
from rich.markup import escape
from rich.table import Table

from telecrm.cli_support import console, fail, settings_problems
from telecrm.doctor.destination_checks import (
    builtin_mappings,
    check_destinations,
    check_journey_webhooks,
    check_messaging,
    load_mappings,
)
from telecrm.doctor.findings import Context, Finding, failed
from telecrm.doctor.key_checks import (
    check_master_key,
    check_previous_keys,
    check_public_url,
    check_webhook_secrets,
)
from telecrm.doctor.secret_file_checks import SecretNames, check_secret_files
from telecrm.doctor.store_checks import (
    check_clock_skew,
    check_data_keys,
    check_journal_mode,
    check_schema,
    open_database,
)
from telecrm.domain.clock import Clock, SystemClock
from telecrm.security.secret_files import SecretFileError, upper_keys
from telecrm.settings import Settings

COLORS = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def diagnose(ctx: Context) -> list[Finding]:
    """Every check on one configuration, in the order an operator fixes things."""
    s = ctx.settings
    findings = check_master_key(ctx) + check_previous_keys(ctx) + check_webhook_secrets(ctx)
    mappings, broken = load_mappings(ctx)
    findings += check_secret_files(ctx, SecretNames.gather([*builtin_mappings(), *mappings]))
    providers = s.messaging and bool(
        s.sendgrid_api_key or s.twilio_auth_token or s.twilio_account_sid
    )
    findings += check_public_url(ctx, providers=providers)
    engine, found = open_database(ctx)
    findings += found
    try:
        state = "none"
        if engine is not None:
            schema, state = check_schema(engine)
            findings += schema + check_journal_mode(engine) + check_clock_skew(ctx, engine)
            if state in ("head", "behind"):
                findings += check_data_keys(ctx, engine)
        findings += broken + check_destinations(ctx, mappings) + check_messaging(ctx)
        if engine is not None and state == "head" and s.journeys and s.messaging:
            findings += check_journey_webhooks(ctx, engine)
    finally:
        if engine is not None:
            engine.dispose()
    return findings


def run_doctor(
    environ: Mapping[str, str] | None = None, clock: Clock | None = None
) -> list[Finding]:
    """Load the settings as every command does, then diagnose them (a bad setting is a finding)."""
    env = os.environ if environ is None else environ
    try:
        settings = Settings()
    except ValidationError as exc:
        return [Finding("settings", "fail", settings_problems(exc), "see docs/operations.md")]
    except SecretFileError as exc:
        return [Finding("settings", "fail", str(exc), "see docs/operations.md (Secrets)")]
    dotenv = DotEnvSettingsSource(Settings).env_vars
    ctx = Context(settings, env, upper_keys(env, dotenv), clock or SystemClock())
    return diagnose(ctx)


def doctor_command(
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document instead"),
) -> None:
    """Check the configuration: keys, secret files, database, clocks, destinations, providers.

    One line per check: ok, warn (works, but fix it), fail (will not work, or is unsafe), skip.
    Nothing is sent to any provider and no secret is printed. Exit code 1 if any check failed.
    """
    findings = run_doctor()
    if json_output:
        body = {"ok": not failed(findings), "checks": [f.as_dict() for f in findings]}
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        if failed(findings):
            raise typer.Exit(1)
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column()
    for f in findings:
        said = escape(f.message)
        if f.advice and f.status in ("warn", "fail"):
            said += f"\n[dim]→ {escape(f.advice)}[/]"
        table.add_row(f"[{COLORS[f.status]}]{f.status}[/]", escape(f.check), said)
    console.print(table, highlight=False)
    counts = {s: sum(1 for f in findings if f.status == s) for s in COLORS}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)
    if failed(findings):
        raise fail(
            f"{counts['fail']} check(s) failed",
            hint="fix the lines marked fail, then run `telecrm doctor` again",
        )
