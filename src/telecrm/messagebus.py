"""A small in-process message bus: parts publish domain events, bootstrap.py decides who hears them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

Handler = Callable[[Any], None]


class MessageBus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = defaultdict(list)

    def subscribe(self, message_type: type, handler: Handler) -> None:
        self._handlers[message_type].append(handler)

    def publish(self, message: object) -> None:
        for handler in self._handlers.get(type(message), ()):
            try:
                handler(message)
            except Exception:
                # A subscriber's failure must not undo what was already committed; it is logged
                # (type and handler only: messages may name patients) and the rest still run.
                log.exception(
                    "bus.handler_failed",
                    message_type=type(message).__name__,
                    handler=getattr(handler, "__qualname__", repr(handler)),
                )

    def publish_all(self, messages: Iterable[object]) -> None:
        for message in messages:
            self.publish(message)
