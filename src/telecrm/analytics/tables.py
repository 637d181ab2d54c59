"""Analytics' own table: the population models a run fitted, kept for the runs after it."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, LargeBinary, String, Table, Text

from telecrm.store.metadata import metadata

# One row per fit (`analytics run` fits when the newest is a week old, or with --refit). The
# models are pickled and sealed with AES-256-GCM under the data key: tamper-evident, and never
# unpickled unless they open. They hold parameters and tree thresholds, no patient's data.
analytics_models = Table(
    "analytics_models",
    metadata,
    Column("model_id", String(40), primary_key=True),
    Column("fitted_us", BigInteger, nullable=False, index=True),
    Column("cutoff_days", Float, nullable=False),  # the end of the history the fit saw
    Column("summary", Text, nullable=False),  # JSON: notes, counts, fit seconds, library versions
    Column("sealed", LargeBinary, nullable=False),
)

# What the last `analytics run` read, kept for the next one (`analytics/run_inputs.py`): every
# live patient's scored events, fills, the lead rules' profile fields, the customers' history and
# the numbers written, as columns, pickled and sealed under the data key (it holds PHI: dates of
# birth, medications, amounts). One row; `frontier` is the event seq up to which it has seen the
# log. An erasure, a retention run and a projection rebuild delete it; the next run reads again.
analytics_inputs = Table(
    "analytics_inputs",
    metadata,
    Column("inputs_id", String(40), primary_key=True),
    Column("built_us", BigInteger, nullable=False),
    Column("frontier", BigInteger, nullable=False),
    Column("summary", Text, nullable=False),  # JSON: format, config fingerprint, counts, complete
    Column("sealed", LargeBinary, nullable=False),
)
