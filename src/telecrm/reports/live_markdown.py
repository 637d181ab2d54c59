"""`report.md`: the live integration report for a human; every count links to its query (Q1 ...)."""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def c(count: Row | None) -> str:
    """A count with the link to its evidence: `1,204 [Q7](#q7)`."""
    if count is None:
        return "—"
    return f"{count['shown']} [{count['q']}](#{count['q'].lower()})"


def _stages(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Lifecycle stages",
        "",
        "| stage | CRM status | patients now | share | ever reached |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['stage']} | {s['crm_status']} | {c(s['patients'])} | {s['share']} | {c(s['ever_reached'])} |"
        for s in r["stages"]
    ]
    return lines


def _events(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Events received, by type", "", "| event type | events |", "|---|---|"]
    return lines + [f"| `{e['type']}` | {c(e['events'])} |" for e in r["events"]] or ["| none | |"]


def _funnels(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Funnel conversion", ""]
    for by, title in (
        ("all", "all patients"),
        ("channel", "by acquisition channel"),
        ("cohort", "by monthly cohort (month entered)"),
    ):
        lines += [
            f"### Funnels, {title}",
            "",
            "| funnel | from → to | group | entered | converted | rate |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {f['funnel']} | {f['from']} → {f['to']} | {_cell(f['group'])} | {c(f['entered'])} | "
            f"{c(f['converted'])} | {f['rate']} |"
            for f in r["funnels"][by]
        ] or ["| none | | | | | |"]
        lines.append("")
    return lines


def _baa(flag: bool | None) -> str:
    return "not configured here" if flag is None else "yes" if flag else "no"


def _sync(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Sync health per destination",
        "",
        "| destination | BAA | records (by state) | dirty | open dead letters | API calls | limit refusals | last success |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in r["sync"]:
        states = ", ".join(f"{k} {v['shown']}" for k, v in d["records"].items())
        lines.append(
            f"| {_cell(d['destination'])} | {_baa(d['baa'])} | {c(d['records_total'])} "
            f"({states or 'none'}) | {c(d['dirty'])} | {c(d['dead_letters_open'])} | {c(d['api_calls'])} | "
            f"{c(d['limit_refusals'])} | {d['last_success'] or 'never'} [{d['last_success_q']}](#{d['last_success_q'].lower()}) |"
        )
    if not r["sync"]:
        lines.append("| none configured or synced | | | | | | | |")
    return lines


def _messages(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Message engagement",
        "",
        "| channel | sent | delivered | opened | clicked | replied | bounced / failed | suppressed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in r["messages"]:
        rate = {k: f" ({m[f'{k}_rate']})" for k in ("delivered", "opened", "clicked", "replied")}
        lines.append(
            f"| {m['channel']} | {c(m['sent'])} | {c(m['delivered'])}{rate['delivered']} | "
            f"{c(m['opened'])}{rate['opened']} | {c(m['clicked'])}{rate['clicked']} | "
            f"{c(m['replied'])}{rate['replied']} | {c(m['bounced_or_failed'])} | {c(m['suppressed'])} |"
        )
    return lines


def _compliance(r: dict[str, Any]) -> list[str]:
    comp = r["compliance"]
    a = comp["audit"]
    lines = [
        "",
        "## Compliance",
        "",
        f"Audit chain: **{'intact' if a['ok'] else 'BROKEN'}**, {c(a['rows_checked'])} entries checked"
        + ("" if a["ok"] else f"; first broken row {a['first_broken_seq']}: {_cell(a['problem'])}")
        + ".",
        "",
        "| destination | disclosures | of which PHI |",
        "|---|---|---|",
    ]
    lines += [
        f"| {_cell(d['destination'])} | {c(d['disclosures'])} | {c(d['phi_disclosures'])} |"
        for d in comp["disclosures"]
    ] or ["| none | | |"]
    return lines


def _journeys(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Journeys", ""]
    if not r["journeys"]:
        return [*lines, "No journey has run on this database."]
    lines += [
        "| journey | group | entered | converted | rate | lift over holdout |",
        "|---|---|---|---|---|---|",
    ]
    for j in r["journeys"]:
        lift = (
            f"{j['lift']:+.1%}" + (f" (p = {j['p_value']:.3f})" if j["p_value"] is not None else "")
            if j["lift"] is not None
            else _cell(j["lift_note"] or "—")
        )
        for g, v in j["groups"].items():
            lines.append(
                f"| {_cell(j['journey'])} | {g} | {c(v['entered'])} | {c(v['converted'])} | {v['rate']} | {lift} |"
            )
    return lines


def _churn(r: dict[str, Any]) -> list[str]:
    ch = r.get("churn")
    lines = ["", "## Churn model evaluation", ""]
    if ch is None:
        return [*lines, "Not run."]
    if not ch["measured"]:
        return [*lines, f"Not measured: {_cell(ch['reason'])} [{ch['q']}](#{ch['q'].lower()})."]
    return [
        *lines,
        f"Held-out {ch['horizon_days']}-day window, {c(ch['customers'])} customers, base churn rate "
        f"{ch['base_rate']:.1%}: AUC {ch['auc']:.3f} (recency alone {ch['recency_only_auc']:.3f}), "
        f"Brier {ch['brier']:.4f} (base rate alone {ch['brier_of_base_rate']:.4f}), top decile churns "
        f"{ch['top_decile_rate']:.1%} ({ch['lift_top_decile']:.2f}x the base rate).",
    ]


def _comparison(r: dict[str, Any]) -> list[str]:
    cmp = r.get("comparison")
    if not cmp:
        return []
    lines = [
        "",
        "## The analyzer's findings beside what is flowing",
        "",
        f"Analysis of `{_cell(cmp['source'])}` ({_cell(cmp['title'] or 'untitled')}): "
        f"{cmp['summary']['endpoints']} endpoints, {cmp['summary']['webhooks']} webhooks, "
        f"{cmp['summary']['findings']} findings.",
        "",
        "| event type | trigger | analyzer | endpoints | events in the log | verdict |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{e['event_type']}` | {'yes' if e['trigger'] else ''} | {e['analyzer']} | "
        f"{', '.join(e['endpoints']) or '—'} | {c(e['live'])} | {e['verdict']} |"
        for e in cmp["events"]
    ]
    lines += [
        "",
        "| stage | analyzer | endpoints | patients who reached it | verdict |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['stage']} | {s['analyzer']} | {', '.join(s['endpoints']) or '—'} | {c(s['live'])} | {s['verdict']} |"
        for s in cmp["stages"]
    ]
    if cmp["findings"]:
        lines += ["", "Analyzer findings:", ""]
        lines += [
            f"- **{f['severity']}** {f['kind']}: {_cell(f['message'])}" for f in cmp["findings"]
        ]
    return lines


def _impact(r: dict[str, Any]) -> list[str]:
    imp = r["business_impact"]
    lines = ["", "## Business impact", "", "Measured on this database:", ""]
    lines += [
        f"- {_cell(m['figure'])} — {m['kind']} [{m['q']}](#{m['q'].lower()})"
        for m in imp["measured"]
    ] or ["- nothing measurable yet"]
    lines += ["", f"Assumptions ({imp['note']}):", ""]
    lines += [
        f"- *Assumption:* {_cell(a['figure'])} — {_cell(a['use'])}; source: {_cell(a['source'])} ({a['research']})"
        for a in imp["assumptions"]
    ]
    return lines


def render_live_markdown(r: dict[str, Any]) -> str:
    lines = [
        "# telecrm live integration report",
        "",
        f"Generated {r['generated_at']} from the {r['database']} database: {c(r['patients'])} live "
        f"patients, {c(r['pending_events'])} events not yet folded. Counts of patients, events and "
        f"messages under {r['min_cell']} show as <{r['min_cell']}; every count links to the query "
        "it came from ([Evidence](#evidence)).",
        "",
        *_stages(r),
        *_events(r),
        *_funnels(r),
        *_sync(r),
        *_messages(r),
        *_compliance(r),
        *_journeys(r),
        *_churn(r),
        *_comparison(r),
        *_impact(r),
        "",
        "## Evidence",
        "",
        "| id | query | same number from |",
        "|---|---|---|",
    ]
    lines += [
        f'| <a id="{q["id"].lower()}"></a>{q["id"]} | `{_cell(q["query"])}` | '
        f"{'`' + _cell(q['command']) + '`' if q['command'] else '—'} |"
        for q in r["queries"]
    ]
    return "\n".join(lines) + "\n"
