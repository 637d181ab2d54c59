"""Structured JSON logs (structlog). A last-line processor redacts any catalog field that slipped in.

Code logs ids, counts and reason codes only. The redactor is the seat belt: a key named like a
sealed catalog field (email, phone, first_name, conditions, ...) or a common identifier has its
value replaced, whatever the caller passed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from telecrm.domain.fields import encrypted_fields

REDACTED = "[redacted]"
_SENSITIVE_KEYS = encrypted_fields() | {
    "name",
    "body",
    "payload",
    "data",
    "address",
    "to",
    "from",
    "password",
    "secret",
    "token",
    "authorization",
}


def redact_sensitive(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in _SENSITIVE_KEYS:
            event_dict[key] = REDACTED
    return event_dict


class _CurrentStderr:
    """sys.stderr as it is when a line is written, not when logging was configured (a test
    runner or a CLI runner may swap it, and close the one it swapped in)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", *, stream: Any = None) -> None:
    level = level.upper()  # TELECRM_LOG_LEVEL=warning works as WARNING does
    stream = stream or _CurrentStderr()
    logging.basicConfig(format="%(message)s", stream=stream, level=level, force=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_sensitive,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
