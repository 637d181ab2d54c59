"""The right of access: a patient's whole record (profile, facts and scores, records, the event
timeline, stage history, messages, consent, disclosures) decrypted into a stable JSON file and a
readable page, written only inside the folder asked for, never over a file, always audited."""

from __future__ import annotations

import copy
import io
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from telecrm.bootstrap import Runtime
from telecrm.cli import app
from telecrm.domain.clock import FrozenClock
from telecrm.observability.logs import configure_logging
from telecrm.profiles.views import PatientNotFound
from telecrm.security import compliance_commands
from telecrm.security.audit import audit_rows
from telecrm.security.disclosures import disclosures_for
from telecrm.security.export import export_record, render_export_html
from telecrm.security.export_schema import ExportRecord
from telecrm.security.safe_names import (
    ExportRefused,
    check_writable,
    export_paths,
    safe_file_stem,
)
from tests.security.compliance_seed import (
    CANARIES,
    CANARY_INSURER,
    CANARY_OUTCOME,
    CANARY_PROVIDER,
    PID,
    seeded_patient,
)
from tests.support.builders import CANARY_CONDITION, CANARY_EMAIL, CANARY_MEDICATION

TOP_LEVEL = [
    "schema_version", "kind", "generated_at", "patient", "profile", "facts", "scores", "records",
    "events", "stage_history", "messages", "consent", "survey_answers", "journeys", "disclosures",
]  # fmt: skip
AT = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def test_the_export_holds_everything_kept_about_the_patient_and_round_trips_as_json(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    with seeded_patient(runtime, clock, tmp_path) as s, s.runtime.engine.connect() as conn:
        record = export_record(conn, s.runtime.cipher(), PID, generated_at=AT)
        accounted = disclosures_for(conn, PID)
    assert list(record) == TOP_LEVEL
    assert (record["schema_version"], record["kind"]) == (1, "telecrm.patient_export")
    assert record["generated_at"] == "2026-03-04T12:00:00Z"
    assert record["patient"]["id"] == PID and record["patient"]["stage"]
    values = {v["field"]: v["value"] for v in record["profile"]}  # decrypted
    assert values["email"] == CANARY_EMAIL
    assert values["conditions"] == [CANARY_CONDITION]
    assert values["medications"] == [CANARY_MEDICATION]
    assert values["insurance_provider"] == CANARY_INSURER
    assert values["provider_id"] == CANARY_PROVIDER
    conditions = next(v for v in record["profile"] if v["field"] == "conditions")
    assert (conditions["data_point"], conditions["phi"]) == ("Medical history and conditions", True)
    assert record["facts"]["registered_at"] and "sessions" in record["facts"]
    assert set(record["scores"]) == {
        "lead_score", "engagement_score", "predicted_ltv", "churn_risk", "adherence_pdc", "scored_at",
    }  # fmt: skip
    kinds = {r["kind"] for r in record["records"]}
    assert {"consultation", "prescription", "treatment_plan"} <= kinds
    types = [e["type"] for e in record["events"]]
    assert types[0] == "patient.registered" and "refill.due" in types
    assert any(t.startswith("sms.") for t in types)  # engagement came back from Twilio
    assert record["events"][0]["data"]["conditions"] == [CANARY_CONDITION]  # decrypted
    plan = next(e for e in record["events"] if e["type"] == "treatment_plan.updated")
    assert plan["data"]["outcome"] == CANARY_OUTCOME
    assert [e["occurred_at"] for e in record["events"]] == sorted(
        e["occurred_at"] for e in record["events"]
    )
    assert record["stage_history"][0]["to_stage"] == "lead"
    refill = next(
        m for m in record["messages"] if (m["template"], m["channel"]) == ("refill_reminder", "sms")
    )
    assert refill["status"] in ("sent", "delivered") and refill["sent_at"]
    assert {(c["channel"], c["granted"]) for c in record["consent"]} >= {("sms", True)}
    assert [d["id"] for d in record["disclosures"]] == [d.id for d in accounted]
    assert {"dynamics", "twilio"} <= {d["destination"] for d in record["disclosures"]}
    loaded = orjson.loads(orjson.dumps(record))
    assert loaded == record
    assert ExportRecord.model_validate(loaded).model_dump(mode="json") == record


def test_the_schema_is_versioned_and_refuses_what_it_does_not_define() -> None:
    schema = ExportRecord.model_json_schema()
    assert list(schema["properties"]) == TOP_LEVEL
    assert schema["properties"]["schema_version"]["const"] == 1
    assert schema["additionalProperties"] is False


def test_the_page_escapes_every_value(runtime: Runtime, clock: FrozenClock, tmp_path: Path) -> None:
    with seeded_patient(runtime, clock, tmp_path) as s, s.runtime.engine.connect() as conn:
        record = export_record(conn, s.runtime.cipher(), PID, generated_at=AT)
    hostile = copy.deepcopy(record)
    hostile["profile"][0]["value"] = "<script>alert('x')</script>"
    hostile["events"][0]["data"]["<img src=x onerror=alert(1)>"] = "&"
    page = render_export_html(hostile, organisation="Acme <Health>")
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Acme &lt;Health&gt;" in page
    assert page.startswith("<!DOCTYPE html>") and '<html lang="en">' in page
    assert CANARY_CONDITION in page  # the patient's own copy holds their values
    for section in ("Your details", "Timeline of events", "Stage history", "Messages",
                    "Consent history", "Disclosures"):  # fmt: skip
        assert f">{section}</h2>" in page


def test_the_command_writes_private_files_in_the_folder_audited_and_never_overwrites(
    runtime: Runtime,
    clock: FrozenClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wide_console: None,
) -> None:
    out = tmp_path / "exports"
    logs = io.StringIO()
    configure_logging("DEBUG", stream=logs)
    try:
        with seeded_patient(runtime, clock, tmp_path) as s:
            monkeypatch.setattr(compliance_commands, "runtime", lambda: s.runtime)
            runner = CliRunner()
            args = ["patients", "export", PID, "--reason", "patient request #7", "--out", str(out)]
            first = runner.invoke(app, args)
            again = runner.invoke(app, args)
            forced = runner.invoke(app, [*args, "--force", "--actor", "privacy-officer"])
            with s.runtime.engine.connect() as conn:
                exports = [e for e in audit_rows(conn, record_id=PID) if e["action"] == "export"]
                expected = export_record(conn, s.runtime.cipher(), PID)
    finally:
        configure_logging("WARNING")
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in out.iterdir()) == [f"{PID}.html", f"{PID}.json"]
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = orjson.loads((out / f"{PID}.json").read_bytes())
    assert written | {"generated_at": None} == expected
    assert CANARY_CONDITION in (out / f"{PID}.html").read_text()
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output
    assert forced.exit_code == 0, forced.output
    assert [(e["actor"], e["purpose"]) for e in exports] == [
        ("privacy-officer", "patient request #7"),
        ("cli", "patient request #7"),
    ]  # fmt: skip  (newest first; the refused run read nothing)
    assert {"conditions", "medications", "email"} <= set(exports[0]["fields"])
    shown = first.output + again.output + forced.output + logs.getvalue()
    for canary in CANARIES:
        assert canary.lower() not in shown.lower(), canary


