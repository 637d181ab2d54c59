"""`readiness.md`: the readiness analysis for a human, each count next to its evidence."""

from __future__ import annotations

from typing import Any

from telecrm.reports.plan_markdown import plan_markdown


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ptrs(pointers: list[str], sep: str = "<br>") -> str:
    return sep.join(f"`{_cell(p)}`" for p in dict.fromkeys(pointers)) or "—"


def render_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]

    def refs(rows: list[dict[str, Any]]) -> str:
        return ", ".join(f"[{r['id']}](#{r['id'].lower()})" for r in rows) or "—"

    def where(pred: Any) -> str:
        return refs([r for r in report["endpoints"] if pred(r)])

    lines = [
        f"# API readiness: {_cell(report['title'] or report['source'])}",
        "",
        f"Source `{_cell(report['source'])}` ({report['dialect']} {_cell(report['version'])}); "
        f"shape validation: {_cell(report['validation'])}. Evidence is given as "
        + (
            "file:line in the tree"
            if report["dialect"] == "source-tree"
            else "JSON pointers into the document"
        )
        + "; endpoint ids (E1, E2 ...) link to the endpoint table.",
        "",
        "## Summary",
        "",
        "| measure | count | evidence |",
        "|---|---|---|",
        f"| endpoints | {s['endpoints']} | {where(lambda r: True)} |",
        f"| operations documented | {s['operations']} | duplicates merged: {s['duplicates_merged']} "
        f"({where(lambda r: len(r['evidence']) > 1)}) |",
        f"| webhooks | {s['webhooks']} | {where(lambda r: r['webhook'])} |",
        f"| list endpoints with a change feed | {s['with_change_feed']} | "
        f"{where(lambda r: r['change_feed'])} |",
    ]
    for auth, n in s["by_auth"].items():
        lines.append(f"| auth `{auth}` | {n} | {where(lambda r, a=auth: a in r['auth'])} |")
    for level, n in s["by_relevance"].items():
        lines.append(
            f"| relevance {level} | {n} | "
            f"{where(lambda r, lv=level: r['relevance']['level'] == lv)} |"
        )
    lines += [
        f"| data points found | {s['data_points_found']} of {s['data_points_total']} | "
        "[Data points](#data-points) |",
        f"| PHI fields | {s['phi_fields']} | {where(lambda r: any(f['phi'] for f in r['fields']))} |",
        f"| unmapped fields | {s['unmapped_fields']} | [Unmapped fields](#unmapped-fields) |",
        f"| findings | {s['findings']} | [Findings](#findings) |",
        *_plan_summary(report),
        "",
        "## Endpoints",
        "",
        "| id | method | path | auth | relevance (rule) | paging / change feed | data points | evidence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["endpoints"]:
        paging = [p["name"] for p in r["pagination"]] + [
            f"**{p['name']}**" for p in r["change_feed"]
        ]
        points = sorted({f["data_point"] + (" (PHI)" if f["phi"] else "") for f in r["fields"]})
        path = _cell(r["path"]) + (" (webhook)" if r["webhook"] else "")
        lines.append(
            f'| <a id="{r["id"].lower()}"></a>{r["id"]} | {r["method"]} | `{path}` | '
            f"{', '.join(r['auth'])} | {r['relevance']['level']} ({r['relevance']['rule']}) | "
            f"{', '.join(paging) or '—'} | {', '.join(points) or '—'} | "
            f"{_ptrs(r['evidence'] + r['auth_evidence'])} |"
        )
    lines += [
        "",
        "## Data points",
        "",
        "| category | data point | PHI class | sync policy | fields found | evidence |",
        "|---|---|---|---|---|---|",
    ]
    for p in report["data_points"]:
        lines.append(
            f"| {p['category']} | {p['title']} | {p['sensitivity']} | {p['sync_policy']} | "
            f"{', '.join(p['catalog_fields']) or 'not found'} | {_ptrs(p['evidence'])} |"
        )
    lines += ["", "## Unmapped fields", "", "For a human to map or dismiss.", ""]
    lines += [
        f"- {u['endpoint']} `{_cell(u['path'])}` — `{_cell(u['evidence'])}`"
        for u in report["unmapped_fields"]
    ] or ["None."]
    lines += ["", "## Findings", ""]
    lines += [
        f"- **{f['severity']}** {f['kind']}: {_cell(f['message'])} — {_ptrs(f['evidence'], ', ')}"
        for f in report["findings"]
    ] or ["None."]
    lines += plan_markdown(report)
    return "\n".join(lines) + "\n"


def _plan_summary(report: dict[str, Any]) -> list[str]:
    """Summary rows for the plan sections, each linking to the section that gives the evidence."""
    life = (report.get("lifecycle") or {}).get("summary")
    if not life:
        return []
    plans = report.get("crm_plans", [])
    return [
        f"| lifecycle stages evidenced | {life['stages_evidenced']} of {life['stages_total']} "
        f"(+{life['stages_derived']} derived) | [Lifecycle and funnels](#lifecycle-and-funnels) |",
        f"| funnels measurable | {life['funnels_measurable']} of {life['funnels_total']} | "
        "[Lifecycle and funnels](#lifecycle-and-funnels) |",
        f"| automation triggers fed | {life['triggers_found']} of {life['triggers_total']} "
        f"({life['triggers_pushed']} pushed) | [Channels and triggers](#channels-and-triggers) |",
        *(
            f"| {p['title']} complexity | {p['complexity']['total']} ({p['complexity']['band']}) | "
            f"[{p['title']}](#crm-{p['crm']}) |"
            for p in plans
        ),
        f"| roadmap steps | {len(report.get('roadmap', []))} | [Roadmap](#roadmap) |",
    ]
