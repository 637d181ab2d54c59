"""What can go wrong with a database source; every message names what to fix, never a row value."""

from __future__ import annotations


class SourceError(RuntimeError):
    """Base of every database-source failure."""


class SourceConfigError(SourceError, ValueError):
    """A sources file that cannot be used; the message names file, line and field."""

    def __init__(self, path: str, line: int | None, where: str, problem: str) -> None:
        at = f"{path}:{line}" if line else path
        super().__init__(f"{at}: {where}: {problem}" if where else f"{at}: {problem}")
        self.path, self.line, self.where, self.problem = path, line, where, problem


class SourceUnavailable(SourceError):
    """The source database cannot be reached or refused us (credentials, name, network)."""


class ModelStopped(SourceError):
    """One model cannot be read (schema drift, a failing query); the other models go on."""

    def __init__(self, model: str, problem: str) -> None:
        super().__init__(f"model {model!r}: {problem}")
        self.model, self.problem = model, problem

    def __reduce__(self) -> tuple[type[ModelStopped], tuple[str, str]]:
        # Raised in the helper process that prepares pages, re-raised in the reader.
        return ModelStopped, (self.model, self.problem)


class SchemaDrift(ModelStopped):
    """A column the model uses vanished, changed type or was renamed."""

    def __init__(self, model: str, column: str, change: str) -> None:
        super().__init__(
            model,
            f"column {column!r} {change}; the model is stopped until the "
            "models file matches the table (then run it again)",
        )
        self.column, self.change = column, change

    def __reduce__(self) -> tuple[type[SchemaDrift], tuple[str, str, str]]:  # type: ignore[override]
        return SchemaDrift, (self.model, self.column, self.change)
