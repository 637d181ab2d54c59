"""The plan sections of `readiness.md`: channels and triggers, lifecycle and funnels, CRM plans,
roadmap and business impact. Endpoint ids link to the endpoint table; mapping evidence is a
file:line in `src/telecrm/connectors/mappings/`."""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ids(items: list[Row], key: str = "endpoint") -> str:
    ids = list(dict.fromkeys(i[key] for i in items))
    return ", ".join(f"[{i}](#{i.lower()})" for i in ids) or "—"


def _code(items: list[str], sep: str = "<br>") -> str:
    return sep.join(f"`{_cell(p)}`" for p in dict.fromkeys(items)) or "—"


def channels_markdown(report: dict[str, Any]) -> list[str]:
    lines = ["", "## Channels and triggers", ""]
    messages = report.get("messages")
    if messages:
        templates = messages.get("templates", [])
        by_channel = messages.get("by_channel") or {}
        lines += ["| channel | templates | evidence |", "|---|---|---|"]
        for channel in sorted({t["channel"] for t in templates} | set(by_channel)):
            mine = [t for t in templates if t["channel"] == channel]
            lines.append(
                f"| {_cell(channel)} | {len(mine)}: {_cell(', '.join(t['name'] for t in mine))} | "
                f"{_code([str(t['evidence']) for t in mine])} |"
            )
        found = messages.get("triggers", [])
        lines += ["", f"Triggers found in the source: {len(found)}.", ""]
        lines += [f"- `{_cell(t['name'])}` — `{_cell(t['evidence'])}`" for t in found] or ["None."]
        lines.append("")
    else:
        lines += [
            "An API document names no message templates; the triggers below are what its webhooks "
            "and endpoints can feed (push = a webhook, poll = a list endpoint).",
            "",
        ]
    lifecycle = report.get("lifecycle") or {}
    lines += ["| trigger | how | endpoints | evidence |", "|---|---|---|---|"]
    for t in lifecycle.get("triggers", []):
        pointers = [str(s["evidence"]) for s in t.get("source", [])]
        pointers += [p for e in t["endpoints"] for p in e["evidence"]]
        lines.append(
            f"| `{t['trigger']}` | {t['status']} | {_ids(t['endpoints'])} | {_code(pointers)} |"
        )
    return lines


def lifecycle_markdown(report: dict[str, Any]) -> list[str]:
    lifecycle = report.get("lifecycle") or {}
    s = lifecycle.get("summary", {})
    lines = [
        "",
        "## Lifecycle and funnels",
        "",
        f"{s.get('stages_evidenced', 0)} of {s.get('stages_total', 10)} stages evidenced by the "
        f"platform, {s.get('stages_derived', 0)} derived by telecrm from them; "
        f"{s.get('funnels_measurable', 0)} of {s.get('funnels_total', 4)} funnels measurable.",
        "",
        "| stage | CRM status | status | endpoints (why) | missing |",
        "|---|---|---|---|---|",
    ]
    for st in lifecycle.get("stages", []):
        why = ", ".join(
            f"[{e['endpoint']}](#{e['endpoint'].lower()}) ({_cell(e['why'])}, {e['how']})"
            for e in st["endpoints"]
        )
        why = ", ".join(
            [
                f"`{_cell(x['name'])}` in the source (`{_cell(x['evidence'])}`)"
                for x in st.get("source", [])
            ]
            + ([why] if why else [])
        )
        if st["status"] == "derived":
            why = f"from {', '.join(st['derived_from'])}: {_cell(st.get('how', ''))}"
        lines.append(
            f"| {st['stage']} | {st['crm_status']} | {st['status']} | {why or '—'} | "
            f"{_cell(st['missing'] or '—')} |"
        )
    lines += ["", "| funnel | from → to | status | note |", "|---|---|---|---|"]
    for f in lifecycle.get("funnels", []):
        lines.append(
            f"| {f['funnel']} | {f['from']} → {f['to']} | {f['status']} | {_cell(f['note'] or '—')} |"
        )
    return lines


