"""PDF reports: the HTML page printed by Debian's chromium through Playwright.

pypdf is not a dependency, so the PDF is checked by its bytes: the header, the document title
chromium copies from the page's <title>, pages, and the internal links (`/Dest /ev-1`) that keep
every summary count pointing at its evidence in print.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from telecrm.cli import app
from telecrm.reports import readiness_pdf
from telecrm.reports.live_html import render_live_html
from telecrm.reports.live_report import build_live_report
from telecrm.reports.readiness_pdf import PdfUnavailable, chromium_problem, html_to_pdf

FIXTURES = Path(__file__).parent / "fixtures"
needs_chromium = pytest.mark.skipif(chromium_problem() is not None, reason=str(chromium_problem()))

pytestmark = pytest.mark.usefixtures("wide_console")


def pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b(?!s)", pdf))


@needs_chromium
def test_analyze_writes_a_pdf_whose_counts_link_to_their_evidence(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["analyze", str(FIXTURES / "telehealth_openapi31.yaml"), "--out", str(tmp_path),
         "--format", "html,pdf"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pdf = (tmp_path / "readiness.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert b"/Title (API readiness: Example telehealth platform)" in pdf
    assert pages(pdf) > 1
    html = (tmp_path / "readiness.html").read_text()
    summary_links = set(re.findall(r'href="#(ev-\d+)"', html))
    assert summary_links and all(f"/Dest /{a}".encode() in pdf for a in summary_links)
    assert f"wrote {tmp_path / 'readiness.pdf'}" in result.output


def test_without_chromium_the_other_files_are_written_and_the_exit_is_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness_pdf, "CHROMIUM", tmp_path / "no-chromium")
    result = CliRunner().invoke(
        app,
        ["analyze", str(FIXTURES / "petclinic_swagger2.json"), "--out", str(tmp_path / "out"),
         "--format", "md,pdf"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "chromium" in result.output and "apt-get install" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["readiness.md"]
    with pytest.raises(PdfUnavailable, match="chromium"):
        html_to_pdf("<html></html>", tmp_path / "x.pdf")


@needs_chromium
def test_the_live_report_prints_to_pdf_on_both_databases(engine, clock, tmp_path: Path) -> None:
    from telecrm.domain.clock import to_micros

    report = build_live_report(engine, now_us=to_micros(clock.now()))
    out = html_to_pdf(render_live_html(report), tmp_path / "report.pdf", title="live")
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert b"/Title (telecrm live integration report)" in pdf
    assert b"/Dest /q1" in pdf  # the first count links to its query in print too
