"""All configuration, from the environment (prefix TELECRM_) or a .env file, validated once."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from telecrm.domain.lifecycle import Thresholds
from telecrm.security.secret_files import with_secret_files

DEFAULT_HOME = Path(".telecrm")
# Six years of days, leap days included: HIPAA's documentation period (45 CFR 164.530(j)).
DISCLOSURE_RETENTION_MIN_DAYS = 2192


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELECRM_", env_file=".env", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Every secret may also come from a file: TELECRM_X_FILE=/run/secrets/x (secret_files.py).
        files = with_secret_files(settings_cls, init_settings, env_settings, dotenv_settings)
        return init_settings, files, env_settings, dotenv_settings, file_secret_settings

    home: Path = Field(DEFAULT_HOME, description="Folder for the embedded database and demo keys")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default is SQLite at <home>/telecrm.db",
        repr=False,  # it may carry a password
        json_schema_extra={"secret": True},  # so TELECRM_DATABASE_URL_FILE works too
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
    # -- rate limits (api/rate_limit.py; per process, per client; rate 0 turns a class off) ----
    rate_limit_intake_rate: float = Field(
        2000, ge=0, le=1_000_000, description="Signed webhooks: requests/s per sender address"
    )
    rate_limit_intake_burst: int = Field(4000, ge=0, le=10_000_000)
    rate_limit_api_rate: float = Field(
        50, ge=0, le=1_000_000, description="Read/admin API: requests/s per client (or address)"
    )
    rate_limit_api_burst: int = Field(100, ge=0, le=10_000_000)
    rate_limit_token_rate: float = Field(
        5, ge=0, le=1_000_000, description="POST /oauth/token: requests/s per address"
    )
    rate_limit_token_burst: int = Field(20, ge=0, le=10_000_000)
    rate_limit_max_identities: int = Field(
        50_000,
        ge=100,
        le=10_000_000,
        description="Buckets kept per class; the least recently seen go first (bounds memory)",
    )
    # -- end of rate limits ------------------------------------------------------------------
    log_level: str = "INFO"
    # -- read API access (docs/api.md) ------------------------------------------------------
    oauth_token_ttl_seconds: int = Field(
        600, ge=60, le=3600, description="Lifetime of the access tokens POST /oauth/token issues"
    )
    oauth_issuer: str | None = Field(
        None,
        max_length=500,
        description="An external OAuth 2.0 issuer whose access tokens the read API accepts "
        "(its `iss`); needs TELECRM_OAUTH_AUDIENCE and TELECRM_OAUTH_JWKS_URL",
    )
    oauth_audience: str | None = Field(
        None, max_length=500, description="The `aud` the external issuer puts in telecrm's tokens"
    )
    oauth_jwks_url: str | None = Field(
        None, max_length=2000, description="Where the external issuer publishes its JWKS (https)"
    )
    oauth_role_claim: str = Field(
        "telecrm_role",
        pattern=r"^[A-Za-z0-9_:/.\-]{1,200}$",
        description="The external token claim that names the telecrm role",
    )
    # -- compliance (docs/compliance.md) ----------------------------------------------------
    disclosure_retention_days: int = Field(
        DISCLOSURE_RETENTION_MIN_DAYS,
        description="How long the accounting of disclosures is kept; `telecrm disclosures "
        "prune` deletes only older rows. At least 2192 days (six years)",
    )

    event_retention_days: int | None = Field(
        None,
        description="Patients with no event for longer than this many days are removed whole by "
        "`telecrm retention prune` (events, profile, messages, journeys; disclosures and the "
        "audit log are kept). Unset: keep forever. At least 2192 days (six years)",
    )

    @field_validator("event_retention_days")
    @classmethod
    def _events_six_years_at_least(cls, value: int | None) -> int | None:
        if value is not None and value < DISCLOSURE_RETENTION_MIN_DAYS:
            raise ValueError(
                f"is {value} days, but patient records are kept at least "
                f"{DISCLOSURE_RETENTION_MIN_DAYS} days (six years, as long as the accounting of "
                f"their disclosures); set it to {DISCLOSURE_RETENTION_MIN_DAYS} or more, or unset it"
            )
        return value

    @field_validator("disclosure_retention_days")
    @classmethod
    def _six_years_at_least(cls, value: int) -> int:
        if value < DISCLOSURE_RETENTION_MIN_DAYS:
            raise ValueError(
                f"is {value} days, but an accounting of disclosures must be kept at least "
                f"{DISCLOSURE_RETENTION_MIN_DAYS} days (six years, 45 CFR 164.528(a) and "
                f"164.530(j)); set it to {DISCLOSURE_RETENTION_MIN_DAYS} or more"
            )
        return value

    @field_validator(
        "webhook_secrets",
        "previous_master_keys",
        "destinations",
        "twilio_previous_auth_tokens",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):  # commas, or one per line (a file from TELECRM_X_FILE)
            parts = value.replace("\n", ",").split(",")
            return [part.strip() for part in parts if part.strip()]
        return value

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> Settings:
        if self.at_risk_days >= self.churn_days:
            raise ValueError(
                "TELECRM_AT_RISK_DAYS must be smaller than TELECRM_CHURN_DAYS "
                f"(now {self.at_risk_days} and {self.churn_days})"
            )
        return self

    @model_validator(mode="after")
    def _external_issuer_complete(self) -> Settings:
        given = {
            "TELECRM_OAUTH_ISSUER": self.oauth_issuer,
            "TELECRM_OAUTH_AUDIENCE": self.oauth_audience,
            "TELECRM_OAUTH_JWKS_URL": self.oauth_jwks_url,
        }
        missing = [name for name, value in given.items() if not value]
        if 0 < len(missing) < len(given):
            raise ValueError(
                f"an external OAuth issuer needs all three of {', '.join(given)}; "
                f"{', '.join(missing)} is not set"
            )
        if self.oauth_jwks_url:
            from urllib.parse import urlsplit

            url = urlsplit(self.oauth_jwks_url)
            loopback = url.scheme == "http" and url.hostname in ("127.0.0.1", "localhost", "::1")
            if not (url.scheme == "https" and url.hostname) and not loopback:
                raise ValueError(
                    "TELECRM_OAUTH_JWKS_URL must be an https:// URL: keys fetched over plain "
                    "HTTP could be swapped on the way"
                )
        return self

    @model_validator(mode="after")
    def _rate_limits_have_a_burst(self) -> Settings:
        for name in ("intake", "api", "token"):
            rate = getattr(self, f"rate_limit_{name}_rate")
            burst = getattr(self, f"rate_limit_{name}_burst")
            if rate > 0 and burst < 1:
                raise ValueError(
                    f"TELECRM_RATE_LIMIT_{name.upper()}_BURST must be at least 1 while "
                    f"TELECRM_RATE_LIMIT_{name.upper()}_RATE is {rate:g}; set the rate to 0 "
                    f"to turn the {name} limit off"
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
