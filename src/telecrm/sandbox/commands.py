"""`telecrm sandbox hubspot|salesforce|sendgrid|twilio`: local, contract-faithful providers."""

from __future__ import annotations

import typer

from telecrm.cli_support import console

sandbox_app = typer.Typer(
    help=(
        "Local servers that speak a provider's real API (paths, bodies, batch limits, auth, rate-limit "
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


@sandbox_app.command("sendgrid")
def sendgrid_command(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8093, min=1, max=65535),
    webhook_url: str = typer.Option(
        None,
        help="Where the signed Event Webhook posts (e.g. http://127.0.0.1:8000/webhooks/sendgrid)",
    ),
    rate: int = typer.Option(600, min=1, help="API requests per second before 429"),
) -> None:
    """SendGrid v3 mail send, ASM groups, suppressions and the Signed Event Webhook: API key
    SG.sandbox-key. Events post on POST /_sandbox/events/flush; the public key is at
    /_sandbox/public_key."""
    from telecrm.sandbox.sendgrid import SendGridSandboxConfig, serve_sendgrid_sandbox

    console.print(
        f"SendGrid sandbox on http://{host}:{port} (API key SG.sandbox-key; {rate} requests/s); "
        f"messages at /_sandbox/messages; events to {webhook_url or '(set POST /_sandbox/webhook)'}",
        highlight=False,
    )
    serve_sendgrid_sandbox(
        host, port, SendGridSandboxConfig(requests_per_second=rate, webhook_url=webhook_url)
    )


@sandbox_app.command("twilio")
def twilio_command(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8094, min=1, max=65535),
    status_url: str = typer.Option(
        None, help="The Messaging Service's status callback URL (…/webhooks/twilio/status)"
    ),
    inbound_url: str = typer.Option(
        None, help="Where inbound SMS post (…/webhooks/twilio/inbound)"
    ),
    rate: int = typer.Option(100, min=1, help="API requests per second before 429 (20429)"),
) -> None:
    """Twilio Programmable Messaging (Messages API, one Messaging Service, status callbacks and
    inbound SMS signed with X-Twilio-Signature). Simulate a reply with
    POST /_sandbox/inbound {"from": "+1...", "body": "STOP"}."""
    from telecrm.sandbox.twilio import TwilioSandboxConfig, serve_twilio_sandbox

    config = TwilioSandboxConfig(
        requests_per_second=rate, status_callback_url=status_url, inbound_url=inbound_url
    )
    console.print(
        f"Twilio sandbox on http://{host}:{port}: account {config.account_sid}, auth token "
        f"{config.auth_token}, Messaging Service {config.messaging_service_sid}; "
        "messages at /_sandbox/messages",
        highlight=False,
    )
    serve_twilio_sandbox(host, port, config)


@sandbox_app.command("pipedrive")
def pipedrive_command(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8095, min=1, max=65535),
    daily_tokens: int = typer.Option(30_000, min=1, help="The company's daily token budget"),
) -> None:
    """Pipedrive API v1/v2 (persons, organizations, deals, activities, notes, custom fields,
    pipelines): API token pd-sandbox-api-token, or OAuth client sandbox-client-id."""
    from telecrm.sandbox.pipedrive import PipedriveSandboxConfig, serve_pipedrive_sandbox

    console.print(
        f"Pipedrive sandbox on http://{host}:{port} (API token pd-sandbox-api-token; "
        f"{daily_tokens:,} tokens a day); records at /_sandbox/records/persons",
        highlight=False,
    )
    serve_pipedrive_sandbox(host, port, PipedriveSandboxConfig(daily_token_budget=daily_tokens))


@sandbox_app.command("dynamics")
def dynamics_command(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8096, min=1, max=65535),
    org_url: str = typer.Option(
        "https://contoso.crm.dynamics.com",
        help="The environment URL tokens are scoped to (the mapping's connection.org_url)",
    ),
) -> None:
    """Microsoft Dataverse Web API v9.2 ($batch, upsert by alternate key, metadata API, service
    protection) with an Entra ID token endpoint: client sandbox-client-id / sandbox-client-secret."""
    from telecrm.sandbox.dynamics import serve_dynamics_sandbox
    from telecrm.sandbox.dynamics_limits import DynamicsSandboxConfig

    config = DynamicsSandboxConfig(org_url=org_url)
    console.print(
        f"Dynamics 365 sandbox on http://{host}:{port} (tenant {config.tenant_id}, client "
        "sandbox-client-id / sandbox-client-secret; 6,000 requests per 5 minutes); "
        "records at /_sandbox/records/contacts",
        highlight=False,
    )
    serve_dynamics_sandbox(host, port, config)