@pytest.mark.parametrize("hostile", ["../../etc/x", "/etc/passwd", "a/../../b", "..", "CON"])
def test_a_patient_id_never_picks_where_the_files_go(
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hostile: str,
    wide_console: None,
) -> None:
    out = tmp_path / "a" / "b" / "exports"
    json_path, html_path = export_paths(out, hostile, (".json", ".html"))
    assert json_path.parent == html_path.parent == out.resolve()
    assert "/" not in json_path.name and not json_path.name.startswith(".")
    monkeypatch.setattr(compliance_commands, "runtime", lambda: runtime)
    result = CliRunner().invoke(
        app, ["patients", "export", hostile, "--reason", "r", "--out", str(out)]
    )
    assert result.exit_code == 1 and "no patient matches" in result.output
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []


def test_a_link_or_an_existing_file_in_the_way_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("keep me")
    (json_path,) = export_paths(tmp_path / "out", "pat_9", (".json",))
    os.symlink(target, json_path)
    with pytest.raises(ExportRefused, match="symbolic link"):
        check_writable([json_path], force=True)
    json_path.unlink()
    json_path.write_text("{}")
    with pytest.raises(ExportRefused, match="--force"):
        check_writable([json_path], force=False)
    check_writable([json_path], force=True)
    assert target.read_text() == "keep me"
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportRefused, match="not a folder"):
        export_paths(tmp_path / "file", "pat_9", (".json",))


def test_an_unknown_patient_is_not_found_without_echoing_anything(runtime: Runtime) -> None:
    with runtime.engine.connect() as conn, pytest.raises(PatientNotFound) as missing:
        export_record(conn, runtime.cipher(), CANARY_EMAIL)
    assert CANARY_EMAIL not in str(missing.value)


RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
IDS = st.one_of(
    st.text(max_size=200),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}", fullmatch=True),  # the platform's ids
    st.lists(st.sampled_from(["..", "/", "\\", ".", "~", "CON", "a", "\x00", ":"])).map("".join),
)


@given(IDS, IDS)
def test_safe_file_names_stay_in_the_folder_and_never_collide(a: str, b: str) -> None:
    stem = safe_file_stem(a)
    assert stem == safe_file_stem(a)
    assert 1 <= len(stem) <= 64 and stem[0].isascii() and stem[0].isalnum()
    assert all(c.isascii() and (c.isalnum() or c in "_.-~") for c in stem)
    assert not stem.endswith(".") and stem.split(".", 1)[0].upper() not in RESERVED
    folder = Path("/srv/exports")
    assert (folder / f"{stem}.json").resolve().parent == folder
    if a != b:
        assert stem != safe_file_stem(b)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}", fullmatch=True))
def test_an_ordinary_patient_id_is_its_own_file_name(patient_id: str) -> None:
    if patient_id.upper() not in RESERVED:
        assert safe_file_stem(patient_id) == patient_id
