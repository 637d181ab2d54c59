"""Walking a source tree: what is read, what is skipped and why, and the one path form."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telecrm.reports.source_report import analyze_tree
from telecrm.reports.source_tree import (
    MAX_FILE_BYTES,
    SourceError,
    normalise_route_path,
    walk_tree,
)

EXPRESS = "const express = require('express');\nconst app = express();\napp.get('/a', (req, res) => res.json({}));\n"


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("/patients/:id", "/patients/{id}"),
        ("patients/<int:id>/", "/patients/{id}"),
        ("/patients/<id>", "/patients/{id}"),
        ("/patients/{patient_id}/", "/patients/{patient_id}"),
        (r"^patients/(?P<pk>[0-9]+)/$", "/patients/{pk}"),
        ("/files/:name(\\d+)?", "/files/{name}"),
        ("//api//v1/", "/api/v1"),
        ("", "/"),
    ],
)
def test_every_framework_path_form_becomes_one(raw: str, normalised: str) -> None:
    assert normalise_route_path(raw) == normalised


@given(st.text(max_size=200))
def test_the_path_normaliser_never_crashes_and_always_gives_an_absolute_path(raw: str) -> None:
    path = normalise_route_path(raw)
    assert path.startswith("/")
    assert "//" not in path


def test_dependency_and_build_folders_are_not_walked(tmp_path: Path) -> None:
    for folder in ("node_modules/express", ".git", "venv/lib", "dist", "build", "src"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "index.js").write_text(EXPRESS)
    walk = walk_tree(tmp_path)
    assert [f.rel for f in walk.files] == ["src/index.js"]
    assert walk.skipped == []


def test_binary_large_and_non_utf8_files_are_skipped_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text(EXPRESS)
    (tmp_path / "bundle.js").write_bytes(b"var a;\x00\x01\x02")
    (tmp_path / "huge.js").write_bytes(b"//" + b"x" * MAX_FILE_BYTES)
    (tmp_path / "latin1.py").write_bytes(b"name = '\xe9'\n")
    walk = walk_tree(tmp_path)
    assert [f.rel for f in walk.files] == ["app.js"]
    assert {s.rel: s.reason for s in walk.skipped} == {
        "bundle.js": "binary file",
        "huge.js": "larger than 1024 KiB (1024 KiB)",
        "latin1.py": "not UTF-8 text (byte 8)",
    }


def test_skipped_files_are_findings_of_a_partial_report(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text(EXPRESS)
    (tmp_path / "latin1.js").write_bytes(b"// caf\xe9\n")
    report = analyze_tree(tmp_path)
    assert report["skipped"] == [{"path": "latin1.js", "reason": "not UTF-8 text (byte 6)"}]
    assert [(f["kind"], f["evidence"]) for f in report["findings"]] == [
        ("skipped_file", ["latin1.js"])
    ]
    assert report["summary"]["skipped_files"] == 1


def test_a_symlink_loop_is_walked_once_and_reported(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.js").write_text(EXPRESS)
    os.symlink(tmp_path, tmp_path / "src" / "again")
    walk = walk_tree(tmp_path)
    assert [f.rel for f in walk.files] == ["src/app.js"]
    assert [(s.rel, s.reason) for s in walk.skipped] == [
        ("src/again", "symlink loop: directory already walked")
    ]


def test_the_walk_stops_at_the_file_limit_and_says_the_report_is_partial(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"r{i}.js").write_text(EXPRESS)
    report = analyze_tree(tmp_path, max_files=3)
    assert report["truncated"] is True
    [limit] = [f for f in report["findings"] if f["kind"] == "file_limit"]
    assert limit["message"].startswith("stopped after 3 source files; the report is partial")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (None, "missing: no such file or directory"),
        ("empty", "no Python, JavaScript or TypeScript files in this directory"),
        ("plain", "no FastAPI, Flask, Django, Express or NestJS code found in 1 files"),
    ],
)
def test_a_tree_that_cannot_be_analysed_says_why(
    tmp_path: Path, setup: str | None, message: str
) -> None:
    root = tmp_path / ("missing" if setup is None else setup)
    if setup is not None:
        root.mkdir()
    if setup == "plain":
        (root / "script.py").write_text("print('hello')\n")
    with pytest.raises(SourceError, match=message):
        analyze_tree(root)


_NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=20,
).filter(lambda n: n not in {".", ".."})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.lists(
        st.tuples(
            _NAMES,
            st.sampled_from([".py", ".js", ".ts", ".tsx", ".html", ""]),
            st.binary(max_size=300),
        ),
        max_size=6,
    )
)
def test_the_walker_and_the_readers_never_crash_on_arbitrary_names_and_bytes(
    files: list[tuple[str, str, bytes]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "templates").mkdir()
        for name, suffix, content in files:
            try:
                (root / f"{name}{suffix}").write_bytes(content)
            except (OSError, ValueError):
                continue  # a name this file system refuses
        walk = walk_tree(root)
        assert len(walk.files) + len(walk.skipped) <= len(files)
        with contextlib.suppress(SourceError):
            analyze_tree(root)


@settings(max_examples=60, deadline=None)
@given(source=st.text(max_size=400), suffix=st.sampled_from([".py", ".js", ".ts"]))
def test_the_readers_never_crash_on_arbitrary_source_text(source: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / f"app{suffix}").write_text(source, encoding="utf-8", errors="replace")
        (root / f"server{suffix}").write_text(
            "from fastapi import FastAPI\n"
            if suffix == ".py"
            else "import express from 'express';\n"
        )
        report = analyze_tree(root)
        assert report["summary"]["files_read"] + report["summary"]["skipped_files"] == 2
