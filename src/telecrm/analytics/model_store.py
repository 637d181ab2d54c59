"""Stored population model fits: `analytics run` reuses the newest until it is a week old.

A fit (`population.PopulationModels`) is pickled and sealed with AES-256-GCM under the active
data key, the model id as its record id. Pickle runs code when it loads, so a stored fit is
unpickled only after it opens: a row altered by anyone without the data key is refused with
`StoredModelRejected`, before anything of it is read. A fit made with other versions of the
libraries whose objects it pickles, one from after the run's instant, one older than the allowed
age, and one where a model could not be fitted are not reused: the run fits again.
"""

from __future__ import annotations

import pickle
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import scipy
import sklearn
from sqlalchemy import Connection, delete, insert, select

from telecrm.analytics.population import PopulationModels
from telecrm.analytics.tables import analytics_models
from telecrm.domain.clock import from_micros, to_micros
from telecrm.security.envelope import FieldCipher
from telecrm.security.errors import DecryptionFailed, SecurityError, UnknownDataKey

MAX_MODEL_AGE = timedelta(days=7)
KEEP = 5  # fits kept: the newest and a few before it, for the record
FIELD = "analytics_models"


def library_versions() -> dict[str, str]:
    """What a pickled fit depends on; a fit from other versions is fitted again, not loaded."""
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
    }


class StoredModelRejected(SecurityError):
    def __init__(self, model_id: str) -> None:
        super().__init__(
            f"the stored analytics model {model_id} does not open: it was altered, or sealed "
            "under a data key this process does not hold; nothing was loaded from it. Run "
            "`telecrm analytics run --refit` to fit a new one"
        )


@dataclass(frozen=True, slots=True)
class StoredModels:
    model_id: str
    fitted_at: datetime
    summary: dict[str, Any]
    models: PopulationModels | None  # None: fitted with other library versions, not unpickled


def save_models(
    conn: Connection, cipher: FieldCipher, models: PopulationModels, now: datetime
) -> str:
    """Store a fit (in the caller's transaction) and keep only the newest KEEP; its id."""
    model_id = "fit_" + uuid.uuid4().hex[:12]
    summary = {
        "versions": library_versions(),
        "complete": models.complete,
        "ltv_note": models.ltv_note,
        "churn_note": models.churn_note,
        "fit_seconds": round(models.fit_seconds, 3),
        "buyers": None if models.clv is None else models.clv.buyers,
        "churn_training_rows": None if models.churn is None else models.churn.rows,
    }
    sealed = cipher.encrypt(
        pickle.dumps(models, protocol=pickle.HIGHEST_PROTOCOL), record_id=model_id, field=FIELD
    )
    conn.execute(
        insert(analytics_models).values(
            model_id=model_id,
            fitted_us=to_micros(now),
            cutoff_days=models.cutoff,
            summary=orjson.dumps(summary).decode(),
            sealed=sealed,
        )
    )
    kept = select(analytics_models.c.model_id).order_by(analytics_models.c.fitted_us.desc())
    kept_ids = list(conn.execute(kept.limit(KEEP)).scalars())
    conn.execute(delete(analytics_models).where(analytics_models.c.model_id.not_in(kept_ids)))
    return model_id


def latest_models(conn: Connection, cipher: FieldCipher) -> StoredModels | None:
    """The newest stored fit, opened (unless other library versions made it); None if none."""
    row = conn.execute(
        select(analytics_models).order_by(analytics_models.c.fitted_us.desc()).limit(1)
    ).first()
    if row is None:
        return None
    summary = orjson.loads(row.summary)
    fitted_at = from_micros(row.fitted_us)
    if summary.get("versions") != library_versions():
        return StoredModels(row.model_id, fitted_at, summary, None)
    try:
        raw = cipher.decrypt(bytes(row.sealed), record_id=row.model_id, field=FIELD)
    except (DecryptionFailed, UnknownDataKey):
        raise StoredModelRejected(row.model_id) from None
    models = pickle.loads(raw)  # noqa: S301 - authenticated above
    if not isinstance(models, PopulationModels):
        raise StoredModelRejected(row.model_id)
    return StoredModels(row.model_id, fitted_at, summary, models)


def list_models(conn: Connection) -> list[tuple[str, datetime, dict[str, Any]]]:
    """Every stored fit, newest first: id, when, summary (the sealed models are not opened)."""
    rows = conn.execute(
        select(
            analytics_models.c.model_id, analytics_models.c.fitted_us, analytics_models.c.summary
        ).order_by(analytics_models.c.fitted_us.desc())
    )
    return [(r.model_id, from_micros(r.fitted_us), orjson.loads(r.summary)) for r in rows]


def why_not_reused(
    summary: dict[str, Any], fitted_at: datetime, now: datetime, max_age: timedelta
) -> str | None:
    """Why a fit must not be used at `now` (the run then fits again), or None."""
    if summary.get("versions") != library_versions():
        return "it was fitted with other library versions"
    if fitted_at > now:
        return "it was fitted after this run's instant"
    if now - fitted_at >= max_age:
        return f"it is {(now - fitted_at).days} days old"
    if not summary.get("complete"):
        return "a model could not be fitted then"
    return None
