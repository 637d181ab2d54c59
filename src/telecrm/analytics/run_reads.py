"""How `analytics run` gets its inputs: everyone read from the store, or the kept columns plus
what was logged since.

Every read is bounded by the log's frontier (`upto`: events with a seq at or below it), so the
kept columns hold exactly the events up to the frontier they are kept with. The next run then
adds the events logged since (one query over that seq range, `read_delta`) to the kept rows,
instead of reading the touched patients' whole histories again:

- profile columns (lead-rule fields, features used, the numbers held) are read again for the
  patients with an event since, those not yet folded when read (`recheck`) and new patients;
- scored events and the customers' purchase history: the kept rows plus the new ones;
- fills are re-read whole for a patient with a prescription or paid order since (a late
  prescription can change which medication earlier orders dispensed), and the purchase history
  whole for a patient who became a customer since;
- patients new to the live set are read whole.

Erasure, retention and rebuild delete the kept inputs, so a history that shrank or changed is
always read again (`inputs_store`). Combined inputs equal a full read at the same frontier,
column for column (tests/analytics/test_run_inputs.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine, select

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.event_table import EventTable
from telecrm.analytics.fills import FILL_EVENTS
from telecrm.analytics.inputs_store import StoredInputs
from telecrm.analytics.run_inputs import RunInputs, Take, combine, read_inputs, scored_types
from telecrm.analytics.scoring_config import ScoringConfig
from telecrm.ingest.tables import events
from telecrm.security.envelope import FieldCipher
from telecrm.security.shredding import open_payload, with_salts

Progress = Callable[[str, int, int], None]  # (what, done, of)


@dataclass(frozen=True, slots=True)
class Delta:
    """The events logged in a seq range, as rows to add to kept columns."""

    changed: set[str]  # patient keys with any event in the range
    inputs: RunInputs  # only `events` and `log` filled: the new rows of the wanted patients
    fills_touched: set[str]  # patients with a prescription or paid order in the range
    bought: set[str]  # patients with an order or a subscription started in the range
    events: int  # events in the range


def _placeholder(keys: list[str], events: EventTable, log: ea.EventArrays) -> RunInputs:
    n = len(keys)
    return RunInputs(
        keys=keys,
        patient_ids=[""] * n,
        fit={},
        features_used=np.zeros(n, dtype=np.int64),
        held=np.full((n, 5), np.nan),
        events=events,
        fill_patient=np.zeros(0, dtype=np.int64),
        fill_medication=np.zeros(0, dtype=np.int64),
        fill_day=np.zeros(0, dtype=np.int64),
        fill_supply=np.zeros(0, dtype=np.int64),
        medications=[],
        log=log,
    )


def read_delta(
    conn: Connection,
    cipher: FieldCipher,
    config: ScoringConfig,
    *,
    after: int,
    upto: int,
    wanted: Collection[str],
    in_log: Collection[str],
) -> Delta:
    """Events with `after` < seq <= `upto`: the scored ones of `wanted` patients, and the
    purchase-history ones of `in_log` patients (payloads opened for those only)."""
    query = with_salts(
        select(
            events.c.type,
            events.c.patient_key,
            events.c.patient_id,
            events.c.occurred_us,
            events.c.event_id,
            events.c.payload,
        )
    ).where(events.c.seq > after, events.c.seq <= upto)
    scored = set(scored_types(config))
    history = set(ea.READ_TYPES)
    changed: set[str] = set()
    fills_touched: set[str] = set()
    bought: set[str] = set()
    table_rows: list[tuple[str, str, int]] = []
    log_rows: list[tuple[str, str, float, dict[str, object] | None]] = []
    count = 0
    for row in conn.execute(query):
        count += 1
        key, type_ = row.patient_key, row.type
        changed.add(key)
        if type_ in FILL_EVENTS:
            fills_touched.add(key)
        if type_ in ea.CUSTOMER_TYPES and row.patient_id is not None:
            bought.add(key)
        if type_ in scored and key in wanted:
            table_rows.append((key, type_, row.occurred_us))
        if type_ in history and row.patient_id is not None and key in in_log:
            data = None
            if type_ in ea.PAYLOAD_TYPES:
                data = open_payload(cipher, row)
                if data is None:  # an erased patient's event: left out, as a full read does
                    continue
            log_rows.append((type_, key, row.occurred_us / ea.DAY_US, data))
    keys = sorted({k for k, _, _ in table_rows} | {k for _, k, _, _ in log_rows})
    position = {k: i for i, k in enumerate(keys)}
    table = EventTable.from_rows(len(keys), ((position[k], t, us) for k, t, us in table_rows))
    return Delta(
        changed, _placeholder(keys, table, ea.build(log_rows)), fills_touched, bought, count
    )


@dataclass(frozen=True, slots=True)
class Gathered:
    inputs: RunInputs
    read: list[str]  # patients whose profile columns were read from the store
    logged_since: int  # events added to kept columns (0 for a full read)


class InputsReader:
    """Reads a run's inputs in chunks of patients, each chunk in its own audited transaction."""

    def __init__(
        self,
        engine: Engine,
        cipher: FieldCipher,
        config: ScoringConfig,
        *,
        actor: str,
        purpose: str,
        at_us: int,
        chunk: int,
        on_progress: Progress | None,
    ) -> None:
        self._engine, self._cipher, self._config = engine, cipher, config
        self._actor, self._purpose, self._at_us = actor, purpose, at_us
        self._chunk, self._on_progress = chunk, on_progress
        self._done = 0
        self._total = 0

    def everyone(self, live: list[str], upto: int | None) -> Gathered:
        """Every live patient read whole (`upto` None: every event visible now)."""
        self._total = len(live)
        parts = self._read(live, upto, log_of=())
        with self._engine.connect() as conn:
            whole = ea.from_connection(conn, self._cipher, customers_only=True, upto=upto)
        inputs = combine([Take.whole(p, p.keys) for p in parts], log=ea.join([(whole, live)]))
        return Gathered(inputs, list(live), 0)

    def since(self, live: list[str], stored: StoredInputs, upto: int) -> Gathered:
        """The kept columns of `stored`, with the events logged up to `upto` added."""
        old = stored.inputs
        old_keys = np.asarray(old.keys, dtype=str)
        known_mask = ea.locate(np.asarray(live, dtype=str), old_keys) >= 0
        known_set = set(old_keys[known_mask].tolist())
        new = [k for k in live if k not in known_set]
        in_log = {k for k in old.log.keys.tolist() if k in known_set}
        with self._engine.connect() as conn:
            delta = read_delta(
                conn,
                self._cipher,
                self._config,
                after=stored.frontier,
                upto=upto,
                wanted=known_set,
                in_log=in_log,
            )
        again = sorted((delta.changed | set(old.recheck)) & known_set)
        again_set = set(again)
        fills_again = delta.fills_touched & again_set
        log_again = (delta.bought & again_set) - in_log
        self._total = len(new) + len(again)
        takes = [Take.whole(p, p.keys) for p in self._read(new, upto)]
        for p in self._read(again, upto, events_of=(), fills_of=fills_again, log_of=log_again):
            fills = [k for k in p.keys if k in fills_again]
            takes.append(Take(p, p.keys, fills=fills, log=[k for k in p.keys if k in log_again]))

        def among_old(keys: Collection[str]) -> npt.NDArray[np.bool_]:
            return ea.locate(np.asarray(sorted(keys), dtype=str), old_keys) >= 0

        takes.append(
            Take(
                old,
                known_mask & ~among_old(again_set),
                events=known_mask,
                fills=known_mask & ~among_old(fills_again),
                log=known_mask & among_old(in_log),
            )
        )
        added = delta.inputs
        logged = [k for k in added.keys if k in in_log]
        takes.append(Take(added, (), events=added.keys, log=logged))
        return Gathered(combine(takes), [*new, *again], delta.events)

    def _read(
        self,
        keys: Sequence[str],
        upto: int | None,
        *,
        events_of: Collection[str] | None = None,
        fills_of: Collection[str] | None = None,
        log_of: Collection[str] | None = None,
    ) -> list[RunInputs]:
        parts: list[RunInputs] = []
        for start in range(0, len(keys), self._chunk):
            with self._engine.begin() as conn:
                parts.append(
                    read_inputs(
                        conn,
                        self._cipher,
                        keys[start : start + self._chunk],
                        self._config,
                        actor=self._actor,
                        purpose=self._purpose,
                        at_us=self._at_us,
                        upto=upto,
                        events_of=events_of,
                        fills_of=fills_of,
                        log_of=log_of,
                    )
                )
            self._done += min(self._chunk, len(keys) - start)
            if self._on_progress is not None:
                self._on_progress("reading patients from the store", self._done, self._total)
        return parts
