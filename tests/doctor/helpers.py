"""Shared by the doctor's tests: crafted settings, a context over them, and how to read findings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import SecretStr

from telecrm import cli_support
from telecrm.doctor.findings import Context, Finding
from telecrm.domain.clock import Clock, SystemClock
from telecrm.ingest.signatures import generate_secret
from telecrm.security.keyring import generate_master_key
from telecrm.security.secret_files import upper_keys
from telecrm.settings import Settings

CANARY = "canary-doctor-5b1f"


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TELECRM_* variable of the machine running the tests reaches a check; wide consoles."""
    for name in list(os.environ):
        if name.upper().startswith("TELECRM_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli_support.console, "width", 200)
    monkeypatch.setattr(cli_support.err_console, "width", 200)


def settings_for(tmp_path: Path, **values: object) -> Settings:
    base: dict[str, object] = {
        "home": tmp_path,
        "master_key": SecretStr(generate_master_key()),
        "webhook_secrets": [SecretStr(generate_secret())],
        "messaging": False,
    }
    return Settings(_env_file=None, **{**base, **values})  # type: ignore[arg-type]


def context(
    settings: Settings, environ: Mapping[str, str] | None = None, clock: Clock | None = None
) -> Context:
    env = dict(environ or {})
    return Context(settings, env, upper_keys(env), clock or SystemClock())


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def said(findings: list[Finding]) -> str:
    return "\n".join(f"{f.message} {f.advice}" for f in findings)


def secret_file(folder: Path, name: str, content: str, mode: int = 0o600) -> Path:
    path = folder / name
    path.write_text(content)
    path.chmod(mode)
    return path
