"""All configuration, from the environment (prefix TELECRM_) or a .env file, validated once."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from telecrm.domain.lifecycle import Thresholds

DEFAULT_HOME = Path(".telecrm")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELECRM_", env_file=".env", extra="ignore")

    home: Path = Field(DEFAULT_HOME, description="Folder for the embedded database and demo keys")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is SQLite at <home>/telecrm.db"
    )
    webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated whsec_... secrets; all are accepted (rotation)",
    )
    master_key: SecretStr | None = Field(
        None, description="Key-encryption key: 32 bytes, base64 (the current one)"
    )
    previous_master_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Older KEKs still needed to unwrap keys during rotation"
    )
    webhook_tolerance_seconds: int = Field(300, ge=1, le=3600)
    webhook_receipt_days: int = Field(
        7, ge=1, le=365, description="How long webhook-ids are kept to tell retries from replays"
    )
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_batch_events: int = Field(1000, ge=1, le=1000)
    at_risk_days: int = Field(45, ge=1)
    churn_days: int = Field(120, ge=2)
    churn_risk_cutoff: float = Field(0.7, gt=0, le=1)
    embedded_worker: bool = Field(True, description="Run the profile worker inside `serve`")
    destinations: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CRM mappings to keep in sync: built-in names "
        "(hubspot, salesforce) or paths to mapping files",
    )
    # -- messaging (docs/messaging.md) ------------------------------------------------------
    messaging: bool = Field(
        True, description="Plan the triggers' messages (and send them when a provider is set)"
    )
    messaging_config: Path | None = Field(
        None, description="Messaging YAML (triggers, quiet hours, caps); default: built-in"
    )
    templates_dir: Path | None = Field(
        None, description="Folder of templates that replace or add to the built-in ones"
    )
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="telecrm's public base URL: provider callbacks are signed over it",
    )
    platform_url: str = Field(
        "https://portal.example.com", description="The platform's patient portal: message links"
    )
    brand_name: str = "Telecrm Health"
    support_email: str = "support@example.com"
    support_phone: str = "(555) 010-0100"
    brand_address: str = "100 Example Street, Suite 200, Austin, TX 78701"
    message_max_age_hours: float = Field(
        48,
        gt=0,
        description="A trigger older than this sends nothing; a message not sent within this "
        "long after it was due expires",
    )
    # -- journeys (docs/journeys.md) -------------------------------------------------------
    journeys: bool = Field(
        True, description="Run the journeys (built-ins plus TELECRM_JOURNEYS_DIR); needs messaging"
    )
    journeys_dir: Path | None = Field(
        None, description="Folder of journey YAML files that replace or add to the built-ins"
    )
    sendgrid_api_key: SecretStr | None = None
    sendgrid_url: str = "https://api.sendgrid.com"
    sendgrid_from_email: str = "care@example.com"
    sendgrid_from_name: str = "Telecrm Health"
    sendgrid_webhook_public_key: str | None = Field(
        None, description="The Signed Event Webhook's public key (base64 DER, as SendGrid shows it)"
    )
    sendgrid_transactional_group: int | None = Field(None, description="ASM group id")
    sendgrid_marketing_group: int | None = Field(None, description="ASM group id")
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_previous_auth_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Older auth tokens still accepted on callbacks (rotation)"
    )
    twilio_messaging_service_sid: str | None = None
    twilio_url: str = "https://api.twilio.com"
    twilio_rate: float = Field(
        80,
        gt=0,
        le=1_000_000,
        description="Twilio API requests per second, shared by every process (set under your "
        "account's limit)",
    )
    sms_concurrency: int = Field(
        8, ge=1, le=64, description="Twilio calls in flight at once (one message per call)"
    )
    twilio_baa: bool = Field(
        False, description="Twilio signed a BAA (HIPAA account): SMS templates may use PHI"
    )
    sms_keyword_replies: Literal["twilio", "telecrm"] = Field(
        "twilio",
        description="Who answers STOP/START/HELP: Twilio's default handling, or telecrm (TwiML)",
    )
    log_level: str = "INFO"

    @field_validator(
        "webhook_secrets",
        "previous_master_keys",
        "destinations",
        "twilio_previous_auth_tokens",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> Settings:
        if self.at_risk_days >= self.churn_days:
            raise ValueError(
                "TELECRM_AT_RISK_DAYS must be smaller than TELECRM_CHURN_DAYS "
                f"(now {self.at_risk_days} and {self.churn_days})"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'telecrm.db').as_posix()}"

    @cached_property
    def thresholds(self) -> Thresholds:
        return Thresholds(
            at_risk_inactivity_days=self.at_risk_days,
            churn_inactivity_days=self.churn_days,
            churn_risk_cutoff=self.churn_risk_cutoff,
        )
