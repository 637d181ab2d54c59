"""Doctor's checks of where data goes: each CRM destination's mapping and credentials, the
messaging providers, the secrets journey webhooks wait for.

Credentials are checked for presence and shape only, exactly as the connectors would be built
from them; nothing is sent, so the doctor stays fast and works offline.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping as EnvMapping
from typing import Any

from sqlalchemy import Engine, func, select

from telecrm.doctor.findings import Context, Finding
from telecrm.ingest.signatures import InvalidSecret, decode_secret
from telecrm.journeys.tables import journey_webhooks
from telecrm.security.secret_files import SecretFileError, resolve_secret
from telecrm.store.engine import read_only
from telecrm.sync.destinations import (
    DestinationNotConfigured,
    dynamics_config,
    hubspot_config,
    pipedrive_config,
    salesforce_config,
    url_override_name,
)
from telecrm.sync.mapping import BUILTIN_DIR, Mapping, MappingError, load_mapping

CONFIGS: dict[str, Callable[[Mapping, EnvMapping[str, str]], Any]] = {
    "hubspot": hubspot_config,
    "salesforce": salesforce_config,
    "pipedrive": pipedrive_config,
    "dynamics": dynamics_config,
}


def load_mappings(ctx: Context) -> tuple[list[Mapping], list[Finding]]:
    """The configured destinations' mappings, and a fail line for each that does not load."""
    loaded: list[Mapping] = []
    out: list[Finding] = []
    for name in ctx.settings.destinations:
        try:
            loaded.append(load_mapping(name))
        except MappingError as exc:
            out.append(
                Finding(
                    f"destination {name}",
                    "fail",
                    str(exc),
                    f"`telecrm mapping check {name}` shows the same; fix the file",
                )
            )
    return loaded, out


def builtin_mappings() -> list[Mapping]:
    """The shipped mappings: the variables they name are known ones even when not configured."""
    out = []
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        try:
            out.append(load_mapping(path))
        except MappingError:  # a shipped file that does not load is the test suite's to catch
            continue
    return out


def check_destinations(ctx: Context, mappings: list[Mapping]) -> list[Finding]:
    if not ctx.settings.destinations:
        return [Finding("destinations", "skip", "none configured (TELECRM_DESTINATIONS)")]
    return [_destination(ctx, m) for m in mappings]


def _destination(ctx: Context, mapping: Mapping) -> Finding:
    name = f"destination {mapping.destination}"
    try:
        CONFIGS[mapping.connector](mapping, ctx.environ)
    except (DestinationNotConfigured, SecretFileError) as exc:
        return Finding(name, "fail", str(exc), "set the variables (or their _FILE twins)")
    override = ctx.environ.get(url_override_name(mapping))
    where = f"; pointed at {url_override_name(mapping)}" if override else ""
    if "baa" not in mapping.model_fields_set:
        return Finding(
            name,
            "warn",
            f"credentials present{where}; the mapping does not state baa:, so it is false "
            "(no PHI goes there)",
            f"write `baa: false` (or `baa: true` once a BAA covers {mapping.connector}) in "
            f"{mapping.path}, so the decision is on record",
        )
    phi = "may receive the PHI it maps" if mapping.baa else "no PHI goes there"
    return Finding(
        name, "ok", f"credentials present{where}; baa: {str(mapping.baa).lower()} ({phi})"
    )


def check_messaging(ctx: Context) -> list[Finding]:
    s = ctx.settings
    if not s.messaging:
        return [Finding("messaging", "skip", "off (TELECRM_MESSAGING=false)")]
    out: list[Finding] = []
    email = s.sendgrid_api_key is not None
    twilio = {
        "TELECRM_TWILIO_ACCOUNT_SID": bool(s.twilio_account_sid),
        "TELECRM_TWILIO_AUTH_TOKEN": s.twilio_auth_token is not None,
        "TELECRM_TWILIO_MESSAGING_SERVICE_SID": bool(s.twilio_messaging_service_sid),
    }
    sms = all(twilio.values())
    if email:
        if s.sendgrid_webhook_public_key:
            out.append(
                Finding(
                    "SendGrid",
                    "ok",
                    "API key and Event Webhook public key set; email carries no PHI",
                )
            )
        else:
            out.append(
                Finding(
                    "SendGrid",
                    "warn",
                    "API key set, but not TELECRM_SENDGRID_WEBHOOK_PUBLIC_KEY: delivery and "
                    "bounce callbacks are refused",
                    "copy the Signed Event Webhook's verification key from SendGrid's settings",
                )
            )
    if any(twilio.values()) and not sms:
        missing = ", ".join(k for k, present in twilio.items() if not present)
        out.append(
            Finding(
                "Twilio", "fail", f"half configured: {missing} missing", "set all three, or none"
            )
        )
    elif sms:
        baa = (
            "TELECRM_TWILIO_BAA=true: SMS may carry PHI (HIPAA account)"
            if s.twilio_baa
            else "TELECRM_TWILIO_BAA=false: SMS carry no PHI"
        )
        out.append(Finding("Twilio", "ok", f"account, auth token and Messaging Service set; {baa}"))
    if not (email or any(twilio.values())):
        out.append(
            Finding(
                "messaging",
                "warn",
                "on, but no provider is configured: messages are planned, never sent, then expire",
                "set TELECRM_SENDGRID_API_KEY and/or TELECRM_TWILIO_*, or TELECRM_MESSAGING=false",
            )
        )
    return out


def check_journey_webhooks(ctx: Context, engine: Engine) -> list[Finding]:
    """The secrets that waiting journey webhook deliveries will be signed with."""
    name = "journey webhooks"
    t = journey_webhooks
    with read_only(engine).connect() as conn:
        waiting: dict[str, int] = dict(
            conn.execute(
                select(t.c.secret_env, func.count())
                .where(t.c.status == "pending")
                .group_by(t.c.secret_env)
            ).all()
        )
    if not waiting:
        return [Finding(name, "skip", "no deliveries waiting")]
    out: list[Finding] = []
    for variable, count in sorted(waiting.items()):
        try:
            secret = resolve_secret(variable, ctx.environ)
        except SecretFileError as exc:
            out.append(Finding(name, "fail", f"{count} waiting: {exc}"))
            continue
        if not secret:
            out.append(
                Finding(
                    name,
                    "fail",
                    f"{count} deliveries wait for {variable}, which is not set",
                    f"set {variable} (or {variable}_FILE) to the receiver's whsec_ secret",
                )
            )
            continue
        try:
            decode_secret(secret)
        except InvalidSecret as exc:
            out.append(Finding(name, "fail", f"{variable}: {exc}"))
    if not out:
        return [Finding(name, "ok", f"{sum(waiting.values())} waiting; their secrets are set")]
    return out
