"""CLI for message templates: `telecrm templates list` and `telecrm templates preview NAME`.

A preview with `--patient` reads only the fields the template refers to, decrypts only those
that are sealed, and records the read in the audit log (purpose "template preview"); with
`--sample` (the default) it uses built-in sample values and touches no database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.table import Table
from rich.text import Text
from sqlalchemy import Connection, select

from telecrm.cli_support import console, fail, friendly_errors, now_us, runtime
from telecrm.domain.fields import FIELDS
from telecrm.messaging.context import (
    SAMPLE_EVENT,
    SAMPLE_MESSAGE_ID,
    SAMPLE_SECRET,
    Brand,
    Links,
    sample_context,
    template_context,
)
from telecrm.messaging.templates import (
    MissingSecret,
    TemplateCatalog,
    TemplateError,
    UnknownTemplate,
)
from telecrm.security.envelope import FieldCipher

templates_app = typer.Typer(
    help="Message templates: list them (with the PHI each uses) and preview one.",
    no_args_is_help=True,
)

PREVIEW_PURPOSE = "template preview"

SmsBaa = typer.Option(
    False,
    "--sms-baa/--no-sms-baa",
    envvar="TELECRM_TWILIO_BAA",
    help="Twilio signed a BAA: SMS templates may use PHI fields",
)
TemplatesDir = typer.Option(
    None,
    "--templates-dir",
    envvar="TELECRM_TEMPLATES_DIR",
    help="A folder whose templates replace or add to the built-in ones",
    file_okay=False,
    exists=True,
)


def _catalog(sms_baa: bool, templates_dir: Path | None) -> TemplateCatalog:
    try:
        return TemplateCatalog.load(sms_baa=sms_baa, override_dir=templates_dir)
    except TemplateError as exc:
        raise fail(str(exc), hint="fix the template file, then run the command again") from None


@templates_app.command("list")
@friendly_errors
def list_templates(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
    sms_baa: bool = SmsBaa,
    templates_dir: Path = TemplatesDir,
) -> None:
    """Every template: channel, purpose, languages, the PHI fields it uses, what it is for."""
    catalog = _catalog(sms_baa, templates_dir)
    rows: list[dict[str, Any]] = [
        {
            "name": t.name,
            "channel": t.channel,
            "purpose": t.purpose,
            "languages": list(t.languages),
            "phi_fields": sorted(catalog.phi_fields(t.name, t.channel)),
            "references": sorted(catalog.references(t.name, t.channel)),
            "description": t.description,
        }
        for t in catalog.all()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "channel", "purpose", "languages", "PHI fields", "description")
    for r in rows:
        table.add_row(
            r["name"],
            r["channel"],
            r["purpose"],
            ", ".join(r["languages"]),
            ", ".join(r["phi_fields"]) or "none",
            r["description"],
        )
    console.print(table)
    console.print(f"{len(rows)} templates")


def _pick_channel(catalog: TemplateCatalog, name: str, channel: str | None) -> str:
    if channel is not None:
        if channel not in ("email", "sms"):
            raise fail("--channel must be email or sms", code=2)
        return channel
    channels = [t.channel for t in catalog.all() if t.name == name]
    if not channels:
        known = sorted({t.name for t in catalog.all()})
        raise fail(f"no template named {name!r}", hint=f"known: {', '.join(known)}")
    return "email" if "email" in channels else channels[0]


def read_patient_fields(
    conn: Connection,
    cipher: FieldCipher,
    patient_key: str,
    wanted: set[str],
    *,
    actor: str,
    at_us: int,
) -> dict[str, Any]:
    """Only the `wanted` fields of one profile; sealed ones decrypted one by one and audited."""
    from telecrm.profiles.codec import decode
    from telecrm.profiles.tables import profiles
    from telecrm.profiles.views import PatientNotFound
    from telecrm.security.audit import AuditEntry, append_audit

    row = conn.execute(select(profiles).where(profiles.c.patient_key == patient_key)).first()
    if row is None:
        raise PatientNotFound("no patient matches")
    clear = decode(row, None).profile.values  # sealed fields are left out without a cipher
    tokens: dict[str, str] = orjson.loads(row.sealed or "{}")
    values: dict[str, Any] = {}
    sealed_read: list[str] = []
    for name in sorted(wanted):
        if FIELDS[name].encrypted:
            if name in tokens:
                values[name] = cipher.decrypt_json(tokens[name], record_id=patient_key, field=name)
                sealed_read.append(name)
        elif name in clear:
            values[name] = clear[name]
    append_audit(
        conn,
        [
            AuditEntry(
                actor=actor,
                action="read",
                record_type="profile",
                record_ids=[patient_key],
                fields=sealed_read,
                purpose=PREVIEW_PURPOSE,
            )
        ],
        at_us=at_us,
    )
    return values


def _patient_context(
    catalog: TemplateCatalog,
    name: str,
    channel: str,
    patient_id: str,
    *,
    need_language: bool,
    actor: str,
) -> dict[str, Any]:
    from telecrm.profiles.views import PatientNotFound, find_patient_key

    wanted = {
        r.split(".", 1)[1] for r in catalog.references(name, channel) if r.startswith("patient.")
    }
    if need_language:
        wanted.add("language")
    rt = runtime()
    cipher, index = rt.cipher(), rt.blind_index()  # before the transaction: SQLite has one writer
    try:
        with rt.engine.begin() as conn:
            key = find_patient_key(conn, index, patient_id=patient_id, email=None, phone=None)
            values = read_patient_fields(conn, cipher, key, wanted, actor=actor, at_us=now_us(rt))
    except PatientNotFound as exc:
        raise fail(str(exc), hint="give the platform's patient id") from None
    s = rt.settings
    brand = Brand(
        name=s.brand_name,
        support_email=s.support_email,
        support_phone=s.support_phone,
        address=s.brand_address,
    )
    links = Links(s.platform_url).for_message(
        SAMPLE_MESSAGE_ID, SAMPLE_EVENT, reset_url=SAMPLE_SECRET["reset_url"]
    )
    # The patient's own fields; sample event variables and secrets; this deployment's links.
    return template_context(
        patient=values,
        event=SAMPLE_EVENT,
        links=links,
        brand=brand,
        secret=SAMPLE_SECRET,
        message_id=SAMPLE_MESSAGE_ID,
    )


@templates_app.command("preview")
@friendly_errors
def preview(
    name: str = typer.Argument(..., help="Template name, e.g. order_confirmation"),
    channel: str = typer.Option(None, "--channel", help="email or sms (default: email if both)"),
    language: str = typer.Option(
        None, "--language", help="e.g. es (default: the patient's, else en)"
    ),
    patient: str = typer.Option(None, "--patient", help="Render for this patient (audited read)"),
    sample: bool = typer.Option(False, "--sample", help="Use built-in sample values (the default)"),
    actor: str = typer.Option("cli", help="Who is looking (recorded in the audit log)"),
    sms_baa: bool = SmsBaa,
    templates_dir: Path = TemplatesDir,
) -> None:
    """Render one template: subject, text and HTML for email; body and segment count for SMS."""
    if patient and sample:
        raise fail("give --patient ID or --sample, not both", code=2)
    catalog = _catalog(sms_baa, templates_dir)
    chosen = _pick_channel(catalog, name, channel)
    try:
        catalog.get(name, chosen)
    except UnknownTemplate as exc:
        raise fail(str(exc)) from None
    if patient:
        ctx = _patient_context(
            catalog, name, chosen, patient, need_language=language is None, actor=actor
        )
    else:
        ctx = sample_context()
    lang = catalog.pick_language(name, chosen, language or ctx["patient"].get("language"))
    try:
        if chosen == "email":
            email = catalog.render_email(name, lang, ctx)
            console.print(Text.assemble(("subject: ", "bold"), email.subject))
            console.print(Text(f"language: {email.language}", style="dim"))
            console.rule("text")
            console.print(email.text, markup=False, highlight=False, soft_wrap=True)
            console.rule(f"html ({len(email.html.encode()):,} bytes)")
            console.print(email.html, markup=False, highlight=False, soft_wrap=True)
        else:
            sms = catalog.render_sms(name, lang, ctx)
            console.print(sms.body, markup=False, highlight=False, soft_wrap=True)
            s = sms.segments
            console.print(
                Text(
                    f"{s.segments} segment{'s' if s.segments != 1 else ''}, {s.encoding} "
                    f"({s.units} units; language {sms.language})",
                    style="dim",
                )
            )
    except MissingSecret as exc:
        raise fail(str(exc)) from None
