"""TELECRM_LOG_LEVEL is case-insensitive: `warning` configures logging as `WARNING` does
(it raised inside logging before, so `telecrm serve` did not start)."""

from __future__ import annotations

import io

import orjson
import structlog

from telecrm.observability.logs import configure_logging


def test_a_lowercase_level_filters_like_the_uppercase_one() -> None:
    stream = io.StringIO()
    try:
        configure_logging("warning", stream=stream)
        log = structlog.get_logger("telecrm.test")
        log.info("hidden")
        log.warning("shown")
    finally:
        configure_logging("WARNING")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["shown"]
