"""The dirty-set planner: what each CRM record should hold now, and whether that is news.

`mark_dirty` runs inside the profile worker's (and the sweep's) transaction: a changed patient is
marked for every destination in the same commit as the change, so a crash can lose neither.
`desired_records` turns one profile into the records a mapping asks for (contact, deals,
tickets, ...) with a digest of each; the outbox worker compares that digest with what the
destination last accepted, so ten changes before a run are one upsert and an unchanged record
costs no call at all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection

from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import CRM_STATUS, LADDER, RANK, Stage
from telecrm.domain.profile import Profile
from telecrm.store.upsert import upsert_rows_fast
from telecrm.sync.mapping import Mapping, ObjectMapping
from telecrm.sync.tables import sync_dirty
from telecrm.sync.transforms import ATTRIBUTE_REVEALS, apply_transform, revealed_fields

OPEN_CONSULTATION_CLOSE_DAYS = 30  # Salesforce needs a CloseDate on an open opportunity
RELATIONSHIP_ID_LABEL = b"telecrm/provider-relationship/v1\x00"  # a new scheme, a new label
TREATMENT_VALUES = {  # treatment_plan attribute -> the catalog field that holds it
    "status": "treatment_status",
    "outcome": "treatment_outcome",
    "progress": "treatment_progress",
}


@dataclass(frozen=True, slots=True)
class DesiredRecord:
    object: str  # the mapping's object name
    key: str  # the external id value
    patient_key: str
    properties: dict[str, Any]
    fields: tuple[str, ...]  # catalog fields whose values this record discloses
    digest: str
    relations: tuple[tuple[str, str], ...]  # (object, key) that must exist in the CRM first
    associations: tuple[tuple[str, str], ...]  # (object, key) to link to after the write

    @property
    def phi(self) -> bool:
        return any(FIELDS[f].is_phi for f in self.fields)


def mark_dirty(
    conn: Connection, destinations: Sequence[str], patient_keys: Iterable[str], now_us: int
) -> int:
    """Mark patients dirty for each destination, in the caller's transaction."""
    rows = [
        {"destination": d, "patient_key": k, "version": 1, "marked_us": now_us}
        for k in sorted(set(patient_keys))
        if not k.startswith("anon:")  # an anonymous visitor has no id a CRM could key on
        for d in destinations
    ]
    if not rows:
        return 0
    upsert_rows_fast(
        conn, sync_dirty, rows, ["destination", "patient_key"], ["marked_us"], increment=["version"]
    )
    return len(rows)


def digest_of(properties: dict[str, Any]) -> str:
    return hashlib.blake2b(
        orjson.dumps(properties, option=orjson.OPT_SORT_KEYS), digest_size=16
    ).hexdigest()


def _max_stage(p: Profile) -> str | None:
    return LADDER[p.max_rank].value if 0 <= p.max_rank < len(LADDER) else None


def patient_attributes(p: Profile) -> dict[str, Any]:
    return {
        "patient_id": p.patient_key,
        "stage": p.stage.value if p.stage else None,
        "crm_status": CRM_STATUS[p.stage] if p.stage else None,
        "max_stage": _max_stage(p),
        "churn_risk": p.facts.churn_risk,
        "lead_score": p.facts.lead_score,
        "engagement_score": p.facts.engagement_score,
        "predicted_ltv": p.facts.predicted_ltv,
        "scored_at": p.facts.scored_at,
        "registered_at": p.facts.registered_at,
        "stage_since": p.stage_since,
        # What journeys' crm_update steps set: fixed values, sent as text.
        **{
            f"journey.{name}": str(entry["value"]).lower()
            if isinstance(entry["value"], bool)
            else str(entry["value"])
            for name, entry in p.records.get("journey_field", {}).items()
        },
    }


def _record_attributes(source: str, record_id: str, raw: dict[str, Any]) -> dict[str, Any]:
    attrs = {"record_id": record_id, **raw}
    if source in ("care_task", "care_case"):
        attrs["due_date"] = datetime.fromisoformat(raw["due_at"])
    if source == "consultation":
        closed = raw.get("closed_at")
        attrs["closed"] = closed is not None
        if closed is not None:
            attrs["close_date"] = datetime.fromisoformat(closed)
        elif raw.get("submitted_at"):
            submitted = datetime.fromisoformat(raw["submitted_at"])
            attrs["close_date"] = submitted + timedelta(days=OPEN_CONSULTATION_CLOSE_DAYS)
    return attrs


def _applies(o: ObjectMapping, p: Profile) -> bool:
    if o.when is None:
        return True
    if o.when.stage_reached is not None and p.max_rank < RANK[o.when.stage_reached]:
        return False
    return not (
        o.when.stage_not_reached is not None and p.max_rank >= RANK[o.when.stage_not_reached]
    )


