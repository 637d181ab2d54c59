"""Builds the messaging parts from settings: configuration, templates, providers, planner,
dispatcher and tracker. `Runtime.messaging()` holds one of these; tests build their own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import Connection

from telecrm.connectors.messaging_base import EmailProvider, SmsProvider
from telecrm.domain.messages import TriggerFired
from telecrm.messaging.config import MessagingConfig, check_templates, load_messaging_config
from telecrm.messaging.context import Brand, Links
from telecrm.messaging.dispatcher import MessageDispatcher
from telecrm.messaging.pacing import ProviderBudget
from telecrm.messaging.planner import MessagePlanner
from telecrm.messaging.secrets_vault import SecretVault
from telecrm.messaging.tables import message_triggers
from telecrm.messaging.templates import TemplateCatalog
from telecrm.messaging.tracking import Tracker
from telecrm.settings import Settings
from telecrm.sync.rate_gate import clock_sleep

if TYPE_CHECKING:
    from telecrm.bootstrap import Runtime

STATUS_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"


class ProviderNotConfigured(RuntimeError):
    pass


def unsubscribe_groups(settings: Settings) -> dict[str, int]:
    """SendGrid ASM group id per purpose, as configured (`telecrm messages provision`)."""
    pairs = (
        ("transactional", settings.sendgrid_transactional_group),
        ("marketing", settings.sendgrid_marketing_group),
    )
    return {purpose: group for purpose, group in pairs if group is not None}


def email_provider(settings: Settings, client: httpx.Client | None = None) -> EmailProvider | None:
    """SendGrid when TELECRM_SENDGRID_API_KEY is set, else None (messages wait, then expire)."""
    if settings.sendgrid_api_key is None:
        return None
    from telecrm.connectors.sendgrid import SendGridConfig, SendGridConnector

    groups = unsubscribe_groups(settings)
    config = SendGridConfig(
        base_url=settings.sendgrid_url,
        api_key=settings.sendgrid_api_key,
        from_email=settings.sendgrid_from_email,
        from_name=settings.sendgrid_from_name,
        unsubscribe_groups=groups,
    )
    return SendGridConnector(config, client)


def sms_provider(settings: Settings, client: httpx.Client | None = None) -> SmsProvider | None:
    """Twilio when the account, token and Messaging Service are set, else None."""
    if not (
        settings.twilio_account_sid
        and settings.twilio_auth_token
        and settings.twilio_messaging_service_sid
    ):
        return None
    from telecrm.connectors.twilio import TwilioConfig, TwilioConnector

    config = TwilioConfig(
        base_url=settings.twilio_url,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        status_callback_url=settings.public_url.rstrip("/") + STATUS_PATH,
    )
    return TwilioConnector(config, client)


def brand_of(settings: Settings) -> Brand:
    return Brand(
        name=settings.brand_name,
        support_email=settings.support_email,
        support_phone=settings.support_phone,
        address=settings.brand_address,
    )


@dataclass
class Messaging:
    config: MessagingConfig
    catalog: TemplateCatalog
    planner: MessagePlanner
    dispatcher: MessageDispatcher
    tracker: Tracker
    vault: SecretVault = field(default_factory=SecretVault)

    def twilio_tokens(self, settings: Settings) -> list[str]:
        tokens = [settings.twilio_auth_token] if settings.twilio_auth_token else []
        tokens += settings.twilio_previous_auth_tokens
        return [t.get_secret_value() for t in tokens]


def build_messaging(
    runtime: Runtime,
    *,
    email: EmailProvider | None = None,
    sms: SmsProvider | None = None,
    from_settings: bool = True,
) -> Messaging:
    s = runtime.settings
    config = load_messaging_config(s.messaging_config)
    catalog = TemplateCatalog.load(sms_baa=s.twilio_baa, override_dir=s.templates_dir)
    check_templates(config, {(t.name, t.channel) for t in catalog.all()})
    if from_settings:
        email = email or email_provider(s)
        sms = sms or sms_provider(s)
    vault = SecretVault()
    brand = brand_of(s)
    groups = unsubscribe_groups(s)
    planner = MessagePlanner(
        runtime.engine,
        runtime.cipher,
        runtime.blind_index,
        runtime.clock,
        config,
        catalog,
        max_trigger_age_hours=s.message_max_age_hours,
    )
    budgets: dict[str, ProviderBudget] = {}
    if sms is not None:
        budgets["sms"] = ProviderBudget(
            runtime.engine,
            f"twilio:{s.twilio_account_sid or 'account'}",
            s.twilio_rate,
            runtime.clock,
            clock_sleep(runtime.clock),
        )
    dispatcher = MessageDispatcher(
        runtime.engine,
        runtime.cipher,
        runtime.blind_index,
        runtime.clock,
        catalog,
        email=email,
        sms=sms,
        links=Links(s.platform_url),
        brand=brand,
        vault=vault,
        unsubscribe_groups=groups,
        sms_baa=s.twilio_baa,
        max_age_hours=s.message_max_age_hours,
        concurrency=s.sms_concurrency,
        budgets=budgets,
        hosted_templates=config.sendgrid_templates,
    )
    tracker = Tracker(
        runtime.engine,
        runtime.cipher,
        runtime.blind_index,
        runtime.clock,
        runtime.intake(),
        marketing_group=s.sendgrid_marketing_group,
        keyword_replies=s.sms_keyword_replies,
        brand=brand.name,
        support=brand.support_email,
    )
    return Messaging(config, catalog, planner, dispatcher, tracker, vault)


def enqueue_triggers(conn: Connection, fired: list[TriggerFired], now_us: int) -> None:
    """The projection's hook: triggers wait in the outbox's inbox, in the profile's transaction."""
    from telecrm.domain.clock import to_micros

    conn.execute(
        message_triggers.insert(),
        [
            {
                "patient_key": t.patient_id,
                "trigger": t.trigger,
                "event_id": t.event_id,
                "occurred_us": to_micros(t.at),
                "enqueued_us": now_us,
            }
            for t in fired
        ],
    )


TriggerHook = Callable[[Connection, list[TriggerFired], int], None]
