"""What every `telecrm` command shares: the console, the runtime, and one red line per failure."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from telecrm.analytics.scoring_config import ScoringConfigError
from telecrm.bootstrap import Runtime, bootstrap
from telecrm.domain.clock import to_micros
from telecrm.ingest.bulk_import import ImportFileError
from telecrm.ingest.signatures import InvalidSecret
from telecrm.messaging.config import MessagingConfigError
from telecrm.messaging.templates import TemplateError
from telecrm.security.errors import SecurityError
from telecrm.security.secret_files import SecretFileError
from telecrm.settings import Settings
from telecrm.store.engine import StoreError
from telecrm.sync.destinations import DestinationNotConfigured
from telecrm.sync.mapping import MappingError
from telecrm.sync.worker import SyncHalted

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

KNOWN_FAILURES = (
    SecurityError,
    StoreError,
    ImportFileError,
    InvalidSecret,
    LookupError,
    MappingError,
    DestinationNotConfigured,
    SyncHalted,
    MessagingConfigError,
    ScoringConfigError,
    TemplateError,
)


def fail(message: str, *, hint: str | None = None, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}" + (f"\n[dim]{hint}[/]" if hint else ""))
    return typer.Exit(code)


def friendly_errors(fn: F) -> F:
    """Known failures become one red line and exit 1; nothing a user typed is echoed back."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KNOWN_FAILURES as exc:
            raise fail(str(exc)) from None
        except Exception as exc:  # a database that is down, a file that vanished...
            from sqlalchemy.exc import OperationalError

            if isinstance(exc, OperationalError):
                raise fail(
                    "the database cannot be reached or used",
                    hint="check TELECRM_DATABASE_URL (and that the server is up)",
                ) from None
            raise

    return wrapper  # type: ignore[return-value]


def settings_problems(exc: ValidationError) -> str:
    """One line naming each bad variable and what is wrong with it (never its value)."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        name = "_".join(str(p) for p in err["loc"]).upper()
        problems.append(f"TELECRM_{name}: {err['msg']}" if name else err["msg"])
    return "; ".join(problems)


def load_settings() -> Settings:
    """Settings from the environment, or one red line per bad variable (values never echoed)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise fail(
            settings_problems(exc), hint="see docs/operations.md for every setting", code=2
        ) from None
    except SecretFileError as exc:  # a TELECRM_X_FILE that cannot be used
        raise fail(str(exc), hint="see docs/operations.md (Secrets)", code=2) from None


def runtime(settings: Settings | None = None) -> Runtime:
    return bootstrap(settings or load_settings())


def now_us(rt: Runtime) -> int:
    return to_micros(rt.clock.now())