def relationship_id(patient_key: str, provider_id: str) -> str:
    """A provider relationship's external id: stable, and without the provider id in it.

    The id lands in sync_records, dead letters and logs, none of them encrypted, while the
    provider id is PHI. A digest keyed by a telecrm secret would resist guessing from a list of
    providers better, but every secret here rotates, and an external id that changes makes a
    duplicate CRM record; so it is a plain SHA-256 over both ids under a fixed label, 128 bits."""
    material = RELATIONSHIP_ID_LABEL + f"{patient_key}\x00{provider_id}".encode()
    return "pr_" + hashlib.sha256(material).hexdigest()[:32]


def _keys_of(o: ObjectMapping, p: Profile) -> list[tuple[str, dict[str, Any]]]:
    if o.source == "patient":
        return [(p.patient_key, {})]
    if o.source == "provider_relationship":  # from the decrypted value, never a clear record
        provider = p.values.get("provider_id")
        if not provider:
            return []
        rid = relationship_id(p.patient_key, str(provider))
        return [(rid, {"record_id": rid})]
    out = []
    for rid, raw in sorted(p.records.get(o.source, {}).items()):
        attrs = _record_attributes(o.source, rid, raw)
        if o.source == "treatment_plan":
            attrs.pop("current", None)
            if raw.get("current"):  # the catalog values describe the latest plan only
                attrs |= {a: p.values.get(f) for a, f in TREATMENT_VALUES.items()}
        out.append((rid, attrs))
    return out


def desired_records(p: Profile, mapping: Mapping) -> list[DesiredRecord]:
    """Every record the mapping wants for this patient, in dependency order (relations first)."""
    if p.deleted or p.patient_key.startswith("anon:"):
        return []
    base = patient_attributes(p)
    out: list[DesiredRecord] = []
    wanted = {o.name: _applies(o, p) for o in mapping.objects}
    for o in _dependency_order(mapping):
        if not wanted[o.name]:
            continue
        for key, extra in _keys_of(o, p):
            attrs = {**base, **extra}
            props: dict[str, Any] = {}
            used: list[str] = list(revealed_fields(o.source))
            relations: list[tuple[str, str]] = []
            for name, spec in o.properties.items():
                if spec.field is not None:
                    value = p.values.get(spec.field)
                    if value is not None:
                        used.append(spec.field)
                elif spec.from_ is not None:
                    value = attrs.get(spec.from_)
                    revealed = ATTRIBUTE_REVEALS.get((o.source, spec.from_))
                    if value is not None and revealed is not None:
                        used.append(revealed)
                elif spec.template is not None:
                    used += _template_reveals(o.source, spec.template, attrs)
                    value = spec.template.format_map(_Blank(attrs))
                elif spec.relation is not None:
                    target = mapping.object(spec.relation)
                    if not wanted[target.name]:
                        continue
                    relations.append((target.name, p.patient_key))
                    props[name] = {target.id_property: p.patient_key}
                    continue
                else:
                    value = spec.value
                value = apply_transform(spec.transform, value, spec.map)
                if value is not None:
                    props[name] = value
            associations = tuple(
                (a.to, p.patient_key) for a in o.associations if wanted.get(a.to, False)
            )
            out.append(
                DesiredRecord(
                    object=o.name,
                    key=key,
                    patient_key=p.patient_key,
                    properties=props,
                    fields=tuple(sorted(set(used))),
                    digest=digest_of({"p": props, "a": associations}),
                    relations=tuple(relations),
                    associations=associations,
                )
            )
    return out


def _template_reveals(source: str, template: str, attrs: dict[str, Any]) -> list[str]:
    names = re.findall(r"{(\w+)}", template)
    return [
        f
        for n in names
        if attrs.get(n) is not None and (f := ATTRIBUTE_REVEALS.get((source, n))) is not None
    ]


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def _dependency_order(mapping: Mapping) -> list[ObjectMapping]:
    """Objects after those they point to (relations and associations), stable otherwise."""
    done: list[ObjectMapping] = []
    seen: set[str] = set()

    def visit(o: ObjectMapping, path: tuple[str, ...]) -> None:
        if o.name in seen or o.name in path:
            return
        deps = [s.relation for s in o.properties.values() if s.relation] + [
            a.to for a in o.associations
        ]
        for d in deps:
            visit(mapping.object(d), (*path, o.name))
        seen.add(o.name)
        done.append(o)

    for o in mapping.objects:
        visit(o, ())
    return done


def object_order(mapping: Mapping) -> list[str]:
    return [o.name for o in _dependency_order(mapping)]


def stage_of(value: str | None) -> Stage | None:
    return Stage(value) if value else None
