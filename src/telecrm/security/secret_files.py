"""Secrets from the environment or from a file: `TELECRM_X_FILE=/run/secrets/x` for any `TELECRM_X`.

Container platforms hand secrets over as files (Docker and Kubernetes secrets, systemd
credentials) so that they stay out of the environment, where `/proc/<pid>/environ`, crash
reports and child processes can read them. Every secret telecrm reads can come either way, by
one rule kept here: the settings' secret fields (`SecretFileSettingsSource`), and the variables
a mapping's `connection:` block, a journey webhook step or a command names (`resolve_secret`).

The rule: `X_FILE` names a file whose content is the value, less one trailing newline. Setting
both `X` and `X_FILE` is refused (which one wins would be a guess); an empty variable counts as
unset. A missing, unreadable, empty or oversized file is refused with a message that names the
variable and the path, never a byte of the content. A file others may read is accepted here
and reported by `telecrm doctor`.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from telecrm.security.errors import SecurityError

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

FILE_SUFFIX = "_FILE"
# A PEM private key is 2-3 KiB and a token far less: anything bigger is the wrong file (or a
# device such as /dev/zero that would never end).
MAX_SECRET_FILE_BYTES = 64 * 1024
# Field(json_schema_extra={"secret": True}) marks a secret that is not a SecretStr (a URL).
SECRET_MARKER = "secret"  # noqa: S105 (a key's name, not a secret)


class SecretFileError(SecurityError):
    """A secret's `_FILE` variable cannot be used; says which variable, which path, and why."""

    def __init__(self, variable: str, problem: str, *, path: str | None = None) -> None:
        self.variable = variable
        self.path = path
        where = f"{variable}={path}" if path is not None else variable
        super().__init__(f"{where}: {problem}")


def read_secret_file(variable: str, path: str) -> str:
    """The secret in `path` (named by `variable`), less one trailing newline."""

    def refuse(problem: str) -> SecretFileError:
        return SecretFileError(variable, problem, path=path)

    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise refuse("no such file: mount the secret there or correct the path") from None
    except IsADirectoryError:
        raise refuse("it is a directory, not a file holding the secret") from None
    except PermissionError:
        raise refuse(
            "permission denied: the file must be readable by the user telecrm runs as"
        ) from None
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise refuse(f"larger than {MAX_SECRET_FILE_BYTES // 1024} KiB: not a secret file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise refuse("the file is empty")
    return text


def resolve_secret(name: str, environ: Mapping[str, str | None] | None = None) -> str | None:
    """The value of secret `name`, from `name` or from the file `name_FILE` names (or None)."""
    env: Mapping[str, str | None] = os.environ if environ is None else environ
    direct = env.get(name) or None
    path = env.get(name + FILE_SUFFIX) or None
    if path is None:
        return direct
    if direct is not None:
        raise SecretFileError(
            name + FILE_SUFFIX,
            f"{name} is set as well: keep one of the two (the file keeps it out of the "
            "environment)",
        )
    return read_secret_file(name + FILE_SUFFIX, path)


def _holds_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return False
    return any(_holds_secret(arg) for arg in typing.get_args(annotation))


def is_secret_field(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return _holds_secret(field.annotation) or (
        isinstance(extra, dict) and extra.get(SECRET_MARKER) is True
    )


def secret_setting_names(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """{field name: environment variable} for every setting that may come from a file."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    return {
        name: (prefix + name).upper()
        for name, field in settings_cls.model_fields.items()
        if is_secret_field(field)
    }


def upper_keys(*sources: Mapping[str, str | None]) -> dict[str, str | None]:
    """Variables from several places (earlier ones win), names upper-cased as pydantic matches them."""
    merged: dict[str, str | None] = {}
    for source in reversed(sources):
        merged.update({key.upper(): value for key, value in source.items()})
    return merged


class SecretFileSettingsSource(PydanticBaseSettingsSource):
    """The settings' secrets read from `<PREFIX><FIELD>_FILE` files, in the environment or `.env`.

    Placed before the environment source; a value given to `Settings(...)` in code wins and its
    file is not read.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        *,
        explicit: Iterable[str],
        variables: Iterable[Mapping[str, str | None]],
    ) -> None:
        super().__init__(settings_cls)
        self._explicit = frozenset(explicit)
        self._environ = upper_keys(*variables)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, variable in secret_setting_names(self.settings_cls).items():
            if name in self._explicit:
                continue
            if self._environ.get(variable + FILE_SUFFIX):
                values[name] = resolve_secret(variable, self._environ)
        return values

    def __repr__(self) -> str:
        return f"SecretFileSettingsSource({len(self._environ)} variables)"


def with_secret_files(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
    dotenv_settings: PydanticBaseSettingsSource,
) -> PydanticBaseSettingsSource:
    """The `_FILE` source for `settings_customise_sources`, fed from the other sources' inputs."""
    explicit = getattr(init_settings, "init_kwargs", {}) or {}
    return SecretFileSettingsSource(
        settings_cls,
        explicit=explicit.keys(),
        variables=(
            getattr(env_settings, "env_vars", None) or {},
            getattr(dotenv_settings, "env_vars", None) or {},
        ),
    )
