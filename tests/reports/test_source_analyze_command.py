"""`telecrm analyze DIR` as an integration engineer runs it on an application's source tree."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from telecrm.cli import app

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.usefixtures("wide_console")


def analyze(*args: str):
    return CliRunner().invoke(app, ["analyze", *args])


def test_a_source_tree_prints_the_summary_with_templates_triggers_and_skipped_files(
    tmp_path: Path,
) -> None:
    result = analyze(str(FIXTURES / "express_app"), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "express_app (source-tree)" in result.output
    assert "11 (1 duplicates merged)" in result.output
    assert "3 (email 2, sms 1)" in result.output
    assert "skipped files" in result.output
    report = orjson.loads((tmp_path / "readiness.json").read_bytes())
    assert report["messages"]["by_channel"] == {"email": 2, "sms": 1}
    assert (tmp_path / "readiness.md").exists() and (tmp_path / "readiness.html").exists()


def test_help_explains_a_spec_file_and_a_source_directory() -> None:
    result = analyze("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "OpenAPI 3.x or Swagger 2.0 document" in text
    assert "source tree" in text


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "error: missing: no such file"),
        ("empty", "error: empty: no Python, JavaScript or TypeScript files in this directory"),
        (
            "plain",
            "error: plain: no FastAPI, Flask, Django, Express or NestJS code found in 1 files",
        ),
    ],
)
def test_bad_trees_are_one_red_line_and_exit_2(tmp_path: Path, setup: str, message: str) -> None:
    root = tmp_path / setup
    if setup != "missing":
        root.mkdir()
    if setup == "plain":
        (root / "notes.js").write_text("console.log('hello');\n")
    result = analyze(str(root), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.output.startswith(message)
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
