"""`telecrm report`: the integration report from a running telecrm's live data, and the PDF step
that `telecrm analyze` shares with it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from telecrm.cli_support import console, fail, friendly_errors, now_us, runtime
from telecrm.reports.live_report import build_live_report


def write_pdf(html: str, out: Path, *, title: str) -> bool:
    """Print the page to `out`; without chromium one red line naming the package, exit 2."""
    from telecrm.reports.readiness_pdf import PdfFailed, PdfUnavailable, html_to_pdf

    try:
        with console.status("printing the PDF with chromium", spinner="dots"):
            html_to_pdf(html, out, title=title)
    except PdfUnavailable as exc:
        raise fail(escape(str(exc)), hint="the other formats were written", code=2) from None
    except PdfFailed as exc:
        raise fail(escape(str(exc)), hint="the other formats were written") from None
    console.print(f"wrote {escape(str(out))}", highlight=False)
    return True


FORMATS = ("md", "json", "html", "pdf")


def parse_formats(raw: str) -> list[str]:
    chosen = [f.strip().lower() for f in raw.split(",") if f.strip()]
    if not chosen or any(f not in FORMATS for f in chosen):
        raise fail(
            "--format takes a comma-separated list of: " + ", ".join(FORMATS),
            hint="e.g. --format html,pdf",
            code=2,
        )
    return chosen


def analysis_of(source: Path) -> dict[str, Any]:
    """The readiness analysis of an API document or a source tree, as `telecrm analyze` makes it."""
    from telecrm.reports.readiness import analyze
    from telecrm.reports.spec_loader import SpecError, load_spec

    try:
        if source.is_dir():
            from telecrm.reports.source_report import analyze_tree
            from telecrm.reports.source_tree import SourceError

            try:
                return analyze_tree(source)
            except SourceError as exc:
                raise fail(
                    escape(str(exc)), hint="give a web application's source tree", code=2
                ) from None
        return analyze(load_spec(source, validate=False))
    except SpecError as exc:
        raise fail(
            escape(str(exc)), hint="give an OpenAPI 3.x or Swagger 2.0 file", code=2
        ) from None


def write_live_report(
    report: dict[str, Any], out: Path, formats: list[str]
) -> tuple[list[Path], str]:
    """Writes report.md / .json / .html as asked; returns the files and the page (for a PDF)."""
    from telecrm.reports.live_html import render_live_html
    from telecrm.reports.live_markdown import render_live_markdown

    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "md" in formats:
        (out / "report.md").write_text(render_live_markdown(report), encoding="utf-8")
        written.append(out / "report.md")
    if "json" in formats:
        (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        written.append(out / "report.json")
    html = render_live_html(report) if {"html", "pdf"} & set(formats) else ""
    if "html" in formats:
        (out / "report.html").write_text(html, encoding="utf-8")
        written.append(out / "report.html")
    return written, html


def print_live_summary(report: dict[str, Any]) -> None:
    """The headline numbers (small cells as <5), for the terminal."""
    table = Table(
        title=f"live report ({report['database']}, {report['generated_at'][:19]})",
        show_header=False,
    )
    table.add_row("patients", report["patients"]["shown"])
    top = sorted(report["stages"], key=lambda s: -(s["patients"]["n"] or 0))[:4]
    table.add_row(
        "largest stages", ", ".join(f"{s['stage']} {s['patients']['shown']}" for s in top)
    )
    table.add_row(
        "funnels", ", ".join(f"{f['funnel']} {f['rate']}" for f in report["funnels"]["all"])
    )
    for d in report["sync"]:
        table.add_row(
            f"sync {d['destination']}",
            f"{d['records_total']['shown']} records, {d['dead_letters_open']['shown']} open dead letters, "
            f"last success {(d['last_success'] or 'never')[:19]}",
        )
    for m in report["messages"]:
        table.add_row(
            f"{m['channel']}", f"sent {m['sent']['shown']}, clicked {m['clicked']['shown']}"
        )
    a = report["compliance"]["audit"]
    table.add_row(
        "audit chain", f"{'intact' if a['ok'] else 'BROKEN'}, {a['rows_checked']['shown']} entries"
    )
    ch = report.get("churn")
    if ch is not None:
        table.add_row("churn model", f"AUC {ch['auc']:.3f}" if ch["measured"] else "not measured")
    if report.get("comparison"):
        verdicts = Counter(e["verdict"] for e in report["comparison"]["events"])
        table.add_row("analyzer vs live", ", ".join(f"{k} {v}" for k, v in verdicts.most_common()))
    console.print(table)


@friendly_errors
def report_command(
    out: Path = typer.Option(Path("report"), "--out", help="Directory for the report files"),
    fmt: str = typer.Option(
        "md,json,html", "--format", help="Comma-separated: md, json, html, pdf"
    ),
    spec: Path = typer.Option(
        None,
        "--spec",
        help="An API document or source tree: set the analyzer's findings beside live data",
    ),
    churn: bool = typer.Option(
        True, "--churn/--no-churn", help="Evaluate the churn model (reads order payloads; audited)"
    ),
) -> None:
    """The integration report from this telecrm's live data: stages, funnels by channel and cohort,
    sync health, message engagement, compliance, journeys, churn model. Aggregates only."""
    formats = parse_formats(fmt)
    analysis = analysis_of(spec) if spec is not None else None
    rt = runtime()
    with console.status("reading the live data", spinner="dots"):
        report = build_live_report(
            rt.engine,
            now_us=now_us(rt),
            mappings=rt.mappings(),
            cipher=rt.cipher() if churn else None,
            spec_report=analysis,
        )
    try:
        written, html = write_live_report(report, out, formats)
    except OSError as exc:
        raise fail(f"cannot write the report to {escape(str(out))}: {exc.strerror}") from None
    print_live_summary(report)
    for path in written:
        console.print(f"wrote {escape(str(path))}", highlight=False)
    if "pdf" in formats:
        write_pdf(html, out / "report.pdf", title="telecrm live integration report")
