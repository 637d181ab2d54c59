"""The documents a patient is handed (the accounting of disclosures, the export of their record),
rendered from the Jinja2 files in `templates/` with autoescape on: every value is escaped."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

if TYPE_CHECKING:
    from telecrm.security.disclosures import Accounting


def when(value: datetime | None) -> str:
    """An instant as a reader writes it: `2026-03-02 09:00 UTC`."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def day(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d")


def shown(value: Any) -> str:
    """Any stored value as text: lists joined, objects as compact JSON, nothing as a dash."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value)
    if isinstance(value, list | dict):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return str(value)


def words(name: str | None) -> str:
    return "—" if not name else name.replace("_", " ").replace(".", " ")


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("telecrm.security", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(when=when, day=day, shown=shown, words=words)
    return env


def render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context)


def render_accounting_html(accounting: Accounting) -> str:
    """The accounting of disclosures as a plain, printable page for the patient."""
    return render("accounting.html.j2", a=accounting)
