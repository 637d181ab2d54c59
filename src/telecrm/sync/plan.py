"""The dry run and the status board: what a sync would send, and where each destination stands.

`dry_run` plans the dirty patients (or all of them) exactly as the worker would, counts what is
new, changed, unchanged or refused, estimates the calls from each API's batch maximum, and shows
sample payloads with every identifying value redacted. Nothing is sent and nothing is written.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from collections.abc import Mapping as Mapping_
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from telecrm.connectors.dynamics_auth import DATAVERSE_BATCH_MAX
from telecrm.connectors.hubspot import HUBSPOT_BATCH_MAX
from telecrm.connectors.pipedrive_marked import MARKED_TEXT
from telecrm.connectors.salesforce import SALESFORCE_COLLECTION_MAX
from telecrm.domain.fields import FIELDS
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profile_rows, profiles
from telecrm.security.envelope import FieldCipher
from telecrm.store.engine import read_only
from telecrm.sync.mapping import Mapping, ObjectMapping
from telecrm.sync.planner import DesiredRecord, desired_records
from telecrm.sync.tables import rate_budgets, sync_dead_letters, sync_dirty, sync_records
from telecrm.sync.worker import load_known

REDACTED = "[redacted]"
BATCH_MAX = {
    "hubspot": HUBSPOT_BATCH_MAX,
    "salesforce": SALESFORCE_COLLECTION_MAX,
    "pipedrive": 1,  # no batch endpoint: one record per call
    "dynamics": DATAVERSE_BATCH_MAX,
}
SEARCH_BEFORE_CREATE = frozenset({"pipedrive"})  # no native upsert: a search per new record
SEPARATE_ASSOCIATIONS = frozenset({"hubspot", "pipedrive", "dynamics"})  # links cost calls
# Pipedrive: activities and notes are found by a marker, not searched, and one whose person we
# just created needs no lookup at all; a link with a `relation:` property rides in the body.
FOUND_BY_MARKER = frozenset(MARKED_TEXT)
LINKS_IN_BODY = frozenset({"pipedrive"})


def _separate_links(mapping: Mapping, o: ObjectMapping) -> bool:
    if not o.associations or mapping.connector not in SEPARATE_ASSOCIATIONS:
        return False
    if mapping.connector not in LINKS_IN_BODY:
        return True
    related = {spec.relation for spec in o.properties.values()}
    return any(a.to not in related for a in o.associations)


def estimate_calls(mapping: Mapping, written: Mapping_[str, int], new: Mapping_[str, int]) -> int:
    """The fewest calls that write `written` records per object, `new` of them never seen: the
    lower bound a sync is measured against (and the dry run's estimate)."""
    size = BATCH_MAX[mapping.connector]
    total = 0
    for o in mapping.objects:
        n = written.get(o.name, 0)
        total += math.ceil(n / size)
        if mapping.connector in SEARCH_BEFORE_CREATE and o.crm_object not in FOUND_BY_MARKER:
            total += new.get(o.name, 0)
        if _separate_links(mapping, o):
            total += math.ceil(n / size)
    return total


@dataclass
class DryRun:
    patients: int = 0
    new: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # same data the CRM refused before
    conversions: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def calls(self, mapping: Mapping) -> int:
        written = {o.name: self.new[o.name] + self.changed[o.name] for o in mapping.objects}
        return estimate_calls(mapping, written, self.new) + math.ceil(self.conversions / 100)


def redacted(mapping: Mapping, d: DesiredRecord) -> dict[str, Any]:
    spec = mapping.object(d.object).properties
    return {
        name: REDACTED
        if spec[name].field is not None and FIELDS[spec[name].field or ""].is_identifying
        else value
        for name, value in d.properties.items()
    }


def _patients(conn: Connection, mapping: Mapping, everyone: bool) -> Iterator[list[str]]:
    if everyone:
        query = select(profiles.c.patient_key).where(profiles.c.patient_id.is_not(None))
    else:
        query = select(sync_dirty.c.patient_key).where(
            sync_dirty.c.destination == mapping.destination
        )
    keys = [k for (k,) in conn.execute(query.order_by(query.selected_columns[0]))]
    for start in range(0, len(keys), 500):
        yield keys[start : start + 500]


def dry_run(
    engine: Engine, cipher: FieldCipher, mapping: Mapping, *, everyone: bool, samples: int = 5
) -> DryRun:
    result = DryRun()
    with read_only(engine).connect() as conn:
        for keys in _patients(conn, mapping, everyone):
            known = load_known(conn, mapping.destination, keys)
            rows = conn.execute(profile_rows().where(profiles.c.patient_key.in_(keys)))
            for row in rows:
                result.patients += 1
                for d in desired_records(decode(row, cipher).profile, mapping):
                    k = known.get((d.object, d.key))
                    if k is None or (k.crm_id is None and k.state != "rejected"):
                        result.new[d.object] += 1
                        o = mapping.object(d.object)
                        lead = known.get((o.converts_from or "", d.key))
                        if lead is not None and lead.state == "accepted" and lead.crm_id:
                            result.conversions += 1
                    elif k.accepted_hash == d.digest:
                        bucket = result.refused if k.state == "rejected" else result.unchanged
                        bucket[d.object] += 1
                        continue
                    else:
                        result.changed[d.object] += 1
                    if len(result.samples) < samples:
                        result.samples.append(
                            {
                                "object": d.object,
                                "crm_object": mapping.object(d.object).crm_object,
                                "key": d.key,
                                "properties": redacted(mapping, d),
                            }
                        )
    return result


@dataclass
class DestinationStatus:
    destination: str
    dirty: int
    due: int
    leased: int
    records: dict[str, dict[str, int]]  # object -> state -> count
    dead_letters: int
    calls: int
    refusals: int
    paused_until_us: int
    crm_usage: tuple[int, int] | None


def status_of(engine: Engine, mapping: Mapping, now_us: int) -> DestinationStatus:
    dest = mapping.destination
    with read_only(engine).connect() as conn:
        dirty, due, leased = conn.execute(
            select(
                func.count(),
                func.count().filter(sync_dirty.c.not_before_us <= now_us),
                func.count().filter(sync_dirty.c.lease_until_us > now_us),
            ).where(sync_dirty.c.destination == dest)
        ).one()
        records: dict[str, dict[str, int]] = {}
        for obj, state, n in conn.execute(
            select(sync_records.c.object, sync_records.c.state, func.count())
            .where(sync_records.c.destination == dest)
            .group_by(sync_records.c.object, sync_records.c.state)
        ):
            records.setdefault(obj, {})[state] = int(n)
        letters = conn.execute(
            select(func.count()).where(
                sync_dead_letters.c.destination == dest, sync_dead_letters.c.status == "open"
            )
        ).scalar_one()
        budget = conn.execute(select(rate_budgets).where(rate_budgets.c.account == dest)).first()
    return DestinationStatus(
        destination=dest,
        dirty=int(dirty),
        due=int(due),
        leased=int(leased),
        records=records,
        dead_letters=int(letters),
        calls=int(budget.calls) if budget else 0,
        refusals=int(budget.refusals) if budget else 0,
        paused_until_us=int(budget.paused_until_us) if budget else 0,
        crm_usage=(int(budget.crm_used), int(budget.crm_max))
        if budget is not None and budget.crm_used is not None
        else None,
    )
