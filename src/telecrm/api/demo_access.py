"""The demo's access-control part: OAuth clients per role, one patient read as each role, the
refusals, the accounting of disclosures and the right-of-access export, the rate limits, `doctor`.

Everything goes through the real app (`create_app`) in process over httpx's ASGI transport
(FastAPI's TestClient): tokens from `POST /oauth/token`, reads from `/v1/patients`; the
accounting and the export are `security/demo_compliance.py`. The terminal gets field *names*,
counts and statuses only, never a patient's value: the values are PHI.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient
from httpx import Response
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from telecrm.api.app import create_app
from telecrm.bootstrap import Runtime, bootstrap
from telecrm.cli_support import fail
from telecrm.domain.clock import to_micros
from telecrm.domain.fields import FIELDS
from telecrm.ingest.signatures import signed_headers
from telecrm.observability.logs import configure_logging
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profile_rows, profiles
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.clients import create_client
from telecrm.security.demo_compliance import (
    erase_patient,
    export_for_patient,
    show_accounting,
    show_audit_trail,
)
from telecrm.security.roles import Role, visible_fields
from telecrm.security.tables import audit_log
from telecrm.settings import Settings
from telecrm.sync.tables import disclosures

ROLES = (Role.MARKETING, Role.CARE_COORDINATOR, Role.COMPLIANCE)
REASON = "demo: follow-up call"
# A small `api` budget for the rate-limit part, so a burst of a dozen requests runs past it.
DEMO_API_RATE, DEMO_API_BURST, FLOOD = 1.0, 5, 12


def demo_access(rt: Runtime, console: Console, *, out_dir: Path) -> dict[str, Any]:
    """Runs the part and returns the numbers the demo checks (`roles_ok` above all)."""
    # The refusals below are logged as `access.denied` warnings, as in production; the demo's
    # terminal shows them as a table instead of JSON lines in the middle of it.
    configure_logging("ERROR")
    try:
        return _run(rt, console, out_dir)
    finally:
        configure_logging(rt.settings.log_level)


def _run(rt: Runtime, console: Console, out_dir: Path) -> dict[str, Any]:
    patient = _patient_with_phi_disclosures(rt)
    with rt.engine.connect() as conn:
        audit_start = int(conn.execute(select(func.max(audit_log.c.seq))).scalar() or 0)
    out: dict[str, Any] = {"patient": patient}
    with TestClient(create_app(rt, embedded_worker=False), raise_server_exceptions=False) as http:
        tokens = _clients_and_tokens(rt, console, http)
        out.update(_role_reads(rt, console, http, tokens, patient))
        out["refusals_ok"] = _refusals(console, http, tokens, patient)
        out["disclosures"] = show_accounting(
            console, http, _bearer(tokens[Role.COMPLIANCE]), patient
        )
    out["files"] = export_for_patient(rt, console, patient, out_dir)
    show_audit_trail(rt, console, patient, audit_start)
    # Another patient asks to be forgotten (the one shown keeps their record for the look-around)
    out["erasure"] = erase_patient(rt, console, _patient_to_erase(rt, patient))
    out.update(_rate_limits(rt, console, tokens[Role.MARKETING]))
    out["doctor"] = _doctor(rt, console)
    return out


def _patient_to_erase(rt: Runtime, shown: str) -> str:
    """The last registered patient other than the one the demo shows (who stays for the panel)."""
    with rt.engine.connect() as conn:
        found = conn.execute(
            select(func.max(profiles.c.patient_key)).where(
                profiles.c.patient_id.is_not(None),
                profiles.c.patient_key != shown,
                profiles.c.deleted.is_(False),
            )
        ).scalar()
    if found is None:
        raise fail("the demo needs a second patient to show an erasure")
    return str(found)


def _patient_with_phi_disclosures(rt: Runtime) -> str:
    """The first patient whose PHI went to the BAA-covered Dynamics sandbox (pat_000001 mostly)."""
    with rt.engine.connect() as conn:
        found = conn.execute(
            select(func.min(disclosures.c.patient_key)).where(
                disclosures.c.destination == "dynamics", disclosures.c.phi.is_(True)
            )
        ).scalar()
    return str(found or "pat_000001")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _clients_and_tokens(rt: Runtime, console: Console, http: TestClient) -> dict[Role, str]:
    """`telecrm clients create` for each role, then the client credentials grant over HTTP."""
    now_us = to_micros(rt.clock.now())
    table = Table("role", "client id", "token", "fields it sees", title="API clients")
    for column in table.columns[:3]:
        column.no_wrap = True
    tokens: dict[Role, str] = {}
    for role in ROLES:
        with rt.engine.begin() as conn:
            new = create_client(conn, f"demo-{role.value}".replace("_", "-"), role, now_us=now_us)
            entry = AuditEntry(
                "demo", "client_create", "api_client", [new.client.client_id], [], f"role {role}"
            )
            append_audit(conn, [entry], at_us=now_us)
        response = http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(new.client.client_id, new.secret),
        )
        if response.status_code != 200:
            raise fail(f"the token endpoint answered {response.status_code} to the {role} client")
        body = response.json()
        tokens[role] = str(body["access_token"])
        table.add_row(
            role.value,
            new.client.client_id,
            f"{body['token_type']}, {body['expires_in']} s",
            str(len(visible_fields(role))),
        )
    console.print(table)
    console.print(
        "tokens: POST /oauth/token, client credentials grant, ES256 JWTs\n"
        "secrets: shown once by `telecrm clients create`, not printed here",
        highlight=False,
    )
    return tokens


def _held_fields(rt: Runtime, patient: str) -> list[str]:
    """The names (never the values) of the fields this patient's profile holds, in catalog order."""
    cipher = rt.cipher()  # keys before the connection: opening them may need one of its own
    with rt.engine.connect() as conn:
        row = conn.execute(profile_rows().where(profiles.c.patient_key == patient)).first()
    if row is None:
        return []
    values = decode(row, cipher).profile.values
    return [name for name in FIELDS if name in values]


