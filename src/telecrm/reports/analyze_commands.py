"""`telecrm analyze SOURCE`: the API readiness report for an OpenAPI document or a source tree."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from telecrm.cli_support import console, fail
from telecrm.reports.live_commands import write_pdf
from telecrm.reports.readiness import analyze
from telecrm.reports.readiness_html import render_html
from telecrm.reports.readiness_markdown import render_markdown
from telecrm.reports.source_report import analyze_tree
from telecrm.reports.source_tree import SourceError
from telecrm.reports.spec_loader import SpecError, load_spec

FORMATS = ("md", "json", "html", "pdf")


def _formats(raw: str) -> list[str]:
    chosen = [f.strip().lower() for f in raw.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise fail(
            "--format takes a comma-separated list of: " + ", ".join(FORMATS),
            hint="e.g. --format md,html,pdf",
            code=2,
        )
    return chosen


def analyze_command(
    spec: Path = typer.Argument(
        ...,
        metavar="SOURCE",
        help="An OpenAPI 3.x or Swagger 2.0 document (JSON or YAML), or a directory: a web "
        "application's source tree (FastAPI, Flask, Django, Express, NestJS), read, never run",
    ),
    out: Path = typer.Option(Path("readiness"), "--out", help="Directory for the report files"),
    fmt: str = typer.Option(
        "md,json,html", "--format", help="Comma-separated: md, json, html, pdf"
    ),
    validate: bool = typer.Option(
        True, "--validate/--no-validate", help="Check the shape with openapi-spec-validator first"
    ),
) -> None:
    """Analyze a platform's API spec or source tree: endpoints, auth, webhooks, data points,
    CRM relevance; for a source tree also message templates and event triggers."""
    formats = _formats(fmt)
    try:
        if spec.is_dir():
            with console.status("reading the source tree", spinner="dots"):
                report = analyze_tree(spec)
        else:
            # openapi-spec-validator takes ~90 s on a 10,000-path document (docs/reports.md)
            with console.status("checking the document's shape", spinner="dots"):
                report = analyze(load_spec(spec, validate=validate))
    except SourceError as exc:
        raise fail(
            escape(str(exc)),
            hint="give a directory holding a FastAPI, Flask, Django, Express or NestJS application",
            code=2,
        ) from None
    except SpecError as exc:
        raise fail(
            escape(str(exc)), hint="give an OpenAPI 3.x or Swagger 2.0 file", code=2
        ) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        if "md" in formats:
            (out / "readiness.md").write_text(render_markdown(report), encoding="utf-8")
            written.append(out / "readiness.md")
        if "json" in formats:
            (out / "readiness.json").write_bytes(
                orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
            )
            written.append(out / "readiness.json")
        html = render_html(report) if {"html", "pdf"} & set(formats) else ""
        if "html" in formats:
            (out / "readiness.html").write_text(html, encoding="utf-8")
            written.append(out / "readiness.html")
    except OSError as exc:
        raise fail(f"cannot write the report to {escape(str(out))}: {exc.strerror}") from None
    s = report["summary"]
    table = Table(title=f"{escape(report['source'])} ({report['dialect']})", show_header=False)
    table.add_row("endpoints", f"{s['endpoints']} ({s['duplicates_merged']} duplicates merged)")
    table.add_row("webhooks", str(s["webhooks"]))
    table.add_row("auth", ", ".join(f"{k} {v}" for k, v in s["by_auth"].items()) or "—")
    table.add_row("relevance", ", ".join(f"{k} {v}" for k, v in s["by_relevance"].items()))
    table.add_row(
        "data points",
        f"{s['data_points_found']} of {s['data_points_total']}, PHI fields {s['phi_fields']}",
    )
    table.add_row("unmapped fields", str(s["unmapped_fields"]))
    high = sum(1 for f in report["findings"] if f["severity"] == "high")
    table.add_row("findings", f"{s['findings']} ({high} high)")
    if report.get("messages") is not None:
        by_channel = report["messages"]["by_channel"]
        channels = ", ".join(f"{k} {v}" for k, v in by_channel.items())
        table.add_row("templates", f"{s['templates']} ({channels})" if channels else "0")
        table.add_row("triggers", str(s["triggers"]))
        table.add_row("skipped files", str(s["skipped_files"]))
    life = report["lifecycle"]["summary"]
    table.add_row(
        "lifecycle",
        f"{life['stages_evidenced']} of 10 stages (+{life['stages_derived']} derived), "
        f"{life['funnels_measurable']} of 4 funnels, {life['triggers_found']} of 8 triggers",
    )
    table.add_row(
        "CRM complexity",
        ", ".join(f"{p['title']} {p['complexity']['total']}" for p in report["crm_plans"]),
    )
    console.print(table)
    for path in written:
        console.print(f"wrote {escape(str(path))}", highlight=False)
    if "pdf" in formats:  # last: without chromium the other files are still written (exit 2)
        write_pdf(
            html,
            out / "readiness.pdf",
            title=f"API readiness: {report['title'] or report['source']}",
        )
