"""Where a security message's secret waits between the API request and the send: memory only."""

from __future__ import annotations

import threading


class SecretVault:
    """Security codes and reset links, held in memory only until their message is sent.

    They never touch the database or a log: if the process stops first, the message expires and
    the platform asks again (a two-factor code is short-lived anyway).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, dict[str, str]] = {}

    def put(self, message_id: str, secrets: dict[str, str]) -> None:
        with self._lock:
            self._secrets[message_id] = dict(secrets)

    def take(self, message_id: str) -> dict[str, str] | None:
        with self._lock:
            return self._secrets.pop(message_id, None)

    def __repr__(self) -> str:
        return f"SecretVault({len(self._secrets)} held)"