def _kind(name: str) -> str:
    return "PHI" if FIELDS[name].is_phi else "identifying" if FIELDS[name].encrypted else "other"


def _shown(names: list[str], seen: set[str]) -> str:
    shown = sum(1 for n in names if n in seen)
    return "yes" if shown == len(names) else "no" if not shown else f"{shown} of {len(names)}"


def _field_table(patient: str, held: list[str], seen: dict[Role, set[str]]) -> Table:
    """One row per identifying or PHI field the patient has, one row for all the others."""
    table = Table(
        "field",
        "kind",
        "marketing",
        "care coordinator",
        title=f"GET /v1/patients/{patient}: fields each role got",
    )
    others = [n for n in held if _kind(n) == "other"]
    rows = [([n], n, _kind(n)) for n in held if _kind(n) != "other"]
    rows.append((others, f"the {len(others)} other fields", "other"))
    for names, label, kind in rows:
        table.add_row(
            label,
            kind,
            _shown(names, seen[Role.MARKETING]),
            _shown(names, seen[Role.CARE_COORDINATOR]),
        )
    table.caption = "names only, never values; other: preferences, usage, orders, billing"
    return table


def _role_reads(
    rt: Runtime, console: Console, http: TestClient, tokens: dict[Role, str], patient: str
) -> dict[str, Any]:
    path = f"/v1/patients/{patient}"
    marketing = http.get(path, headers=_bearer(tokens[Role.MARKETING]))
    care = http.get(
        path, headers={**_bearer(tokens[Role.CARE_COORDINATOR]), "X-Telecrm-Reason": REASON}
    )
    if marketing.status_code != 200 or care.status_code != 200:
        raise fail(
            f"reading {patient} answered {marketing.status_code} to marketing and "
            f"{care.status_code} to the care coordinator"
        )
    seen = {
        Role.MARKETING: set(marketing.json()["fields"]),
        Role.CARE_COORDINATOR: set(care.json()["fields"]),
    }
    held = _held_fields(rt, patient)
    console.print(_field_table(patient, held, seen))
    expected = {role: set(held) & visible_fields(role) for role in seen}
    sensitive = {n for n in held if FIELDS[n].encrypted or FIELDS[n].is_phi}
    phi = {n for n in held if FIELDS[n].is_phi}
    out = {
        "roles_ok": all(seen[role] == expected[role] for role in seen),
        "phi_hidden_from_marketing": not (seen[Role.MARKETING] & sensitive),
        "care_sees_phi": bool(phi & seen[Role.CARE_COORDINATOR]),
    }
    console.print(
        f"marketing got {len(seen[Role.MARKETING])} of the {len(held)} fields, "
        f"{len(seen[Role.MARKETING] & sensitive)} of them identifying or PHI\n"
        f"the care coordinator got {len(seen[Role.CARE_COORDINATOR])}, "
        f"{len(phi & seen[Role.CARE_COORDINATOR])} of them PHI, with X-Telecrm-Reason (audited)"
        f"{_glass_note(held, seen)}\n"
        "each role's set is exactly its set in security/roles.py"
        if out["roles_ok"]
        else "[red]a role got a field set other than its own (security/roles.py)[/]",
        highlight=False,
    )
    return out


def _glass_note(held: list[str], seen: dict[Role, set[str]]) -> str:
    withheld = len(set(held) - seen[Role.CARE_COORDINATOR])
    return f"\n{withheld} payment or insurance fields need break-glass" if withheld else ""


def _alg_none(token: str) -> str:
    """The token's claims under an unsigned `alg: none` header: the classic forgery."""
    header, claims, _ = token.split(".")
    decoded = orjson.loads(base64.urlsafe_b64decode(header + "=="))
    forged = base64.urlsafe_b64encode(orjson.dumps({**decoded, "alg": "none"}))
    return forged.decode().rstrip("=") + "." + claims + "."


