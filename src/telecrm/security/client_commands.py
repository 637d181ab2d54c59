"""CLI for API clients of the read API: `telecrm clients create | list | disable`."""

from __future__ import annotations

import typer
from rich.table import Table

from telecrm.cli_support import console, fail, friendly_errors, now_us, runtime
from telecrm.domain.clock import from_micros
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.clients import ClientError, create_client, disable_client, list_clients
from telecrm.security.roles import Role, visible_fields
from telecrm.store.engine import read_only

clients_app = typer.Typer(
    help="API clients of the read API (OAuth 2.0 client credentials; docs/api.md).",
    no_args_is_help=True,
)


def _audited(action: str, client_id: str, purpose: str) -> AuditEntry:
    return AuditEntry(
        actor="cli",
        action=action,
        record_type="api_client",
        record_ids=[client_id],
        fields=[],
        purpose=purpose,
    )


@clients_app.command("create")
@friendly_errors
def create_command(
    name: str = typer.Argument(..., help="Who the client is for, e.g. 'care-team-portal'"),
    role: Role = typer.Option(..., "--role", help="What the client may read (docs/api.md)"),
) -> None:
    """Create a client and print its id and secret. The secret is shown this once only."""
    rt = runtime()
    try:
        with rt.engine.begin() as conn:
            new = create_client(conn, name, role, now_us=now_us(rt))
            append_audit(
                conn,
                [_audited("client_create", new.client.client_id, f"role {role.value}")],
                at_us=now_us(rt),
            )
    except ClientError as exc:
        raise fail(str(exc), code=2) from None
    console.print(f"client_id     {new.client.client_id}", highlight=False)
    console.print(f"client_secret {new.secret}", highlight=False)
    console.print(f"role          {role.value}", highlight=False)
    console.print(
        "[yellow]store the secret now: telecrm keeps only a hash and cannot show it again[/]"
    )
    console.print(
        "get a token: curl -u CLIENT_ID:CLIENT_SECRET -d grant_type=client_credentials "
        f"{rt.settings.public_url.rstrip('/')}/oauth/token",
        highlight=False,
        soft_wrap=True,
    )


@clients_app.command("list")
@friendly_errors
def list_command() -> None:
    """List clients: id, name, role, when created, whether disabled. Never a secret."""
    rt = runtime()
    with read_only(rt.engine).connect() as conn:
        found = list_clients(conn)
    if not found:
        raise fail("no API clients yet", hint="telecrm clients create NAME --role ROLE")
    table = Table()
    table.add_column("client id", no_wrap=True)
    table.add_column("name")
    table.add_column("role", no_wrap=True)
    table.add_column("created")
    table.add_column("status")
    table.add_column("fields it sees", justify="right")
    for c in found:
        table.add_row(
            c.client_id,
            c.name,
            c.role.value,
            from_micros(c.created_us).isoformat(timespec="seconds"),
            "[red]disabled[/]" if c.disabled else "enabled",
            str(len(visible_fields(c.role))),
        )
    console.print(table)


@clients_app.command("disable")
@friendly_errors
def disable_command(
    client_id: str = typer.Argument(..., help="The client id (tcc_...)"),
) -> None:
    """Disable a client at once: its secret and every token it holds stop working."""
    rt = runtime()
    with rt.engine.begin() as conn:
        client = disable_client(conn, client_id, now_us=now_us(rt))
        append_audit(
            conn, [_audited("client_disable", client.client_id, "disabled")], at_us=now_us(rt)
        )
    console.print(f"[green]disabled[/] {client.client_id} ({client.name}, {client.role.value})")