def crm_plans_markdown(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## CRM plans",
        "",
        "Objects and custom fields come from telecrm's default mapping files "
        "(`src/telecrm/connectors/mappings/`); evidence is file:line. Complexity = "
        f"{report.get('complexity_formula', '')}; total under 40 is low, under 80 medium, else high.",
        "",
        "| CRM | objects | custom fields | tables | BAA | default mapping sends PHI | complexity |",
        "|---|---|---|---|---|---|---|",
    ]
    plans = report.get("crm_plans", [])
    for p in plans:
        c = p["complexity"]
        lines.append(
            f"| [{p['title']}](#crm-{p['crm']}) | {len(p['objects'])} | {len(p['custom_fields'])} | "
            f"{len(p['custom_tables'])} | {p['baa']} | {'yes' if p['mapping_baa'] else 'no'} "
            f"(`{p['baa_line']}`) | {c['total']} ({c['band']}) |"
        )
    for p in plans:
        c = p["complexity"]
        lines += [
            "",
            f'### <a id="crm-{p["crm"]}"></a>{p["title"]}',
            "",
            f"Mapping `{p['mapping']}`. BAA: {p['baa']} — {_cell(p['baa_terms'])}.",
        ]
        if p["baa_mapping"]:
            b = p["baa_mapping"]
            lines.append(
                f"With a BAA, `{b['mapping']}` (`{b['baa_line']}`) sends {len(b['phi_fields'])} "
                f"PHI field(s): {', '.join(b['phi_fields'])}; {b['custom_fields']} custom fields, "
                f"{b['custom_tables']} tables."
            )
        lines += ["", "| CRM object | records | evidence |", "|---|---|---|"]
        lines += [
            f"| {o['crm_object']} | {_cell(', '.join(o['records']))} | {_code(o['evidence'], ', ')} |"
            for o in p["objects"]
        ]
        lines += ["", "| custom field | object | kind | evidence |", "|---|---|---|---|"]
        lines += [
            f"| `{f['name']}` | {f['crm_object']} | {f['kind']}{' (unique)' if f['unique'] else ''} "
            f"| `{f['evidence']}` |"
            for f in p["custom_fields"]
        ]
        lines += [
            f"| table `{t['name']}` | — | table | `{t['evidence']}` |" for t in p["custom_tables"]
        ]
        lines += ["", "| data point found | PHI | mapped fields | verdict |", "|---|---|---|---|"]
        lines += [
            f"| [{_cell(d['title'])}](#data-points) | {'yes' if d['phi'] else 'no'} | "
            f"{', '.join(d['mapped_fields']) or '—'} | {_cell(d['verdict'])} |"
            for d in p["data_points"]
        ] or ["| none found | | | |"]
        lines += ["", "| work | count | weight | points | evidence |", "|---|---|---|---|---|"]
        for t in c["terms"]:
            lines.append(
                f"| {t['work'].replace('_', ' ')} | {t['count']} | {t['weight']} | {t['points']} | "
                f"{_work_evidence(p, t['work'])} |"
            )
        lines.append(f"| **total** | | | **{c['total']}** ({c['band']}) | |")
    return lines


def _work_evidence(plan: Row, work: str) -> str:
    if work == "crm_objects":
        return _code([o["evidence"][0] for o in plan["objects"]], ", ")
    if work == "custom_fields":
        return f"{len(plan['custom_fields'])} rows above"
    if work == "custom_tables":
        return _code([t["evidence"] for t in plan["custom_tables"]], ", ")
    items = plan["work"].get(work, [])
    if work == "phi_fields_baa_decision":
        return ", ".join(f"`{i['item']}`" for i in items) or "—"
    return _ids(items, "item")


def roadmap_markdown(report: dict[str, Any]) -> list[str]:
    lines = ["", "## Roadmap", ""]
    for s in report.get("roadmap", []):
        cmd = f" Run `{s['command']}`." if s["command"] else ""
        ev = f" Evidence: {_code(s['evidence'][:12], ', ')}" if s["evidence"] else ""
        more = f" (+{len(s['evidence']) - 12} more)" if len(s["evidence"]) > 12 else ""
        lines.append(f"{s['step']}. **{_cell(s['title'])}** — {_cell(s['why'])}.{cmd}{ev}{more}")
    return lines or ["None."]


def impact_markdown(report: dict[str, Any]) -> list[str]:
    impact = report.get("business_impact") or {}
    lines = [
        "",
        "## Business impact",
        "",
        f"Measured: none here — {impact.get('measured_note', '')}.",
        "",
    ]
    lines += [
        "Assumptions for planning (published benchmarks, not telecrm's measurements):",
        "",
        "| assumption | used for | source |",
        "|---|---|---|",
    ]
    lines += [
        f"| {_cell(a['figure'])} | {_cell(a['use'])} | {_cell(a['source'])} ({a['research']}) |"
        for a in impact.get("assumptions", [])
    ]
    return lines


def plan_markdown(report: dict[str, Any]) -> list[str]:
    """All plan sections, in reading order."""
    return [
        *channels_markdown(report),
        *lifecycle_markdown(report),
        *crm_plans_markdown(report),
        *roadmap_markdown(report),
        *impact_markdown(report),
    ]
