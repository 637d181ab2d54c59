"""Per CRM (Salesforce, HubSpot, Pipedrive, Dynamics 365): what connecting the analysed platform
takes, from telecrm's own default mapping files and the analysis.

Objects and custom fields come from `connectors/mappings/<crm>.yaml` (each with its file and line);
which of the platform's data points may go there is the field catalog's PHI class against the
mapping's `baa` flag and what the CRM's vendor offers (DESIGN.md §5). The complexity estimate is a
weighted count of that work; the weights and the formula are in `WEIGHTS` and shown in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from telecrm.domain.fields import FIELDS
from telecrm.sync.mapping import BUILTIN_DIR, Mapping, load_mapping
from telecrm.sync.transforms import revealed_fields
from telecrm.sync.yaml_lines import line_of, load_with_lines

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Crm:
    key: str  # the default mapping's file name
    title: str
    baa_mapping: str | None  # a shipped mapping for a tenant under the vendor's BAA
    baa: str  # "available", "conditional" or "never"
    baa_terms: str  # in words, with where it is documented


CRMS: tuple[Crm, ...] = (
    Crm("salesforce", "Salesforce", None, "available",
        "PHI only when the org's services are covered by a signed Salesforce BAA "
        "(research/hipaa.md, research/crm-apis.md); set baa: true in a copy of the mapping"),
    Crm("hubspot", "HubSpot", None, "conditional",
        "PHI only on Enterprise accounts that accepted HubSpot's Sensitive Data Terms, and only "
        "into properties created as sensitive (research/crm-apis.md)"),
    Crm("pipedrive", "Pipedrive", None, "never",
        "Pipedrive offers no BAA: PHI never goes there (research/crm-apis.md §3.6)"),
    Crm("dynamics", "Dynamics 365", "dynamics-baa", "available",
        "covered by Microsoft's HIPAA BAA for Dynamics 365 tenants under the Product Terms / DPA "
        "(research/crm-apis.md §4.6); telecrm ships dynamics-baa.yaml for such a tenant"),
)  # fmt: skip

# Complexity: work counted from the mapping and the analysis, each unit with a stated weight
# (hours-like points, relative to one custom field = 1). Bands on the total.
WEIGHTS: dict[str, int] = {
    "crm_objects": 3,  # objects to sync: upsert key, associations, a test against the sandbox
    "custom_fields": 1,  # created by `telecrm crm provision`, checked once
    "custom_tables": 4,  # Dataverse tables: schema, lookup to contact, alternate key
    "endpoints_to_pull": 2,  # a puller per endpoint: paging, change feed, idempotency
    "webhooks_to_receive": 2,  # signature check, mapping to telecrm events
    "phi_fields_baa_decision": 2,  # PHI the platform holds: send under a BAA or keep out
}
BANDS = ((40, "low"), (80, "medium"))  # total < 40 low, < 80 medium, else high
FORMULA = " + ".join(f"{w} x {name.replace('_', ' ')}" for name, w in WEIGHTS.items())


def _shown(path: Path) -> str:
    return f"connectors/mappings/{path.name}"


@cache
def _mapping_with_lines(name: str) -> tuple[Mapping, dict[Any, int], str]:
    path = BUILTIN_DIR / f"{name}.yaml"
    _, lines = load_with_lines(path.read_text(encoding="utf-8"))
    return load_mapping(path), lines, _shown(path)


def carried_fields(m: Mapping) -> set[str]:
    """Catalog fields the mapping sends: named by `field:` or revealed by a record's source."""
    out: set[str] = set()
    for o in m.objects:
        attrs = [s.from_ for s in o.properties.values() if s.from_]
        out |= {s.field for s in o.properties.values() if s.field}
        out |= set(revealed_fields(o.source, attrs))
        out |= {a for a in attrs if a in FIELDS}
    return out


def _objects(m: Mapping, lines: dict[Any, int], shown: str) -> list[Row]:
    by_crm: dict[str, Row] = {}
    for i, o in enumerate(m.objects):
        row = by_crm.setdefault(
            o.crm_object, {"crm_object": o.crm_object, "records": [], "evidence": []}
        )
        row["records"].append(f"{o.name} (from {o.source})")
        row["evidence"].append(f"{shown}:{line_of(lines, ('objects', i))}")
    return list(by_crm.values())


def _custom_fields(m: Mapping, lines: dict[Any, int], shown: str) -> list[Row]:
    return [
        {
            "crm_object": c.crm_object,
            "name": c.name,
            "label": c.label,
            "kind": c.kind,
            "unique": c.unique,
            "evidence": f"{shown}:{line_of(lines, ('custom_properties', i))}",
        }
        for i, c in enumerate(m.custom_properties)
    ]


