"""Geographic trends: patients, consultation-funnel conversion and paid orders per US state.

`state` is a sealed catalog field (location, PII), so it is decrypted one field at a time, only
to be counted, and the read is audited. Nothing leaves here but aggregates: states with fewer
than MIN_CELL patients are pooled into one "other" row, and the tables print small counts as
"<5".
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, select

from telecrm.analytics.small_cells import MIN_CELL
from telecrm.domain.lifecycle import RANK, Stage
from telecrm.profiles.tables import profiles
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.envelope import FieldCipher

OTHER = "other"
NO_STATE = "(no state)"


@dataclass(slots=True)
class StateRow:
    state: str  # a two-letter code, OTHER (pooled small states) or NO_STATE
    patients: int = 0  # live identified patients
    consulted_entered: int = 0  # entered the consultation funnel (every identified patient)
    became_patients: int = 0  # reached the `patient` rung (prescription / treatment plan)
    customers: int = 0  # reached active_customer or beyond
    orders: int = 0  # paid orders, from the clear orders_count counter
    states_pooled: int = 1

    @property
    def conversion(self) -> float | None:
        return self.became_patients / self.consulted_entered if self.consulted_entered else None


def state_trends(
    conn: Connection, cipher: FieldCipher, *, actor: str, purpose: str, now_us: int
) -> list[StateRow]:
    """Per-state aggregates over live identified patients, largest first, small states pooled."""
    live = (
        profiles.c.merged_into.is_(None)
        & profiles.c.deleted.is_(False)
        & profiles.c.patient_id.is_not(None)
    )
    rows: dict[str, StateRow] = {}
    read: list[str] = []
    query = select(
        profiles.c.patient_key, profiles.c.max_rank, profiles.c.attributes, profiles.c.sealed
    ).where(live)
    for key, max_rank, attributes, sealed in conn.execute(query):
        token = orjson.loads(sealed).get("state")
        state = NO_STATE
        if token:
            read.append(key)
            value = cipher.decrypt_json(token, record_id=key, field="state")
            state = str(value).upper() if value else NO_STATE
        row = rows.setdefault(state, StateRow(state))
        row.patients += 1
        if max_rank >= RANK[Stage.VISITOR]:
            row.consulted_entered += 1
        row.became_patients += max_rank >= RANK[Stage.PATIENT]
        row.customers += max_rank >= RANK[Stage.ACTIVE_CUSTOMER]
        count = orjson.loads(attributes).get("values", {}).get("orders_count", 0)
        row.orders += int(count) if isinstance(count, int | float) else 0
    if read:
        append_audit(
            conn,
            [
                AuditEntry(
                    actor=actor,
                    action="read",
                    record_type="profile",
                    record_ids=read,
                    fields=["state"],
                    purpose=purpose[:200] or "geographic trends (aggregate)",
                )
            ],
            at_us=now_us,
        )
    return pool_small_states(list(rows.values()))


def pool_small_states(rows: list[StateRow]) -> list[StateRow]:
    """States with fewer than MIN_CELL patients become one OTHER row (itself shown last)."""
    big = [r for r in rows if r.patients >= MIN_CELL or r.state == NO_STATE]
    small = [r for r in rows if r.patients < MIN_CELL and r.state != NO_STATE]
    big.sort(key=lambda r: (-r.patients, r.state))
    if small:
        other = StateRow(OTHER, states_pooled=len(small))
        for r in small:
            other.patients += r.patients
            other.consulted_entered += r.consulted_entered
            other.became_patients += r.became_patients
            other.customers += r.customers
            other.orders += r.orders
        big.append(other)
    return big
