"""All configuration, from the environment (prefix TELECRM_) or a .env file, validated once."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

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
    log_level: str = "INFO"

    @field_validator("webhook_secrets", "previous_master_keys", "destinations", mode="before")
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
