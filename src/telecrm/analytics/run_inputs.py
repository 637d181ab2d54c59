"""What `analytics run` reads, as columns over every live patient, so the next run re-reads only
the patients whose history changed.

A run needs, per live patient: the lead rules' profile fields, how many features they used, the
numbers they hold now, their events of the scored types, their fills, and (customers only) the
purchase history the value and churn models read. `read_inputs` reads that for a list of
patients with the same queries the per-chunk scoring uses (`patient_scores`, `fills`,
`event_arrays`), and `combine` lays a fresh read for the changed patients over the previous run's
columns. Both put rows in one canonical order, so a patient's columns are the same bytes however
they were read: scores from combined inputs equal scores from a full read (tested).

Everything here is keyed by patient index into `keys` (sorted). Profile values are kept as codes
into a book of distinct values, so a million patients' states and birth dates are a few arrays.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from sqlalchemy import Connection

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.adherence import day_number
from telecrm.analytics.event_table import EventTable
from telecrm.analytics.fills import fills_for
from telecrm.analytics.patient_scores import (
    ENGAGEMENT_EVENTS,
    ProfilesRead,
    event_table_for,
    read_profiles,
)
from telecrm.analytics.scoring_config import ScoringConfig
from telecrm.profiles.codec import SCORED_PHI
from telecrm.security.audit import AuditEntry, append_audit
from telecrm.security.envelope import FieldCipher

# Bump when the columns change: older stored inputs are then read again, not loaded.
# 2: every read bounded by the frontier (format 1 could hold events above it).
FORMAT = 2
SCORE_FIELDS = ("lead_score", "engagement_score", "churn_risk", "predicted_ltv", "adherence_pdc")
IntArray = npt.NDArray[np.int64]


def fingerprint(config: ScoringConfig) -> str:
    """What the stored columns depend on: the event types and profile fields the rules read.
    (Points, half-lives and weights apply when scoring, so changing them reads nothing again.)"""
    types = scored_types(config)
    return orjson.dumps(
        {"format": FORMAT, "types": types, "fields": sorted(config.lead.profile_fields())}
    ).decode()


def scored_types(config: ScoringConfig) -> list[str]:
    """The event types the lead and engagement scores count."""
    return sorted({r.event for r in config.lead.behaviour} | set(ENGAGEMENT_EVENTS))


def _book_key(value: Any) -> Any:
    if type(value) is str:  # most values (dates, states): the string itself, never equal to
        return value  # the tuples below
    if value is None or isinstance(value, str | int | float | bool):
        return (type(value).__name__, value)
    return ("json", orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


@dataclass(slots=True)
class Codes:
    """A column of profile values as int codes into `book` (its distinct values)."""

    codes: IntArray
    book: list[Any]

    @classmethod
    def of(cls, values: Iterable[Any]) -> Codes:
        index: dict[Any, int] = {}
        book: list[Any] = []
        codes = []
        for v in values:
            k = _book_key(v)
            c = index.get(k)
            if c is None:
                c = index[k] = len(book)
                book.append(v)
            codes.append(c)
        return cls(np.asarray(codes, dtype=np.int64), book)

    def values(self) -> list[Any]:
        book = self.book
        return [book[c] for c in self.codes.tolist()]

    @classmethod
    def join(cls, parts: Sequence[tuple[Codes, IntArray]], n: int) -> Codes:
        """Patients `at[i]` of the result take part i's codes (books merged)."""
        index: dict[Any, int] = {}
        book: list[Any] = []
        codes = np.zeros(n, dtype=np.int64)
        for part, at in parts:
            remap = np.empty(len(part.book), dtype=np.int64)
            for j, v in enumerate(part.book):
                k = _book_key(v)
                c = index.get(k)
                if c is None:
                    c = index[k] = len(book)
                    book.append(v)
                remap[j] = c
            codes[at] = remap[part.codes] if part.codes.size else part.codes
        return cls(codes, book)


@dataclass(slots=True)
class RunInputs:
    """Column i of every per-patient array is `keys[i]` (sorted); rows point at patients."""

    keys: list[str]
    patient_ids: list[str]
    fit: dict[str, Codes]  # the lead rules' profile fields
    features_used: IntArray
    held: npt.NDArray[np.float64]  # (patients, 5): the numbers written last, NaN where none
    events: EventTable  # the scored event types
    fill_patient: IntArray
    fill_medication: IntArray  # codes into `medications` (PHI: sealed with the rest)
    fill_day: IntArray
    fill_supply: IntArray
    medications: list[str]
    log: ea.EventArrays  # the customers' purchase history (value and churn models)
    recheck: list[str] = field(default_factory=list)  # profiles not yet folded when read

    @property
    def patients(self) -> int:
        return len(self.keys)

    def fit_columns(self) -> dict[str, list[Any]]:
        return {name: codes.values() for name, codes in self.fit.items()}


