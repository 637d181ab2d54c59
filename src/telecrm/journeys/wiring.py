"""Builds the journeys part from settings: the registry (validated files) and the runner, which
plans its messages through the messaging part's planner (so every journey send obeys consent,
quiet hours, caps and dedupe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from telecrm.journeys.registry import JourneyRegistry
from telecrm.journeys.runner import JourneyRunner
from telecrm.journeys.webhooks import JourneyWebhookSender

if TYPE_CHECKING:
    from telecrm.bootstrap import Runtime


@dataclass
class Journeys:
    registry: JourneyRegistry
    runner: JourneyRunner
    webhooks: JourneyWebhookSender


def build_journeys(runtime: Runtime) -> Journeys:
    messaging = runtime.messaging()
    templates = {(t.name, t.channel) for t in messaging.catalog.all()}
    registry = JourneyRegistry.load(runtime.settings.journeys_dir, templates)
    runner = JourneyRunner(
        runtime.engine,
        runtime.cipher,
        runtime.blind_index,
        runtime.clock,
        registry,
        messaging.planner,
        max_entry_age_hours=runtime.settings.message_max_age_hours,
        intake=runtime.intake(),
    )
    webhooks = JourneyWebhookSender(runtime.engine, runtime.cipher, runtime.clock)
    return Journeys(registry, runner, webhooks)
