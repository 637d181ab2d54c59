"""File names derived from patient ids, and files written only inside the folder asked for.

A patient id comes from the platform and may hold anything (`../../etc/x`, `a/b`, `CON`, a
newline): it never picks a path. An id of letters, digits, `_`, `-` and inner dots, starting
with a letter or digit, is its own name; any other id becomes a cleaned prefix plus `~` and 16
hex digits of its SHA-256. A plain name never holds a `~`, so the two kinds cannot collide, and
two different ids give two different names (short of a SHA-256 collision). Export files hold PHI: created 0600, never
through a symbolic link, never over an existing file unless asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

from telecrm.security.errors import SecurityError

PLAIN_MAX = 64  # a plain id longer than this is shortened and hashed
PREFIX_MAX = 40  # readable part of a hashed name
DIGEST_HEX = 16  # 64 bits of SHA-256: no accidental collision among any real patient count
_PLAIN = re.compile(rf"[A-Za-z0-9](?:[A-Za-z0-9_.-]{{0,{PLAIN_MAX - 2}}}[A-Za-z0-9_-])?")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# Device names Windows reserves whatever the extension (a copy may be opened there).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
)


class ExportRefused(SecurityError):
    """An export file telecrm will not write; the message says what to change."""


def safe_file_stem(patient_id: str) -> str:
    """A file name (without extension) for this patient id: safe on any file system."""
    if _PLAIN.fullmatch(patient_id) and not _reserved(patient_id):
        return patient_id
    cleaned = _UNSAFE.sub("_", patient_id)[:PREFIX_MAX].strip("_.-") or "patient"
    if _reserved(cleaned):
        cleaned = f"patient_{cleaned}"
    raw = patient_id.encode("utf-8", "surrogatepass")
    return f"{cleaned}~{hashlib.sha256(raw).hexdigest()[:DIGEST_HEX]}"


def _reserved(name: str) -> bool:
    return name.split(".", 1)[0].upper() in _RESERVED


def export_paths(directory: Path, patient_id: str, suffixes: tuple[str, ...]) -> list[Path]:
    """Where the export files go: inside `directory` (created 0700 if missing), nowhere else."""
    if directory.exists() and not directory.is_dir():
        raise ExportRefused(f"{directory} is not a folder: give --out a folder")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = directory.resolve()
    stem = safe_file_stem(patient_id)
    paths = []
    for suffix in suffixes:
        path = base / f"{stem}{suffix}"
        if path.parent != base or not path.resolve().is_relative_to(base):
            raise ExportRefused(f"refusing to write outside {base}")
        paths.append(path)
    return paths


def check_writable(paths: list[Path], *, force: bool) -> None:
    """Refuses before anything is read or written: a link, or an existing file without force."""
    for path in paths:
        if path.is_symlink():
            raise ExportRefused(f"{path} is a symbolic link: remove it or choose another --out")
        if path.exists() and not path.is_file():
            raise ExportRefused(f"{path} exists and is not a file: choose another --out")
        if path.exists() and not force:
            raise ExportRefused(f"{path} already exists: pass --force to replace it")


def write_private(path: Path, data: bytes, *, force: bool) -> None:
    """Writes `data` readable by its owner only; an existing file is replaced only with force."""
    if not force:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise ExportRefused(f"{path} already exists: pass --force to replace it") from None
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return
    # Replace by rename: a reader never sees half a file, and a link at `path` is replaced,
    # not followed.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