def _held_of(read: ProfilesRead, key: str) -> list[float]:
    facts, values = read.facts[key], read.values[key]
    out = [facts.get(n) for n in SCORE_FIELDS[:4]] + [values.get(SCORED_PHI)]
    return [float("nan") if v is None else float(v) for v in out]


def read_inputs(
    conn: Connection,
    cipher: FieldCipher,
    keys: Sequence[str],
    config: ScoringConfig,
    *,
    actor: str,
    purpose: str,
    at_us: int,
    upto: int | None = None,
    events_of: Collection[str] | None = None,
    fills_of: Collection[str] | None = None,
    log_of: Collection[str] | None = None,
) -> RunInputs:
    """The inputs of `keys` (sorted) from the store; profiles gone since they were listed are
    left out. `upto`: only events with a seq at or below it. `events_of`, `fills_of`, `log_of`:
    whose scored events, fills and purchase history to read (None: everyone's; the others are
    left empty, for `combine` to take from elsewhere). Audited like the chunked scoring: the
    sealed fields and prescriptions read."""
    lead = config.lead
    read = read_profiles(conn, cipher, keys, lead.profile_fields() | {SCORED_PHI})
    keys = [k for k in keys if read.patient_ids.get(k)]
    values = [read.values[k] for k in keys]

    def subset(wanted: Collection[str] | None) -> list[str]:
        return list(keys) if wanted is None else [k for k in keys if k in wanted]

    with_events = subset(events_of)
    events = event_table_for(conn, with_events, scored_types(config), upto=upto)
    at = ea.locate(keys, with_events)
    events = _canonical_events(
        EventTable(len(keys), at[events.patient], events.type_code, events.occurred_us)
    )
    fill_keys = subset(fills_of)
    fills = fills_for(conn, cipher, fill_keys, upto=upto)
    medications: dict[str, int] = {}
    p_col, m_col, d_col, s_col = [], [], [], []
    for i, key in enumerate(keys):
        for f in fills.get(key, ()):
            p_col.append(i)
            m_col.append(medications.setdefault(f.medication, len(medications)))
            d_col.append(day_number(f.filled_on))
            s_col.append(f.days_supply)
    sealed = sorted(read.sealed_read - {SCORED_PHI})
    entries = []
    if keys:
        entries.append(AuditEntry(actor, "read", "profile", keys, sealed, purpose))
    if fill_keys:
        entries.append(
            AuditEntry(
                actor, "read", "prescription", fill_keys, ["medication", "days_supply"], purpose
            )
        )
    if entries:
        append_audit(conn, entries, at_us=at_us)
    log_keys = subset(log_of)
    log = ea.from_connection(conn, cipher, keys=log_keys, upto=upto) if log_keys else ea.empty()
    return RunInputs(
        keys=list(keys),
        patient_ids=[str(read.patient_ids[k]) for k in keys],
        fit={name: Codes.of(v.get(name) for v in values) for name in lead.profile_fields()},
        features_used=np.asarray(
            [len(v.get("features_used") or []) for v in values], dtype=np.int64
        ),
        held=np.asarray([_held_of(read, k) for k in keys], dtype=np.float64).reshape(-1, 5),
        events=events,
        fill_patient=np.asarray(p_col, dtype=np.int64),
        fill_medication=np.asarray(m_col, dtype=np.int64),
        fill_day=np.asarray(d_col, dtype=np.int64),
        fill_supply=np.asarray(s_col, dtype=np.int64),
        medications=list(medications),
        log=ea.canonical(log),
    )


def _canonical_events(table: EventTable) -> EventTable:
    """Rows by (patient, type, time). Patient and type packed in one key: two sort passes
    instead of three (type codes are below 64; patients below 2**56)."""
    packed = table.patient * 64 + table.type_code
    order = np.lexsort((table.occurred_us, packed))
    return EventTable(
        table.patients, table.patient[order], table.type_code[order], table.occurred_us[order]
    )


Selection = Sequence[str] | npt.NDArray[np.bool_]  # patient keys, or a mask over the part's


@dataclass(frozen=True, slots=True)
class Take:
    """What `combine` takes from one part: the per-patient columns (profile fields, features,
    held numbers, ids) of `columns` (each patient's from exactly one part), and the scored
    events, fills and purchase history of `events`, `fills`, `log` (a patient's rows from
    every part that names them: the kept rows plus the ones logged since). Each is a list of
    patient keys or a boolean mask over the part's patients (cheaper for a large part)."""

    inputs: RunInputs
    columns: Selection
    events: Selection = ()
    fills: Selection = ()
    log: Selection = ()

    @classmethod
    def whole(cls, inputs: RunInputs, keys: Sequence[str]) -> Take:
        return cls(inputs, keys, keys, keys, keys)


