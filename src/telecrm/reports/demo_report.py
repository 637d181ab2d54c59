"""The demo's last step: the live integration report (HTML, and PDF where chromium is installed),
with the analyzer's findings for the simulated platform's own API set beside what flowed."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape

from telecrm.domain.clock import to_micros


def platform_analysis(out_dir: Path) -> dict[str, Any]:
    """The readiness analysis of the simulator's platform API (its OpenAPI document, written beside)."""
    from telecrm.reports.readiness import analyze
    from telecrm.reports.spec_loader import load_spec
    from telecrm.simulate.platform_api import create_platform_app
    from telecrm.simulate.platform_data import PlatformData

    app = create_platform_app(
        PlatformData(), jwt_secret=secrets.token_hex(32), now=lambda: datetime.now(UTC)
    )
    spec = out_dir / "platform-openapi.json"
    spec.write_bytes(orjson.dumps(app.openapi()))
    return analyze(load_spec(spec, validate=False))


def demo_report(rt: Any, out: Console, out_dir: Path) -> dict[str, Any]:
    """Writes report.md / .json / .html (and .pdf when it can) into `out_dir`; says where."""
    from telecrm.reports.live_commands import print_live_summary, write_live_report
    from telecrm.reports.live_report import build_live_report
    from telecrm.reports.readiness_pdf import PdfFailed, PdfUnavailable, html_to_pdf

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    with out.status("reading the live data for the report"):
        report = build_live_report(
            rt.engine,
            now_us=to_micros(rt.clock.now()),
            mappings=rt.mappings(),
            cipher=rt.cipher(),
            spec_report=platform_analysis(out_dir),
            actor="demo",
        )
        written, html = write_live_report(report, out_dir, ["md", "json", "html"])
    print_live_summary(report)
    pdf = None
    try:
        with out.status("printing the PDF with chromium"):
            pdf = html_to_pdf(html, out_dir / "report.pdf", title="telecrm live integration report")
        written.append(pdf)
    except (PdfUnavailable, PdfFailed) as exc:
        out.print(f"[yellow]no PDF:[/] {escape(str(exc))}", highlight=False)
    out.print(
        f"live report written in {time.perf_counter() - started:.1f} s: "
        + ", ".join(escape(str(p)) for p in written),
        highlight=False,
    )
    out.print(f"open [bold]{escape(str((out_dir / 'report.html').resolve()))}[/] in a browser")
    return {"files": written, "pdf": pdf, "audit_ok": report["compliance"]["audit"]["ok"]}
