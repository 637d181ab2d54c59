"""PDF reports: the HTML page printed by Debian's chromium, driven by Playwright.

Playwright's own browser builds are never downloaded (`playwright install` is not used): telecrm
launches the system chromium at `CHROMIUM`, which `scripts/setup-venv` installs with apt-get. The
page is self-contained (inline CSS and SVG), and chromium runs with networking features off, so
printing fetches nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright's own builds are never fetched
CHROMIUM_PACKAGE = "chromium"  # Debian's package that provides /usr/bin/chromium
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # runs as root in containers, where the setuid sandbox is unavailable
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
PRINT_TIMEOUT_MS = 60_000  # a 20 MB page (10,000 endpoints) takes chromium well under this


class PdfUnavailable(RuntimeError):
    """No chromium (or no Playwright) to print with; the message says what to install."""


class PdfFailed(RuntimeError):
    """Chromium started but could not print the page."""


def chromium_problem() -> str | None:
    """Why a PDF cannot be printed here, in words with the fix, or None when it can."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        hint = (
            f"apt-get install -y --no-install-recommends {CHROMIUM_PACKAGE}"
            if shutil.which("apt-get")
            else f"install Debian's '{CHROMIUM_PACKAGE}' package"
        )
        return f"PDF needs chromium at {CHROMIUM}, which is missing: run `{hint}` (as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "PDF needs the Python package playwright: run `scripts/setup-venv` again"
    return None


def html_to_pdf(html: str, out: Path, *, title: str = "telecrm report") -> Path:
    """Print `html` (a self-contained page) to `out` as an A4 PDF with page numbers."""
    problem = chromium_problem()
    if problem is not None:
        raise PdfUnavailable(problem)
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    footer = (
        '<div style="font-size:8px;width:100%;text-align:center;color:#555">'
        '<span class="pageNumber"></span> / <span class="totalPages"></span></div>'
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
            try:
                page = browser.new_page()
                # Nothing to fetch: refuse any request the page might make, to be sure.
                page.route("**/*", lambda route: route.abort())
                page.set_content(html, wait_until="load", timeout=PRINT_TIMEOUT_MS)
                page.emulate_media(media="print")
                out.parent.mkdir(parents=True, exist_ok=True)
                page.pdf(
                    path=str(out),
                    format="A4",
                    print_background=True,
                    display_header_footer=True,
                    header_template=f'<div style="font-size:8px;width:100%;text-align:center;color:#555">{_escape(title)}</div>',
                    footer_template=footer,
                    margin={"top": "15mm", "bottom": "15mm", "left": "10mm", "right": "10mm"},
                )
            finally:
                browser.close()
    except PlaywrightError as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise PdfFailed(f"chromium could not print the report: {first}") from None
    return out


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")[:120]