def _chosen(part_keys: np.ndarray, selection: Selection) -> IntArray:
    """The part's patient indices a selection names (sorted)."""
    if isinstance(selection, np.ndarray) and selection.dtype == np.bool_:
        return np.flatnonzero(selection).astype(np.int64)
    at = ea.locate(part_keys, selection)
    return np.sort(at[at >= 0])


def _moved(chosen: IntArray, to_new: IntArray) -> IntArray:
    """Part index -> combined index for the `chosen` patients, -1 for the rest."""
    new_of = np.full(to_new.size, -1, dtype=np.int64)
    new_of[chosen] = to_new[chosen]
    return new_of


def combine(takes: Sequence[Take], log: ea.EventArrays | None = None) -> RunInputs:
    """One set of inputs from parts (`Take`); `log`: the customers' history when read apart
    (a full read), else the parts'."""
    part_keys = [np.asarray(t.inputs.keys, dtype=str) for t in takes]
    columns = [_chosen(pk, t.columns) for pk, t in zip(part_keys, takes, strict=True)]
    keys_arr = np.sort(
        np.concatenate([pk[c] for pk, c in zip(part_keys, columns, strict=True)])
        if takes
        else np.zeros(0, dtype=str)
    )
    keys: list[str] = keys_arr.tolist()
    n = len(keys)
    patient_ids = np.empty(n, dtype=object)
    features = np.zeros(n, dtype=np.int64)
    held = np.full((n, 5), np.nan)
    ev_p, ev_t, ev_us = [], [], []
    fp, fm, fd, fs = [], [], [], []
    medications: dict[str, int] = {}
    fit_parts: dict[str, list[tuple[Codes, IntArray]]] = {}
    recheck: list[str] = []
    logs: list[tuple[ea.EventArrays, Sequence[str] | np.ndarray]] = []
    for take, pk, src in zip(takes, part_keys, columns, strict=True):
        part = take.inputs
        to_new = ea.locate(keys_arr, pk)  # part index -> combined index, -1 if not there
        dst = to_new[src]
        patient_ids[dst] = np.asarray(part.patient_ids, dtype=object)[src]
        features[dst] = part.features_used[src]
        held[dst] = part.held[src]
        for name, codes in part.fit.items():
            fit_parts.setdefault(name, []).append((Codes(codes.codes[src], codes.book), dst))
        if len(take.events):
            moved = _moved(_chosen(pk, take.events), to_new)[part.events.patient]
            keep = moved >= 0
            ev_p.append(moved[keep])
            ev_t.append(part.events.type_code[keep])
            ev_us.append(part.events.occurred_us[keep])
        if len(take.fills):
            moved = _moved(_chosen(pk, take.fills), to_new)[part.fill_patient]
            keep = moved >= 0
            remap = np.asarray(
                [medications.setdefault(m, len(medications)) for m in part.medications],
                dtype=np.int64,
            )
            fp.append(moved[keep])
            fm.append(
                remap[part.fill_medication[keep]] if keep.any() else part.fill_medication[keep]
            )
            fd.append(part.fill_day[keep])
            fs.append(part.fill_supply[keep])
        if len(take.log):
            logs.append((part.log, pk[_chosen(pk, take.log)]))
        if part.recheck and src.size:
            at = ea.locate(pk, part.recheck)
            taken = np.zeros(part.patients, dtype=np.bool_)
            taken[src] = True
            recheck.extend(
                k for k, i in zip(part.recheck, at.tolist(), strict=True) if i >= 0 and taken[i]
            )
    cat = np.concatenate
    events = _canonical_events(
        EventTable(
            n,
            cat(ev_p) if ev_p else _none(),
            cat(ev_t) if ev_t else _none(),
            cat(ev_us) if ev_us else _none(),
        )
    )
    if log is None:
        log = ea.join(logs)
    return RunInputs(
        keys=keys,
        patient_ids=patient_ids.tolist(),
        fit={name: Codes.join(ps, n) for name, ps in fit_parts.items()},
        features_used=features,
        held=held,
        events=events,
        fill_patient=cat(fp) if fp else _none(),
        fill_medication=cat(fm) if fm else _none(),
        fill_day=cat(fd) if fd else _none(),
        fill_supply=cat(fs) if fs else _none(),
        medications=list(medications),
        log=ea.canonical(log),
        recheck=sorted(set(recheck)),
    )


def _none() -> IntArray:
    return np.zeros(0, dtype=np.int64)
