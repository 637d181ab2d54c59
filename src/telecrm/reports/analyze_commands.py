"""`telecrm analyze SPEC`: the API readiness report for an OpenAPI 3.x / Swagger 2.0 document."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from telecrm.cli_support import console, fail
from telecrm.reports.readiness import analyze
from telecrm.reports.readiness_html import render_html
from telecrm.reports.readiness_markdown import render_markdown
from telecrm.reports.spec_loader import SpecError, load_spec

FORMATS = ("md", "json", "html")


def _formats(raw: str) -> list[str]:
    chosen = [f.strip().lower() for f in raw.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise fail(
            "--format takes a comma-separated list of: " + ", ".join(FORMATS),
            hint="e.g. --format md,html (pdf comes with `telecrm report`)",
            code=2,
        )
    return chosen


def analyze_command(
    spec: Path = typer.Argument(..., help="An OpenAPI 3.x or Swagger 2.0 document (JSON or YAML)"),
    out: Path = typer.Option(Path("readiness"), "--out", help="Directory for the report files"),
    fmt: str = typer.Option("md,json,html", "--format", help="Comma-separated: md, json, html"),
    validate: bool = typer.Option(
        True, "--validate/--no-validate", help="Check the shape with openapi-spec-validator first"
    ),
) -> None:
    """Analyze a platform's API spec: endpoints, auth, webhooks, data points, CRM relevance."""
    formats = _formats(fmt)
    try:
        # openapi-spec-validator takes ~90 s on a 10,000-path document (docs/reports.md)
        with console.status("checking the document's shape", spinner="dots"):
            report = analyze(load_spec(spec, validate=validate))
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
        if "html" in formats:
            (out / "readiness.html").write_text(render_html(report), encoding="utf-8")
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
    console.print(table)
    for path in written:
        console.print(f"wrote {escape(str(path))}", highlight=False)
