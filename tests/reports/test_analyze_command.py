"""`telecrm analyze SPEC` as an integration engineer runs it, on the fixtures and the simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from telecrm.cli import app
from telecrm.simulate.platform_api import create_platform_app
from telecrm.simulate.platform_data import PlatformData

FIXTURES = Path(__file__).parent / "fixtures"


pytestmark = pytest.mark.usefixtures("wide_console")


def analyze(*args: str):
    return CliRunner().invoke(app, ["analyze", *args])


def test_analyze_writes_markdown_and_json_and_prints_a_summary(tmp_path: Path) -> None:
    result = analyze(str(FIXTURES / "telehealth_openapi31.yaml"), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "8 (1 duplicates merged)" in result.output
    assert "3 (1 high)" in result.output
    report = orjson.loads((tmp_path / "readiness.json").read_bytes())
    assert report["summary"]["endpoints"] == 8
    markdown = (tmp_path / "readiness.md").read_text()
    assert (
        "| relevance high | 6 | [E1](#e1), [E2](#e2), [E3](#e3), [E5](#e5), [E6](#e6), [E8](#e8) |"
        in markdown
    )
    assert "**high** unauthenticated_phi: POST /public/intake" in markdown


def test_format_json_only_writes_only_json(tmp_path: Path) -> None:
    result = analyze(
        str(FIXTURES / "petclinic_swagger2.json"), "--out", str(tmp_path), "--format", "json"
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["readiness.json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "error: missing.yaml: no such file"),
        (b"\x00\xff\x00", "error: spec.yaml: not UTF-8 text"),
        (b"{not json", "error: spec.yaml: not valid JSON (line 1"),
        (b"hello: world\n", "error: spec.yaml: not an OpenAPI document"),
    ],
)
def test_bad_input_is_one_red_line_and_exit_2(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    target = tmp_path / ("missing.yaml" if content is None else "spec.yaml")
    if content is not None:
        target.write_bytes(content)
    result = analyze(str(target), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.output.startswith(message)
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    result = analyze(
        str(FIXTURES / "petclinic_swagger2.json"), "--out", str(tmp_path), "--format", "docx"
    )
    assert result.exit_code == 2
    assert "--format takes a comma-separated list of: md, json" in result.output


def test_the_simulators_own_platform_api_is_analyzed(tmp_path: Path) -> None:
    app_ = create_platform_app(PlatformData(), jwt_secret="s" * 32, now=lambda: datetime.now(UTC))
    spec = tmp_path / "platform.json"
    spec.write_text(json.dumps(app_.openapi()))
    result = analyze(str(spec), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    report = orjson.loads((tmp_path / "readiness.json").read_bytes())
    rows = {(e["method"], e["path"]): e for e in report["endpoints"]}
    assert len(rows) == 9
    assert {a for e in rows.values() for a in e["auth"]} == {"bearer"}
    feeds = sorted(p for p, e in rows.items() if e["change_feed"])
    assert feeds == [
        ("GET", "/consultations"),
        ("GET", "/consultations/pending"),
        ("GET", "/me/consultations"),
        ("GET", "/me/orders"),
        ("GET", "/patients"),
        ("GET", "/patients/{patient_id}/consultations"),
    ]
    patients = rows[("GET", "/patients")]
    assert {f["catalog_field"] for f in patients["fields"]} >= {
        "first_name",
        "email",
        "phone",
        "state",
    }
    assert report["findings"] == []