def _refusals(console: Console, http: TestClient, tokens: dict[Role, str], patient: str) -> bool:
    path = f"/v1/patients/{patient}"
    cases: list[tuple[str, int, Response]] = [
        (
            "care coordinator without a reason",
            422,
            http.get(path, headers=_bearer(tokens[Role.CARE_COORDINATOR])),
        ),
        ("no token", 401, http.get(path)),
        (
            "marketing asking for disclosures",
            403,
            http.get(f"{path}/disclosures", headers=_bearer(tokens[Role.MARKETING])),
        ),
        (
            "marketing with break-glass",
            403,
            http.get(
                path,
                headers={
                    **_bearer(tokens[Role.MARKETING]),
                    "X-Telecrm-Break-Glass": "demo: emergency",
                },
            ),
        ),
        (
            "forged alg:none token (compliance claims)",
            401,
            http.get(f"{path}/disclosures", headers=_bearer(_alg_none(tokens[Role.COMPLIANCE]))),
        ),
    ]
    table = Table("request", "status", "problem", title="refusals (401 and 403 logged, audited)")
    as_expected = True
    for label, want, response in cases:
        problem = response.json()
        code = str(problem.get("type", "")).rsplit("/", 1)[-1]
        as_expected = as_expected and response.status_code == want
        table.add_row(label, str(response.status_code), code)
    console.print(table)
    return as_expected


def _session_event(now: datetime) -> dict[str, Any]:
    """An anonymous visitor's page view: what the platform keeps posting during a flood."""
    return {
        "id": f"evt_demo_{uuid.uuid4().hex[:16]}",
        "type": "session.tracked",
        "version": 1,
        "occurred_at": now.isoformat(),
        "patient": {"anonymous_id": "anon_demo_rate_limit"},
        "data": {"page": "/pricing", "channel": "organic"},
    }


def _rate_limits(rt: Runtime, console: Console, token: str) -> dict[str, Any]:
    """A second app on the same database with a small `api` budget: one client floods it."""
    limited = bootstrap(
        rt.settings.model_copy(
            update={"rate_limit_api_rate": DEMO_API_RATE, "rate_limit_api_burst": DEMO_API_BURST}
        ),
        clock=rt.clock,
        engine=rt.engine,
        migrate=False,
    )
    secret = rt.settings.webhook_secrets[0].get_secret_value()
    with TestClient(create_app(limited, embedded_worker=False)) as http:
        # A token's first request counts against the caller's address: the limiter learns whose
        # token it is once the app has accepted it. After that the client's own budget applies.
        http.get("/v1/journeys", headers=_bearer(token))
        flood = [http.get("/v1/segments", headers=_bearer(token)) for _ in range(FLOOD)]
        now = rt.clock.now()
        body = orjson.dumps(_session_event(now))
        headers = signed_headers(secret, f"msg_{uuid.uuid4().hex}", int(now.timestamp()), body)
        intake = http.post(
            "/v1/events", content=body, headers={**headers, "content-type": "application/json"}
        )
    rt.worker().drain()  # fold the visitor's page view
    refused = [r for r in flood if r.status_code == 429]
    passed = sum(1 for r in flood if r.status_code == 200)
    retry = refused[0].headers.get("retry-after") if refused else None
    defaults = Settings.model_fields
    console.print(
        f"rate limits, `api` budget cut to {DEMO_API_RATE:g} request/s, bursts of "
        f"{DEMO_API_BURST} (default {defaults['rate_limit_api_rate'].default:g}/s, "
        f"{defaults['rate_limit_api_burst'].default}):\n"
        f"  {FLOOD} GET /v1/segments at once from one client: {passed} answered 200, "
        f"{len(refused)} answered 429\n"
        f"  (problem rate_limited, Retry-After: {retry})\n"
        f"  a signed POST /v1/events in the same second: {intake.status_code} (its own budget)",
        highlight=False,
    )
    return {
        "rate_limited": bool(refused) and retry is not None,
        "intake_during_flood": intake.status_code,
    }


def _is_demo_key(rt: Runtime) -> bool:
    """Whether the master key is the one `telecrm demo` generated next to the data."""
    path = rt.settings.home / "demo-master.key"
    key = rt.settings.master_key
    return key is not None and path.is_file() and path.read_text().strip() == key.get_secret_value()


def _doctor(rt: Runtime, console: Console) -> dict[str, int]:
    """`telecrm doctor`'s checks on the demo's own configuration (in process, no network)."""
    from telecrm.doctor.commands import diagnose
    from telecrm.doctor.findings import Context

    findings = diagnose(Context(rt.settings, {}, {}, rt.clock))
    counts = {s: sum(1 for f in findings if f.status == s) for s in ("ok", "warn", "fail", "skip")}
    console.print(
        "`telecrm doctor` on the demo's configuration: "
        + ", ".join(f"{n} {s}" for s, n in counts.items()),
        highlight=False,
    )
    for f in findings:
        if f.status in ("warn", "fail"):
            console.print(f"  {f.status} {f.check}: {f.message}", highlight=False, soft_wrap=True)
    if _is_demo_key(rt) and any(f.check == "master key" and f.status == "fail" for f in findings):
        console.print(
            "  (as it should: the demo made its own key; production sets TELECRM_MASTER_KEY)",
            highlight=False,
        )
    return counts
