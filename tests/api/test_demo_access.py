"""The demo's access-control part on a planted patient: each role gets its own fields, the
refusals hold, the export is written, and the terminal never shows a patient's value."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from telecrm.api.demo_access import demo_access
from telecrm.domain.clock import to_micros
from telecrm.settings import Settings
from telecrm.sync.tables import disclosures
from tests.support.read_api import PATIENT, canaries_in, open_read_api, read_api_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return read_api_settings(tmp_path)


def test_the_access_part_shows_each_roles_fields_and_never_a_value(
    runtime, clock, tmp_path: Path
) -> None:
    with open_read_api(runtime, clock) as api:
        api.seed_canary_patient()
        api.seed_canary_patient("pat_to_forget")  # the demo erases a patient it does not show
    with runtime.engine.begin() as conn:
        conn.execute(
            disclosures.insert().values(
                at_us=to_micros(clock.now()),
                destination="dynamics",
                patient_key=PATIENT,
                object="contact",
                record_key=PATIENT,
                fields=orjson.dumps(["first_name", "conditions"]).decode(),
                phi=True,
                purpose="crm sync",
            )
        )
    screen = io.StringIO()

    result = demo_access(
        runtime, Console(file=screen, width=200, no_color=True), out_dir=tmp_path / "compliance"
    )

    out = screen.getvalue()
    assert result["patient"] == PATIENT
    assert result["roles_ok"] and result["phi_hidden_from_marketing"] and result["care_sees_phi"]
    assert result["refusals_ok"] and result["disclosures"] == 1
    assert result["rate_limited"] and result["intake_during_flood"] == 202
    # After the export, the patient is erased: every payload of theirs is shredded.
    assert result["erasure"]["erased"] > 0 and result["erasure"]["still_open"] == 0
    assert "erasure: pat_to_forget asked to be forgotten" in out and "0 still open" in out
    assert "5 answered 200, 7 answered 429" in out
    assert "│ dynamics    │ 1           │ 1" in out
    assert not canaries_in(out) and "tcs_" not in out
    for path in result["files"]:
        assert str(path) in out and stat.S_IMODE(path.stat().st_mode) == 0o600
    exported = orjson.loads(result["files"][0].read_bytes())
    assert exported["patient"]["id"] == PATIENT  # the export itself holds the values
    assert canaries_in(result["files"][0].read_text())