def _data_points(report: dict[str, Any], m: Mapping, baa_m: Mapping | None, crm: Crm) -> list[Row]:
    """Each data point found in the platform: which of its fields the mapping sends, and whether
    the destination may receive it."""
    carried = carried_fields(m)
    carried_baa = carried_fields(baa_m) if baa_m else set()
    out = []
    for p in report.get("data_points", []):
        if not p["catalog_fields"]:
            continue
        found = set(p["catalog_fields"])
        if p["phi"] and not m.baa:
            if crm.baa == "never":
                verdict = "never: no BAA"
            elif baa_m is not None and found & carried_baa:
                verdict = f"only with {baa_m.destination}-baa mapping (BAA)"
            else:
                verdict = "blocked: PHI, mapping has baa: false"
            sent: list[str] = sorted(found & carried_baa) if baa_m else []
        else:
            sent = sorted(found & carried)
            verdict = "synced" if sent else "not in the default mapping"
        out.append({
            "data_point": p["key"], "title": p["title"], "phi": p["phi"],
            "found_fields": sorted(found), "mapped_fields": sent, "verdict": verdict,
            "evidence": p["evidence"],
        })  # fmt: skip
    return out


def _work(report: dict[str, Any]) -> dict[str, list[Row]]:
    rows = report.get("endpoints", [])
    pull = [
        r
        for r in rows
        if r.get("method") == "GET"
        and not r.get("webhook")
        and r.get("relevance", {}).get("level") in ("high", "medium")
    ]
    hooks = [r for r in rows if r.get("webhook")]
    phi: dict[str, list[str]] = {}
    for r in rows:
        for f in r.get("fields", []):
            if f["phi"]:
                phi.setdefault(f["catalog_field"], []).append(f"{r['id']} {f['evidence']}")
    return {
        "endpoints_to_pull": [{"item": r["id"], "evidence": r["evidence"]} for r in pull],
        "webhooks_to_receive": [{"item": r["id"], "evidence": r["evidence"]} for r in hooks],
        "phi_fields_baa_decision": [{"item": f, "evidence": ev} for f, ev in sorted(phi.items())],
    }


def complexity(counts: dict[str, int]) -> dict[str, Any]:
    """The weighted total of counted work, its band, and each term, as the report shows them."""
    terms: list[Row] = [
        {"work": name, "count": counts[name], "weight": w, "points": counts[name] * w}
        for name, w in WEIGHTS.items()
    ]
    total = sum(counts[name] * w for name, w in WEIGHTS.items())
    band = next((label for limit, label in BANDS if total < limit), "high")
    return {"terms": terms, "total": total, "band": band, "formula": FORMULA}


def crm_plan(
    report: dict[str, Any], crm: Crm, work: dict[str, list[Row]] | None = None
) -> dict[str, Any]:
    m, lines, shown = _mapping_with_lines(crm.key)
    baa_m = _mapping_with_lines(crm.baa_mapping)[0] if crm.baa_mapping else None
    objects = _objects(m, lines, shown)
    fields = _custom_fields(m, lines, shown)
    tables = [
        {"name": t.schema_name, "label": t.label,
         "evidence": f"{shown}:{line_of(lines, ('custom_tables', i))}"}
        for i, t in enumerate(m.custom_tables)
    ]  # fmt: skip
    work = work if work is not None else _work(report)
    counts = {
        "crm_objects": len(objects),
        "custom_fields": len(fields),
        "custom_tables": len(tables),
        **{k: len(v) for k, v in work.items()},
    }
    baa_extra = None
    if baa_m is not None:
        b_lines, b_shown = _mapping_with_lines(crm.baa_mapping or "")[1:]
        baa_extra = {
            "mapping": b_shown,
            "baa_line": f"{b_shown}:{line_of(b_lines, ('baa',))}",
            "phi_fields": sorted(baa_m.phi_fields()),
            "custom_fields": len(baa_m.custom_properties),
            "custom_tables": len(baa_m.custom_tables),
        }
    return {
        "crm": crm.key,
        "title": crm.title,
        "mapping": shown,
        "mapping_baa": m.baa,
        "baa_line": f"{shown}:{line_of(lines, ('baa',))}",
        "baa": crm.baa,
        "baa_terms": crm.baa_terms,
        "baa_mapping": baa_extra,
        "objects": objects,
        "custom_fields": fields,
        "custom_tables": tables,
        "data_points": _data_points(report, m, baa_m, crm),
        "work": work,
        "complexity": complexity(counts),
    }


def crm_plans(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One plan per CRM, in the order of DESIGN.md §4.5."""
    work = _work(report)  # the same for every CRM
    return [crm_plan(report, crm, work) for crm in CRMS]
