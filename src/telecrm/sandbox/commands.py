"""`telecrm sandbox hubspot|salesforce`: run a local, contract-faithful CRM for demos and tests."""

from __future__ import annotations

import typer

from telecrm.cli_support import console

sandbox_app = typer.Typer(
    help=(
        "Local servers that speak a CRM's real API (paths, bodies, batch limits, auth, rate-limit "
        "headers, errors), keep their records, and inject faults on request "
        "(POST /_sandbox/faults). Point a destination at one with TELECRM_<DESTINATION>_URL."
    ),
    no_args_is_help=True,
)


@sandbox_app.command("hubspot")
def hubspot_command(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8091, min=1, max=65535),
    burst: int = typer.Option(100, min=1, help="Requests per window (HubSpot private app: 100)"),
    window: float = typer.Option(10.0, min=0.01, help="Window seconds (HubSpot: 10)"),
    daily: int = typer.Option(250_000, min=1, help="Requests per day"),
) -> None:
    """HubSpot CRM v3/v4: token pat-na1-sandbox, OAuth client sandbox-client-id."""
    from telecrm.sandbox.hubspot import HubSpotSandboxConfig, serve_hubspot_sandbox

    console.print(
        f"HubSpot sandbox on http://{host}:{port} (token pat-na1-sandbox; "
        f"{burst} requests / {window:g} s, {daily:,} a day); records at /_sandbox/records/contacts",
        highlight=False,
    )
    serve_hubspot_sandbox(
        host,
        port,
        HubSpotSandboxConfig(burst_limit=burst, window_seconds=window, daily_limit=daily),
    )


@sandbox_app.command("salesforce")
def salesforce_command(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8092, min=1, max=65535),
    allocation: int = typer.Option(100_000, min=1, help="API requests per rolling window"),
    window: float = typer.Option(86_400.0, min=0.01, help="Window seconds (Salesforce: 24 h)"),
) -> None:
    """Salesforce REST v62.0: client credentials sandbox-client-id / sandbox-client-secret."""
    from telecrm.sandbox.salesforce import SalesforceSandboxConfig, serve_salesforce_sandbox

    console.print(
        f"Salesforce sandbox on http://{host}:{port} (client sandbox-client-id / "
        f"sandbox-client-secret; {allocation:,} calls per {window:g} s); "
        "records at /_sandbox/records/Contact",
        highlight=False,
    )
    serve_salesforce_sandbox(
        host,
        port,
        SalesforceSandboxConfig(daily_api_allocation=allocation, window_seconds=window),
    )
