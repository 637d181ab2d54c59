"""`readiness.html`: the page a reviewer opens, checked the way a reader and a browser would see it."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from telecrm.cli import app
from telecrm.domain.fields import FIELDS
from telecrm.reports.readiness import analyze
from telecrm.reports.readiness_html import render_html
from telecrm.reports.spec_loader import load_spec
from tests.reports.answer_keys import KEYS, OPENAPI31

FIXTURES = Path(__file__).parent / "fixtures"
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'


class Page(HTMLParser):
    """Parses a page, failing on any unbalanced tag; keeps tags, attributes and text per element id."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, str] = {}
        self.all_text = ""
        self.feed(html)
        self.close()
        assert self.stack == [], f"unclosed: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            element_id = dict(attrs).get("id")
            self.stack.append((tag, element_id))
            if element_id:
                assert element_id not in self.text, f"duplicate id {element_id}"
                self.text[element_id] = ""

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack, f"</{tag}> closes nothing"
        opened, _ = self.stack.pop()
        assert opened == tag, f"</{tag}> closes <{opened}>"

    def handle_data(self, data: str) -> None:
        self.all_text += data
        for _, element_id in self.stack:
            if element_id:
                self.text[element_id] += data

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]


def report_for(path: Path, **kwargs: Any) -> dict[str, Any]:
    return analyze(load_spec(path, **kwargs))


@pytest.fixture(scope="module")
def openapi31() -> tuple[dict[str, Any], Page]:
    report = report_for(FIXTURES / OPENAPI31["file"])
    return report, Page(render_html(report))


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k["file"])
def test_the_page_holds_every_endpoint_and_data_point_of_the_answer_key(
    key: dict[str, Any],
) -> None:
    report = report_for(FIXTURES / key["file"])
    page = Page(render_html(report))
    cells = [page.text[e["id"].lower()].strip().split("\n") for e in report["endpoints"]]
    for kind, method, path, auth, level in key["endpoints"]:
        matching = [
            "\n".join(row)
            for row in cells
            if row[1] == method
            and row[2].removesuffix(" (webhook)") == path
            and row[3] == ", ".join(auth)
            and row[4].startswith(f"{level} (R")
        ]
        assert len(matching) == 1, (kind, method, path)
        for field, catalog in key["fields"][f"{method} {path}"].items():
            if catalog is None or (f"{method} {path}", field) in key["known_misses"]:
                continue
            data_point = FIELDS[catalog].data_point
            assert data_point.key in matching[0], (method, path, field)
            assert catalog in page.text[f"dp-{data_point.key}"]
    assert len(page.named("tr")) > len(key["endpoints"])
    for point in report["data_points"]:
        assert point["title"] in page.text[f"dp-{point['key']}"]


def test_every_summary_count_links_to_the_pointers_it_counts(
    openapi31: tuple[dict[str, Any], Page],
) -> None:
    report, page = openapi31
    links = [a["href"] for a in page.named("a") if (a["href"] or "").startswith("#ev-")]
    plan_rows = 3 + len(report["crm_plans"]) + 1  # stages, funnels, triggers, each CRM, roadmap
    assert len(links) == 4 + len(report["summary"]["by_auth"]) + 3 + 4 + plan_rows
    evidence = {link: page.text[link[1:]] for link in links}  # every link has its target
    by_measure = {text.split(":")[0].strip(): text for text in evidence.values()}
    assert all(p in by_measure["endpoints"] for e in report["endpoints"] for p in e["evidence"])
    assert "#/paths/~1patients~1{patientId}/get" in by_measure["operations documented"]
    assert "#/paths/~1public~1intake/post/security" in by_measure["auth none"]
    assert "#/paths/~1patients/get/parameters/2" in by_measure["list endpoints with a change feed"]
    phi = [f["evidence"] for e in report["endpoints"] for f in e["fields"] if f["phi"]]
    assert len(phi) == report["summary"]["phi_fields"] == 7
    assert all(p in by_measure["PHI fields"] for p in phi)
    assert all(u["evidence"] in by_measure["unmapped fields"] for u in report["unmapped_fields"])
    assert all(p in by_measure["findings"] for f in report["findings"] for p in f["evidence"])
    assert "#/components/schemas/Condition/allOf/1/properties/related" in by_measure["findings"]


def test_the_page_is_printable_and_accessible_and_loads_nothing(
    openapi31: tuple[dict[str, Any], Page],
) -> None:
    _, page = openapi31
    assert page.named("html") == [{"lang": "en"}]
    assert len(page.named("caption")) == len(page.named("table")) >= 6
    assert all(th.get("scope") in {"col", "row"} for th in page.named("th"))
    assert not page.named("script") and not page.named("img") and not page.named("link")
    assert all(not (attrs.get("src") or "") for _, attrs in page.tags)
    hrefs = [v for _, attrs in page.tags for k, v in attrs.items() if k.endswith("href")]
    assert hrefs and all((h or "").startswith("#") for h in hrefs)


def test_the_chart_is_inline_svg_labelled_by_its_caption(
    openapi31: tuple[dict[str, Any], Page],
) -> None:
    _, page = openapi31
    (svg,) = [s for s in page.named("svg") if s.get("aria-labelledby") == "chart-caption"]
    assert svg["role"] == "img"
    assert all(s["role"] == "img" for s in page.named("svg"))
    assert "coloured by PHI class" in page.text["chart-caption"]
    assert "3 of 5 found" in page.text["data-point-chart"]


BODY = {"type": "object", "properties": {"diagnosis": {"type": "string"}, IMG: {"type": "string"}}}


def hostile_spec(tmp_path: Path) -> Path:
    spec = {
        "openapi": "3.1.0",
        "info": {"title": f"Clinic {SCRIPT}{IMG}", "version": "1"},
        "paths": {
            f"/x/{SCRIPT}": {
                "post": {
                    "description": IMG,
                    "security": [],
                    "requestBody": {"content": {"application/json": {"schema": BODY}}},
                    "responses": {"200": {"description": SCRIPT}},
                }
            }
        },
    }
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(spec))
    return path


def test_hostile_values_in_the_spec_come_out_escaped(tmp_path: Path) -> None:
    report = report_for(hostile_spec(tmp_path), validate=False)
    assert any(SCRIPT in f["message"] for f in report["findings"])  # it does reach the page
    html = render_html(report)
    page = Page(html)
    assert SCRIPT not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert not page.named("script") and not page.named("img")
    assert SCRIPT in page.text["e1"]
    assert IMG in page.all_text and f"Clinic {SCRIPT}{IMG}" in page.all_text


def test_format_html_writes_readiness_html(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["analyze", str(FIXTURES / OPENAPI31["file"]), "--out", str(tmp_path), "--format", "html"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["readiness.html"]
    page = Page((tmp_path / "readiness.html").read_text(encoding="utf-8"))
    assert "/patients/{id}" in page.text["e3"]


def test_the_default_formats_include_html(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["analyze", str(FIXTURES / "petclinic_swagger2.json"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "readiness.html",
        "readiness.json",
        "readiness.md",
    ]
