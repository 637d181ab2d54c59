"""Health engagement score, 0-100: usage, communication, consultations and adherence, time-decayed.

Each component is a share in [0, 1]; the score is 100 x their weighted mean (weights in
config/scoring.yaml). Counts decay with a half-life (30 days by default, research/analytics.md
§4.3) and saturate as 1 - exp(-x / scale), so the first few recent actions count most:

- usage: sessions (decayed) and the number of features used;
- communication: opens, clicks and replies per delivered email or text (decayed), steadied by a
  prior of a few imagined messages; opens weigh less than clicks (scanners inflate them, §6.6);
- consultation: consultations submitted (decayed);
- adherence: the mean PDC of the patient's medications; a patient with none measured has no
  adherence component and the other weights are scaled up to fill its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from telecrm.analytics.event_table import EventTable, FloatArray
from telecrm.analytics.scoring_config import EngagementConfig
from telecrm.domain.clock import to_micros

COMPONENTS = ("usage", "communication", "consultation", "adherence")
DELIVERED = ("email.delivered", "sms.delivered")


@dataclass(frozen=True, slots=True)
class EngagementScores:
    score: FloatArray  # 0-100 per patient
    components: dict[str, FloatArray]  # each 0-1; adherence NaN where not measured

    def for_patient(self, i: int) -> tuple[float, dict[str, float | None]]:
        parts = {
            name: (None if np.isnan(v[i]) else float(v[i])) for name, v in self.components.items()
        }
        return float(self.score[i]), parts


def _saturate(x: FloatArray, scale: float) -> FloatArray:
    return -np.expm1(-np.maximum(x, 0.0) / scale)


def engagement_scores(
    config: EngagementConfig,
    events: EventTable,
    now: datetime,
    *,
    features_used: Sequence[int] | None = None,
    adherence: Sequence[float] | None = None,
) -> EngagementScores:
    """Every patient's engagement score. `features_used`: distinct features per patient;
    `adherence`: mean PDC per patient, NaN where none was measured."""
    n, now_us, h = events.patients, to_micros(now), config.half_life_days

    def decayed(event_type: str) -> FloatArray:
        return events.decayed_counts(event_type, now_us, h)

    features = np.zeros(n) if features_used is None else np.asarray(features_used, dtype=float)
    usage = (1 - config.features_share) * _saturate(
        decayed("session.tracked"), config.sessions_scale
    ) + config.features_share * _saturate(features, config.features_scale)
    engaged = (
        config.open_weight * decayed("email.opened")
        + config.click_weight * decayed("email.clicked")
        + config.reply_weight * decayed("sms.replied")
    )
    delivered = sum((decayed(t) for t in DELIVERED), np.zeros(n))
    rate = (engaged + config.prior_rate * config.prior_messages) / np.maximum(
        delivered + config.prior_messages, 1e-9
    )
    communication = _saturate(rate, config.communication_scale)
    consultation = _saturate(decayed("consultation.submitted"), config.consultation_scale)
    pdc = np.full(n, np.nan) if adherence is None else np.clip(np.asarray(adherence, float), 0, 1)
    w = config.weights
    measured = ~np.isnan(pdc)
    total = w.usage * usage + w.communication * communication + w.consultation * consultation
    total = total + np.where(measured, w.adherence * np.nan_to_num(pdc), 0.0)
    weight = w.usage + w.communication + w.consultation + np.where(measured, w.adherence, 0.0)
    score = np.clip(100.0 * total / weight, 0.0, 100.0)
    return EngagementScores(
        score,
        {
            "usage": usage,
            "communication": communication,
            "consultation": consultation,
            "adherence": pdc,
        },
    )


def engagement_score(
    config: EngagementConfig,
    events: Sequence[tuple[str, datetime]],
    now: datetime,
    *,
    features_used: int = 0,
    adherence: float | None = None,
) -> tuple[float, dict[str, Any]]:
    """One patient's score and components from their (event type, occurred_at) pairs."""
    result = engagement_scores(
        config,
        EventTable.for_one(events),
        now,
        features_used=[features_used],
        adherence=[np.nan if adherence is None else adherence],
    )
    return result.for_patient(0)
