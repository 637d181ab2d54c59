"""`telecrm lifecycle rebuild`: throw the projection away and fold the whole event log again.

`projection_digest` hashes everything a user can see of the projection (stages, histories,
decrypted field values, facts), so a rebuild can prove it reproduced the same result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import orjson
from sqlalchemy import Engine, delete, insert, literal, select, update

from telecrm.analytics.tables import analytics_inputs
from telecrm.domain.clock import Clock, to_micros
from telecrm.ingest.tables import events, pending_patients
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profile_rows, profiles, stage_transitions
from telecrm.profiles.worker import BatchReport, ProfileWorker
from telecrm.security.envelope import FieldCipher
from telecrm.store.engine import read_only


def projection_digest(engine: Engine, cipher: FieldCipher) -> str:
    digest = hashlib.sha256()
    with read_only(engine).connect() as conn:
        for row in conn.execute(profile_rows().order_by(profiles.c.patient_key)).yield_per(2000):
            stored = decode(row, cipher)
            p = stored.profile
            digest.update(
                orjson.dumps(
                    [
                        p.patient_key,
                        p.stage.value if p.stage else None,
                        row.stage_since_us,
                        p.max_rank,
                        p.values,
                        p.facts.to_json(),
                        p.deleted,
                        stored.merged_into,
                        p.events_applied,
                    ],
                    option=orjson.OPT_SORT_KEYS,
                )
            )
        for t in conn.execute(
            select(
                stage_transitions.c.patient_key,
                stage_transitions.c.ordinal,
                stage_transitions.c.at_us,
                stage_transitions.c.from_stage,
                stage_transitions.c.to_stage,
                stage_transitions.c.reason,
                stage_transitions.c.event_id,
            ).order_by(stage_transitions.c.patient_key, stage_transitions.c.ordinal)
        ).yield_per(5000):
            digest.update(orjson.dumps(list(t)))
    return digest.hexdigest()


def rebuild_projection(
    engine: Engine,
    worker: ProfileWorker,
    clock: Clock,
    *,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> BatchReport:
    """Drop profiles and stage histories, mark every event unprocessed, and fold again."""
    now_us = to_micros(clock.now())
    with engine.begin() as conn:
        conn.execute(delete(stage_transitions))
        conn.execute(delete(profiles))
        conn.execute(delete(pending_patients))
        conn.execute(delete(analytics_inputs))  # profile fields may fold differently
        conn.execute(update(events).values(processed=False))
        conn.execute(
            insert(pending_patients).from_select(
                ["patient_key", "enqueued_us"],
                select(events.c.patient_key, literal(now_us)).distinct(),
            )
        )
    return worker.drain(on_batch=on_batch)
