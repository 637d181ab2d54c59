"""How a Profile becomes a row and back: clear facts and counters, sealed identifying fields."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection

from telecrm.domain.clock import from_micros, to_micros
from telecrm.domain.fields import FIELDS
from telecrm.domain.lifecycle import Stage, Thresholds, Transition, next_time_change
from telecrm.domain.profile import Facts, Profile
from telecrm.security.blind_index import BlindIndex
from telecrm.security.envelope import FieldCipher


@dataclass(slots=True)
class StoredProfile:
    """A profile as loaded, with what the row held, so unchanged sealed fields are not re-encrypted."""

    profile: Profile
    last_occurred_us: int | None = None
    last_seq: int | None = None
    transitions: int = 0
    linked_anon: list[str] = field(default_factory=list)
    sealed_tokens: dict[str, str] = field(default_factory=dict)
    sealed_plain: dict[str, Any] = field(default_factory=dict)
    merged_into: str | None = None
    # Encrypted fields left sealed by a partial decode: their tokens and the row's blind
    # indexes are written back as they were, unless the fold set the field.
    unloaded: frozenset[str] = frozenset()
    blind_indexes: tuple[str | None, str | None] = (None, None)


def _us(value: Any) -> int | None:
    return None if value is None else int(value)


def decode(
    row: Any, cipher: FieldCipher | None, *, only: frozenset[str] | None = None
) -> StoredProfile:
    """A row back into a profile; with `cipher=None` the sealed fields are left out (sweep).

    With `only`, just those encrypted fields are decrypted and the others stay as tokens
    (`unloaded`), written back untouched by `encode`; `unseal` decrypts them later if needed.
    """
    attrs = orjson.loads(row.attributes)
    p = Profile(row.patient_key)
    p.values = dict(attrs.get("values", {}))
    p.facts = Facts.from_json(attrs.get("facts", {}))
    p.stage = Stage(row.stage) if row.stage else None
    p.stage_since = from_micros(row.stage_since_us) if row.stage_since_us is not None else None
    p.max_rank = row.max_rank
    p.as_of = from_micros(row.as_of_us) if row.as_of_us is not None else None
    p.last_event_at = (
        from_micros(attrs["last_event_us"]) if attrs.get("last_event_us") is not None else None
    )
    p.deleted = bool(row.deleted)
    p.events_applied = row.events_applied
    p.records = attrs.get("records", {})
    stored = StoredProfile(
        p,
        last_occurred_us=_us(row.last_occurred_us),
        last_seq=_us(row.last_seq),
        transitions=int(attrs.get("transitions", 0)),
        linked_anon=list(attrs.get("linked_anon", [])),
        merged_into=row.merged_into,
    )
    if cipher is not None:
        stored.sealed_tokens = orjson.loads(row.sealed)
        if only is not None:
            stored.unloaded = frozenset(n for n in stored.sealed_tokens if n not in only)
            stored.blind_indexes = (row.email_bidx, row.phone_bidx)
        for name, token in stored.sealed_tokens.items():
            if name not in stored.unloaded:
                value = cipher.decrypt_json(token, record_id=row.patient_key, field=name)
                stored.sealed_plain[name] = value
                p.values[name] = value
    scores = getattr(row, "scores", None)  # selected by `tables.profile_rows()`
    if scores is not None:
        lay_scores(p, scores, cipher if only is None or SCORED_PHI in only else None)
    return stored


SCORED_FACTS = ("lead_score", "engagement_score", "churn_risk", "predicted_ltv")
SCORED_PHI = "adherence_pdc"  # sealed in the scores JSON as in a profile's `sealed`


def lay_scores(p: Profile, raw: str, cipher: FieldCipher | None) -> None:
    """The latest analytics run's numbers (`profile_scores.scores`) over the folded profile: they
    are newer than any `analytics.scored` event the fold saw. Without a cipher adherence stays
    as the fold left it (sealed fields are not loaded then)."""
    scores = orjson.loads(raw)
    facts = p.facts
    for name in SCORED_FACTS:
        setattr(facts, name, scores[name])
    facts.scored_at = from_micros(scores["scored_us"])
    token = scores[SCORED_PHI]
    if token is None:
        p.values.pop(SCORED_PHI, None)
    elif cipher is not None:
        p.values[SCORED_PHI] = cipher.decrypt_json(token, record_id=p.patient_key, field=SCORED_PHI)


def unseal(stored: StoredProfile, cipher: FieldCipher) -> None:
    """Decrypt the fields a partial `decode` left sealed (the fold needs the whole profile)."""
    p = stored.profile
    for name in sorted(stored.unloaded):
        value = cipher.decrypt_json(stored.sealed_tokens[name], record_id=p.patient_key, field=name)
        stored.sealed_plain[name] = value
        p.values.setdefault(name, value)
    stored.unloaded = frozenset()


def encode(
    stored: StoredProfile,
    *,
    cipher: FieldCipher | None,
    index: BlindIndex | None,
    thresholds: Thresholds,
    now_us: int,
) -> dict[str, Any]:
    """The row for a profile. With `cipher=None` the row's sealed columns are not part of it."""
    p = stored.profile
    clear: dict[str, Any] = {}
    sealed_plain: dict[str, Any] = {}
    for name, value in p.values.items():
        (sealed_plain if FIELDS[name].encrypted else clear)[name] = value
    attrs = {
        "values": clear,
        "facts": p.facts.to_json(),
        "transitions": stored.transitions,
        "linked_anon": stored.linked_anon,
        "last_event_us": to_micros(p.last_event_at) if p.last_event_at else None,
    }
    if p.records:
        attrs["records"] = p.records
    next_check = next_time_change(p, p.as_of, thresholds) if p.as_of is not None else None
    row: dict[str, Any] = {
        "patient_key": p.patient_key,
        "patient_id": None if p.patient_key.startswith("anon:") else p.patient_key,
        "stage": p.stage.value if p.stage else None,
        "stage_since_us": to_micros(p.stage_since) if p.stage_since else None,
        "max_rank": p.max_rank,
        "attributes": orjson.dumps(attrs, option=orjson.OPT_SORT_KEYS).decode(),
        "last_occurred_us": stored.last_occurred_us,
        "last_seq": stored.last_seq,
        "as_of_us": to_micros(p.as_of) if p.as_of else None,
        "next_check_us": to_micros(next_check) if next_check else None,
        "events_applied": p.events_applied,
        "deleted": p.deleted,
        "merged_into": stored.merged_into,
        "updated_us": now_us,
    }
    if cipher is not None:
        tokens: dict[str, str] = {
            name: stored.sealed_tokens[name]
            for name in stored.unloaded
            if name not in sealed_plain  # else the fold set it: sealed anew below
        }
        for name, value in sealed_plain.items():
            if name in stored.sealed_tokens and stored.sealed_plain.get(name) == value:
                tokens[name] = stored.sealed_tokens[name]
            else:
                tokens[name] = cipher.encrypt_json(value, record_id=p.patient_key, field=name)
        row["sealed"] = orjson.dumps(tokens, option=orjson.OPT_SORT_KEYS).decode()
        assert index is not None
        email, phone = sealed_plain.get("email"), sealed_plain.get("phone")
        row["email_bidx"] = index.email(email) if email else None
        row["phone_bidx"] = index.phone(phone) if phone else None
        kept_email, kept_phone = stored.blind_indexes
        if "email" in tokens and "email" not in sealed_plain:
            row["email_bidx"] = kept_email
        if "phone" in tokens and "phone" not in sealed_plain:
            row["phone_bidx"] = kept_phone
    return row


def sealed_field_names(row: dict[str, Any]) -> list[str]:
    return sorted(orjson.loads(row["sealed"])) if "sealed" in row else []


CipherProvider = Callable[[], FieldCipher]
# Called inside the transaction that wrote these profiles (patient keys, now in µs): how the sync
# planner marks patients dirty in the same commit without the projection importing sync.
ProfilesWritten = Callable[[Connection, list[str], int], None]
# Called in the projection's transaction with the triggers (TriggerFired) it just folded.
TriggersFired = Callable[[Connection, list[Any], int], None]
# Called in the projection's transaction with the events folded and stages entered (journeys).
ActivityFolded = Callable[[Connection, list[Any], int], None]


def transition_rows(key: str, start: int, history: Sequence[Transition]) -> list[dict[str, Any]]:
    return [
        {
            "patient_key": key,
            "ordinal": start + i,
            "at_us": to_micros(t.at),
            "from_stage": t.from_stage.value if t.from_stage else None,
            "to_stage": t.to_stage.value,
            "reason": t.reason,
            "event_id": t.event_id,
        }
        for i, t in enumerate(history)
    ]
