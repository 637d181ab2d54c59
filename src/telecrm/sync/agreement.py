"""The agreement check: does the CRM hold exactly what telecrm says it should, once each?

Reads every profile, plans its records with the mapping, and compares them with the records a
CRM (a sandbox's `/_sandbox/records/...`) holds: missing records, duplicates (two CRM records with
one external id) and records whose properties differ. Values are compared as the CRM stores them
(HubSpot keeps strings); relations are checked by the sandbox when it resolves them, except
Pipedrive's link fields (a deal's or note's `person_id`, a note's `deal_id`), whose CRM id is
checked to be the record our key names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profile_rows, profiles
from telecrm.security.envelope import FieldCipher
from telecrm.store.engine import read_only
from telecrm.sync.mapping import Mapping
from telecrm.sync.planner import desired_records


@dataclass
class Agreement:
    expected: int = 0
    matching: int = 0
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)  # "object key property" (never a value)
    crm_records: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.different)

    def summary(self) -> str:
        return (
            f"{self.matching}/{self.expected} records agree; missing {len(self.missing)}, "
            f"duplicated {len(self.duplicated)}, different {len(self.different)}"
        )


# Properties that hold the CRM id of another record, by connector: property -> its object.
LINKS = {"pipedrive": {"person_id": "persons", "deal_id": "deals", "org_id": "organizations"}}


def flatten(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """A CRM record as {property: value}: HubSpot nests them under `properties`."""
    if kind == "hubspot":
        return dict(record.get("properties") or {})
    return {k: v for k, v in record.items() if k != "attributes"}


def same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return True  # a relation: the CRM resolved it to an id when it accepted the record
    if actual is None:
        return expected is None or expected == ""
    if isinstance(expected, bool):
        return str(actual).lower() == str(expected).lower()
    if isinstance(expected, int | float):
        try:
            return abs(float(actual) - float(expected)) < 1e-6
        except (TypeError, ValueError):
            return False
    if isinstance(expected, str) and isinstance(actual, str) and "T" in expected[:11]:
        return actual[:19] == expected[:19]  # a datetime, in the CRM's own precision
    return str(actual) == str(expected)


def check_agreement(
    engine: Engine,
    cipher: FieldCipher,
    mapping: Mapping,
    crm_records: Callable[[str], Iterable[dict[str, Any]]],
    *,
    patients: set[str] | None = None,
) -> Agreement:
    """`patients`: only these patients' records are expected (a destination fed a subset)."""
    result = Agreement()
    held: dict[str, dict[str, list[dict[str, Any]]]] = {}
    keys_by_id: dict[str, dict[str, str]] = {}  # crm object -> CRM id -> our key
    for o in mapping.objects:
        index: dict[str, list[dict[str, Any]]] = {}
        for raw in crm_records(o.crm_object):
            row = flatten(mapping.connector, raw)
            if row.get("IsConverted") in (True, "true"):
                continue  # a converted Salesforce lead lives on as its contact
            key = row.get(o.id_property)
            result.crm_records += 1
            if key not in (None, ""):
                index.setdefault(str(key), []).append(row)
                if row.get("id") is not None:
                    keys_by_id.setdefault(o.crm_object, {})[str(row["id"])] = str(key)
        held[o.name] = index
    with read_only(engine).connect() as conn:
        for stored in conn.execute(profile_rows().where(profiles.c.patient_id.is_not(None))):
            if patients is not None and stored.patient_key not in patients:
                continue
            for d in desired_records(decode(stored, cipher).profile, mapping):
                result.expected += 1
                found = held[d.object].get(d.key, [])
                if not found:
                    result.missing.append(f"{d.object} {d.key}")
                    continue
                if len(found) > 1:
                    result.duplicated.append(f"{d.object} {d.key}")
                links = LINKS.get(mapping.connector, {})
                wrong = [
                    p
                    for p, v in d.properties.items()
                    if not (
                        linked_to(v, found[0].get(p), keys_by_id.get(links[p], {}))
                        if p in links and isinstance(v, dict | str)
                        else same(v, found[0].get(p))
                    )
                ]
                if wrong:
                    result.different.append(f"{d.object} {d.key} {','.join(sorted(wrong))}")
                else:
                    result.matching += 1
    return result


def linked_to(expected: dict[str, Any] | str, actual: Any, keys_by_id: dict[str, str]) -> bool:
    """A link (our key, or a relation {id field: key}) holds the CRM id of that very record."""
    key = next(iter(expected.values()), None) if isinstance(expected, dict) else expected
    return actual is not None and keys_by_id.get(str(actual)) == str(key)
