"""`telecrm`: the command line (Typer + Rich). Each part's commands live with the part."""

from __future__ import annotations

import typer

from telecrm import __version__
from telecrm.analytics.commands import analytics_app
from telecrm.cli_support import console, friendly_errors, runtime
from telecrm.demo import demo_command
from telecrm.doctor.commands import doctor_command
from telecrm.ingest.commands import import_command, pull_command
from telecrm.journeys.commands import journeys_app
from telecrm.messaging.commands import consent_app, messages_app
from telecrm.messaging.template_commands import templates_app
from telecrm.profiles.commands import lifecycle_app, patients_app, stats_command, worker_command
from telecrm.reports.analyze_commands import analyze_command
from telecrm.reports.live_commands import report_command
from telecrm.sandbox.commands import sandbox_app
from telecrm.security.client_commands import clients_app
from telecrm.security.commands import audit_app, keys_app, secrets_app
from telecrm.security.compliance_commands import (
    disclosures_app,
    erase_command,
    export_command,
    retention_app,
)
from telecrm.simulate.cli import simulate_app
from telecrm.sources.commands import sources_app
from telecrm.sync.commands import crm_app, dlq_app, mapping_app, sync_app

app = typer.Typer(
    name="telecrm",
    help=(
        "HIPAA-aware CRM integration and patient-engagement engine for telehealth platforms.\n\n"
        "Start with `telecrm demo`. Configure with TELECRM_* environment variables "
        "(see `docs/operations.md`)."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(lifecycle_app, name="lifecycle")
app.add_typer(patients_app, name="patients")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(clients_app, name="clients")
app.add_typer(disclosures_app, name="disclosures")
app.add_typer(retention_app, name="retention")
patients_app.command("export")(export_command)
patients_app.command("erase")(erase_command)
app.add_typer(secrets_app, name="secrets")
app.add_typer(simulate_app, name="simulate")
app.add_typer(sync_app, name="sync")
app.add_typer(dlq_app, name="dlq")
app.add_typer(crm_app, name="crm")
app.add_typer(mapping_app, name="mapping")
app.add_typer(templates_app, name="templates")
app.add_typer(messages_app, name="messages")
app.add_typer(consent_app, name="consent")
app.add_typer(journeys_app, name="journeys")
app.add_typer(analytics_app, name="analytics")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(sources_app, name="sources")
app.command("demo")(demo_command)
app.command("doctor")(doctor_command)
app.command("import")(import_command)
app.command("pull")(pull_command)
app.command("analyze")(analyze_command)
app.command("report")(report_command)
app.command("stats")(stats_command)
app.command("worker")(worker_command)

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
@friendly_errors
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version (idempotent)."""
    rt = runtime()
    console.print(
        f"[green]schema is at head[/] on {rt.engine.url.render_as_string(hide_password=True)}"
    )


@app.command()
@friendly_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(8080, min=1, max=65535, help="TCP port"),
    workers: int = typer.Option(
        1, min=1, max=64, help="Server processes (each with its own intake writer and worker)"
    ),
) -> None:
    """Run the HTTP API: POST /v1/events and /v1/messages, the SendGrid and Twilio webhooks,
    GET /healthz, GET /metrics."""
    import uvicorn

    from telecrm.api.app import create_app, tune_interpreter
    from telecrm.observability.logs import configure_logging

    rt = runtime()
    configure_logging(rt.settings.log_level)
    rt.keyring  # noqa: B018  (fail here, with a clear message, if the key is missing)
    if rt.settings.messaging:  # a bad template or messaging config: say so now, not per request
        rt.messaging()
        if rt.settings.journeys:  # a bad journey file too
            rt.journeys()
    console.print(
        f"telecrm {__version__} listening on http://{host}:{port}"
        + (f" ({workers} processes)" if workers > 1 else ""),
        highlight=False,
    )
    if workers > 1:
        # Each process builds its own runtime from the same environment.
        uvicorn.run(
            "telecrm.api.app:app_from_environment",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
        )
        return
    tune_interpreter()
    uvicorn.run(create_app(rt), host=host, port=port, log_level="warning", access_log=False)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


if __name__ == "__main__":
    app()
