"""The Jinja2 sandbox templates render in, and the formatting filters they may use.

Missing values render empty and `None` renders as nothing; compiled templates are cached per
process. Filters: `money` and `when`; a missing value formats as "".
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import BaseLoader, BytecodeCache, ChainableUndefined, Undefined
from jinja2.bccache import Bucket
from jinja2.sandbox import ImmutableSandboxedEnvironment

_MONTHS = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "es": ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"),
}
_DAYS = {
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "es": ("lun", "mar", "mie", "jue", "vie", "sab", "dom"),  # accent-free keeps SMS in GSM-7
}


def _missing(value: Any) -> bool:
    return value is None or isinstance(value, Undefined) or value == ""


def money(value: Any, currency: Any = "USD") -> str:
    """49.0 -> "$49.00" (other currencies: "49.00 EUR")."""
    if _missing(value):
        return ""
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return ""
    code = "USD" if _missing(currency) else str(currency)
    return f"${amount:,.2f}" if code == "USD" else f"{amount:,.2f} {code}"


def _parse(value: Any) -> datetime | date | None:
    if isinstance(value, datetime | date):
        return value
    try:
        text = str(value)
        return datetime.fromisoformat(text) if "T" in text else date.fromisoformat(text)
    except ValueError:
        return None


def when(value: Any, language: str = "en", tz: Any = None, *, time: bool = True) -> str:
    """A date or time as people read it: "Thu, Mar 5, 10:30 AM CST" / "jue 5 mar, 10:30 CST".

    Times are shown in `tz` (the patient's IANA zone) when given, else in UTC; the zone's abbreviation follows the time.
    """
    if _missing(value):
        return ""
    moment = _parse(value)
    if moment is None:
        return ""
    lang = language if language in _MONTHS else "en"
    suffix = ""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            zone = ZoneInfo(str(tz)) if not _missing(tz) else None
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a tzdata folder
            zone = None
        moment = moment.astimezone(zone or UTC)
        suffix = f" {moment.tzname()}" if zone else " UTC"
    day, month = _DAYS[lang][moment.weekday()], _MONTHS[lang][moment.month - 1]
    text = f"{day}, {month} {moment.day}" if lang == "en" else f"{day} {moment.day} {month}"
    if not time or not isinstance(moment, datetime):
        return text
    if lang == "en":
        clock = f"{moment.hour % 12 or 12}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"
    else:
        clock = f"{moment.hour}:{moment.minute:02d}"
    return f"{text}, {clock}{suffix}"


FILTERS: dict[str, Callable[..., str]] = {"money": money, "when": when}


class _Blank(ChainableUndefined):
    """A missing value: renders empty, and so does anything taken from it."""

    __slots__ = ()

    def __str__(self) -> str:
        return ""


def _no_none(value: Any) -> Any:
    return "" if value is None else value


class _MemoryBytecode(BytecodeCache):
    """Compiled templates kept per process, keyed by name and source checksum: loading the
    catalog again (tests, a second runtime) skips recompiling the files that did not change."""

    def __init__(self) -> None:
        self._code: dict[tuple[str, str], bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._code.get((bucket.key, bucket.checksum))
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[(bucket.key, bucket.checksum)] = bucket.bytecode_to_string()


# One cache per kind of environment: autoescaping compiles the same source differently.
_BYTECODE = {False: _MemoryBytecode(), True: _MemoryBytecode()}


def sandbox_environment(loader: BaseLoader, *, html: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=loader,
        bytecode_cache=_BYTECODE[html],
        autoescape=html,
        undefined=_Blank,
        finalize=_no_none,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    env.filters.update(FILTERS)
    env.globals = {"range": range}
    return env
