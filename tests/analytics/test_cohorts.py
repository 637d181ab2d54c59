"""Cohort retention on hand-built purchase histories, the same from the store on both engines,
and the heat map as real PNG / SVG files."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from xml.etree import ElementTree

import numpy as np

from telecrm.analytics import event_arrays as ea
from telecrm.analytics.charts import cohort_heatmap
from telecrm.analytics.cohorts import retention_matrix
from telecrm.domain.events import parse_event
from tests.support.builders import customer_journey, event

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def d(month: int, day: int) -> float:
    return ea.to_days(datetime(2025, month, day, 12, tzinfo=UTC))


AS_OF = d(5, 1) - 0.5  # 2025-05-01 00:00: January to April have fully elapsed


def rows() -> list[tuple[str, str, float, dict]]:
    out: list[tuple[str, str, float, dict]] = [
        # p1: January cohort, buys again in February and April; subscribed January to 10 March.
        ("order.paid", "p1", d(1, 10), {"amount": 40.0}),
        ("subscription.started", "p1", d(1, 10), {"subscription_id": "s1", "amount": 40.0}),
        ("order.paid", "p1", d(2, 5), {"amount": 40.0, "recurring": True, "subscription_id": "s1"}),
        (
            "subscription.cancelled",
            "p1",
            d(2, 20),
            {"subscription_id": "s1", "ends_at": "2025-03-10T00:00:00+00:00"},
        ),
        ("order.paid", "p1", d(4, 20), {"amount": 25.0}),
        # p6: a zero-amount correction in February is not a purchase; the March order is.
        ("order.paid", "p6", d(2, 3), {"amount": 0.0}),
        ("order.paid", "p6", d(3, 1), {"amount": 30.0}),
        # p7: only a refund: never a customer.
        ("order.paid", "p7", d(1, 15), {"amount": -10.0}),
        # p8: ordered after as_of: not in any cohort yet.
        ("order.paid", "p8", d(5, 2), {"amount": 10.0}),
    ]
    for key in ("p2", "p3", "p4", "p5"):  # four one-off January buyers
        out.append(("order.paid", key, d(1, 20), {"amount": 15.0}))
    return out


def test_shares_still_purchasing_and_subscribed_match_the_hand_count() -> None:
    m = retention_matrix(ea.build(rows()), as_of_days=AS_OF)
    assert m.cohorts == ["2025-01", "2025-03"]
    assert m.sizes.tolist() == [5, 1]
    np.testing.assert_allclose(m.purchasing[0], [1.0, 0.2, 0.0, 0.2])
    np.testing.assert_allclose(m.subscribed[0], [0.2, 0.2, 0.2, 0.0])
    # March's single buyer is a small cell: suppressed, not shown.
    assert m.suppressed == ["2025-03"]
    assert np.isnan(m.purchasing[1]).all()


def test_months_not_yet_elapsed_are_not_observed_rather_than_zero() -> None:
    m = retention_matrix(ea.build(rows()), as_of_days=d(3, 15))  # only January and February done
    assert m.cohorts == ["2025-01"]
    np.testing.assert_allclose(m.purchasing[0], [1.0, 0.2])
    m_later = retention_matrix(ea.build(rows()), as_of_days=AS_OF)
    assert math.isnan(m_later.purchasing[0, 3]) is False


def test_no_orders_gives_an_empty_matrix_not_an_error() -> None:
    m = retention_matrix(ea.build([("session.tracked", "p1", d(1, 1), {})]), as_of_days=AS_OF)
    assert m.cohorts == [] and m.months == 0


def test_the_store_gives_the_same_matrix_as_the_raw_events(runtime, clock) -> None:
    start = datetime(2025, 1, 5, tzinfo=UTC)
    raw: list[dict] = []
    for i in range(6):
        raw += customer_journey(f"pat_{i}", start)
    raw.append(
        event(
            "order.paid",
            "pat_0",
            datetime(2025, 2, 9, tzinfo=UTC),
            {"order_id": "o2", "amount": 20.0},
        )
    )
    now = clock.now()
    runtime.intake().accept([parse_event(e, now=now) for e in raw], source="webhook", actor="t")
    stored = retention_matrix(ea.from_store(runtime.engine, runtime.cipher()), as_of_days=AS_OF)
    wire = retention_matrix(ea.from_wire(raw), as_of_days=AS_OF)
    assert stored.cohorts == wire.cohorts == ["2025-01"]
    np.testing.assert_allclose(stored.purchasing, wire.purchasing)
    np.testing.assert_allclose(stored.purchasing[0], [1.0, 1 / 6, 0.0, 0.0])


def test_the_heat_map_is_written_as_valid_png_and_svg(tmp_path) -> None:
    m = retention_matrix(ea.build(rows()), as_of_days=AS_OF)
    png, svg = cohort_heatmap(m, tmp_path)
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5_000
    assert ElementTree.parse(svg).getroot().tag.endswith("svg")  # noqa: S314 (our own file)
