"""Doctor's check of the files secrets come from: only their owner may read them, and every
`TELECRM_*_FILE` variable names a secret telecrm actually reads (a typo is silently ignored
otherwise). Looks at paths and modes, never at content."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from telecrm.doctor.findings import Context, Finding
from telecrm.security.secret_files import FILE_SUFFIX, secret_setting_names
from telecrm.settings import Settings
from telecrm.sync.mapping import Mapping

# Secrets read by commands rather than by Settings (`telecrm pull`'s bearer token).
COMMAND_SECRETS = ("TELECRM_PLATFORM_TOKEN",)
PREFIX = "TELECRM_"
CHMOD_ADVICE = (
    "chmod 0400 it, owned by the user telecrm runs as (Kubernetes: defaultMode: 0400; "
    "Docker secrets: mode: 0400)"
)


@dataclass(frozen=True)
class SecretNames:
    settings: frozenset[str]  # read through Settings: process environment and .env
    other: frozenset[str]  # named by mappings and commands: process environment only
    paths: frozenset[str]  # variables whose value is the path of a secret file (a PEM key)

    @classmethod
    def gather(cls, mappings: Iterable[Mapping]) -> SecretNames:
        other: set[str] = set(COMMAND_SECRETS)
        paths: set[str] = set()
        for m in mappings:
            for key, variable in m.connection.items():
                if key.endswith("_file_env"):
                    paths.add(variable)
                elif key.endswith("_env"):
                    other.add(variable)
        return cls(
            frozenset(secret_setting_names(Settings).values()), frozenset(other), frozenset(paths)
        )


def check_secret_files(ctx: Context, names: SecretNames) -> list[Finding]:
    name = "secret files"
    files: list[tuple[str, str]] = []
    for variable in sorted(names.settings):
        path = ctx.settings_environ.get(variable + FILE_SUFFIX)
        if path:
            files.append((variable + FILE_SUFFIX, path))
    for variable in sorted(names.other - names.settings):
        path = ctx.environ.get(variable + FILE_SUFFIX)
        if path:
            files.append((variable + FILE_SUFFIX, path))
    for variable in sorted(names.paths):
        path = ctx.environ.get(variable)
        if path:
            files.append((variable, path))
    checked = (_permissions(name, variable, path) for variable, path in files)
    out = [f for f in checked if f is not None]
    known = {n + FILE_SUFFIX for n in names.settings | names.other} | names.paths
    seen = {v.upper() for v in ctx.settings_environ} | {v.upper() for v in ctx.environ}
    for variable in sorted(seen):
        if variable.startswith(PREFIX) and variable.endswith(FILE_SUFFIX) and variable not in known:
            out.append(
                Finding(
                    name,
                    "warn",
                    f"{variable} is set, but telecrm reads no secret "
                    f"{variable.removesuffix(FILE_SUFFIX)}: it is ignored",
                    "check the name against docs/operations.md (a typo?)",
                )
            )
    if out:
        return out
    if not files:
        return [Finding(name, "skip", "no secret comes from a file (TELECRM_*_FILE)")]
    return [Finding(name, "ok", f"{len(files)} secret file(s), each readable by its owner only")]


def _permissions(check: str, variable: str, path: str) -> Finding | None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        return Finding(
            check,
            "fail",
            f"{variable}={path}: cannot be read ({exc.strerror or type(exc).__name__})",
            "mount the secret there or correct the path",
        )
    who = [w for w, bit in (("its group", stat.S_IRGRP), ("everyone", stat.S_IROTH)) if mode & bit]
    if not who:
        return None
    return Finding(
        check,
        "warn",
        f"{variable}={path} is readable by {' and '.join(who)} (mode {mode:04o})",
        CHMOD_ADVICE,
    )
