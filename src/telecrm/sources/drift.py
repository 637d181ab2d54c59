"""Schema drift: the columns a model reads, compared with those it was first read with.

The first successful read records every column of the model's relation and its type (names and
types only). Each later read compares: a used column that is gone stops the model, and if a new
column of the same type now stands where it stood, the message says it looks renamed; a used
column whose type changed stops the model too. Changes to columns the model does not read are
ignored. The message names model, column and what changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from telecrm.sources.errors import SchemaDrift


def baseline_json(columns: dict[str, str]) -> str:
    return orjson.dumps([[name, kind] for name, kind in columns.items()]).decode()


def parse_baseline(raw: str | None) -> dict[str, str] | None:
    if not raw:
        return None
    return {str(name): str(kind) for name, kind in orjson.loads(raw)}


def check_drift(
    model: str, used: Sequence[str], baseline: dict[str, str] | None, actual: dict[str, str]
) -> None:
    """Raise SchemaDrift for the first used column that vanished, was renamed or changed type."""
    reference = baseline if baseline is not None else {}
    for column in used:
        if column in actual:
            was = reference.get(column)
            if was is not None and actual[column] != was:
                raise SchemaDrift(model, column, f"changed type from {was} to {actual[column]}")
            continue
        renamed = _renamed_to(column, reference, actual)
        if renamed is not None:
            raise SchemaDrift(
                model,
                column,
                f"vanished and a new column {renamed!r} of the same type "
                f"({actual[renamed]}) stands in its place: renamed? map {renamed!r} instead",
            )
        raise SchemaDrift(model, column, "vanished from the table (or query)")


def _renamed_to(column: str, baseline: dict[str, str], actual: dict[str, str]) -> str | None:
    if column not in baseline:
        return None
    before = list(baseline)
    position = before.index(column)
    new = [name for name in actual if name not in baseline]
    after = list(actual)
    for name in new:
        if actual[name] == baseline[column] and after.index(name) == position:
            return name
    same_type = [name for name in new if actual[name] == baseline[column]]
    return same_type[0] if len(same_type) == 1 else None
