"""`telecrm demo` end to end, small: the quick start's first command must keep working."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from telecrm import cli_support
from telecrm.bootstrap import bootstrap
from telecrm.cli import app
from telecrm.domain.fields import FIELDS
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profiles
from telecrm.settings import Settings


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_checks_itself(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_support.console, "width", 200)
    env = {"TELECRM_HOME": str(tmp_path), "TELECRM_MASTER_KEY": ""}
    result = CliRunner().invoke(app, ["demo", "--patients", "80", "--months", "3"], env=env)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "generated a demo master key" in out
    assert "lost in transit" in out and "were already known" in out
    assert "audit chain: intact" in out
    assert "scores stored on profiles" in out and "patients scored" in out  # analytics run
    assert "scores stored beside their profiles" in out and "at-risk crossings folded" in out
    assert "CRM sync (sandboxes" in out and out.count("│ ok") == 4  # all four CRMs agree
    # Messaging: today's events reach both providers, and the PHI canary stays out of them.
    assert "messages by status" in out and "engagement (share of sent)" in out
    assert "telecrm messages why" in out and "quiet_hours" in out
    assert "found in what it received" in out and "│ SendGrid    │ no" in out
    assert "BAA is refused" in out
    # Journeys: the eight built-ins replayed over simulated months, with their holdouts counted.
    assert "journeys over 3 simulated months" in out
    for journey in ("lead_nurturing", "refill_reminder_campaign", "subscription_renewal"):
        assert f"│ {journey}" in out
    assert "journey messages by status: queued" in out
    for stage in ("visitor", "lead", "churned"):
        assert stage in out
    assert "Unknown patient" in out and "Signature rejected" in out  # the bad-input table
    _assert_access_section(out, tmp_path)
    # It ends with the live report: HTML and PDF, and says where they are.
    report = tmp_path / "demo" / "report"
    assert "live report written in" in out and str((report / "report.html").resolve()) in out
    assert (report / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert "Audit chain: **intact**" in (report / "report.md").read_text()


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _texts(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    return []


def _sensitive_values(home: Path, patient: str) -> list[str]:
    """The patient's identifying and PHI values, decrypted from the demo's own database."""
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{(home / 'demo' / 'telecrm.db').as_posix()}",
        master_key=(home / "demo-master.key").read_text().strip(),
        log_level="WARNING",
    )
    rt = bootstrap(settings, migrate=False)
    cipher = rt.cipher()
    with rt.engine.connect() as conn:
        row = conn.execute(select(profiles).where(profiles.c.patient_key == patient)).one()
    values = decode(row, cipher).profile.values
    rt.engine.dispose()
    sealed = [v for n, v in values.items() if FIELDS[n].encrypted or FIELDS[n].is_phi]
    return [t for v in sealed for t in _texts(v) if len(t) >= 3]


def _assert_access_section(out: str, home: Path) -> None:
    """OAuth clients per role, one patient read as each, refusals, disclosures, export, limits."""
    assert "access control: OAuth clients, roles, the read API" in out
    assert out.count("Bearer, 600 s") == 3  # a token for each of the three clients
    assert "not printed here" in out and "tcs_" not in out  # no client secret on screen
    found = re.search(r"GET /v1/patients/(\S+): fields each role got", out)
    assert found, "the per-role field table is missing"
    patient = found.group(1)
    assert "0 of them identifying or PHI" in out
    assert "each role's set is exactly its set in security/roles.py" in out
    for request, status, problem in (
        ("care coordinator without a reason", 422, "reason_required"),
        ("no token", 401, "missing_token"),
        ("marketing asking for disclosures", 403, "forbidden"),
        ("forged alg:none token", 401, "disallowed_algorithm"),
    ):
        assert re.search(rf"{request}.*│ {status}\s+│ {problem}", out), request
    assert f"GET /v1/patients/{patient}/disclosures as compliance" in out
    assert re.search(r"│ dynamics\s+│\s+\d+\s+│\s+[1-9]", out)  # PHI went to the BAA CRM
    folder = home / "demo" / "compliance"
    for name in (f"{patient}.json", f"{patient}.html", f"{patient}-disclosures.html"):
        path = folder / name
        assert str(path) in out and stat.S_IMODE(path.stat().st_mode) == 0o600
    export = orjson.loads((folder / f"{patient}.json").read_bytes())
    assert export["patient"]["id"] == patient and export["disclosures"]
    flood = re.search(r"at once from one client: (\d+) answered 200, (\d+) answered 429", out)
    assert flood and int(flood[1]) >= 5 and int(flood[2]) >= 1  # wall clock: refills at 1/s
    assert re.search(r"rate_limited, Retry-After: \d", out)
    assert "a signed POST /v1/events in the same second: 202" in out
    assert "`telecrm doctor` on the demo's configuration:" in out
    erased = re.search(r"erasure: (\S+) asked to be forgotten", out)
    assert erased and erased[1] != patient and "(0 still open)" in out  # crypto-shredded
    # The PHI canary: no decrypted identifying or PHI value of the patient shown is printed.
    values = _sensitive_values(home, patient)
    assert values, "the patient shown holds no identifying or PHI value"
    leaked = {v for v in values if re.search(rf"\b{re.escape(v)}\b", out)}
    assert not leaked, f"{len(leaked)} PHI value(s) of {patient} in the demo's output"
