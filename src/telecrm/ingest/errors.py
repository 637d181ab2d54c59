"""Intake's errors: each one is a client's mistake with an HTTP status and a PHI-free message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class IntakeRejected(Exception):
    """The whole request is refused; nothing of it was stored."""

    status: int
    code: str
    title: str
    detail: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.title}: {self.detail}"
