"""Finds the PostgreSQL server the suite runs against, or starts a throwaway one.

Order: TELECRM_TEST_POSTGRES_URL if set; else a server on 127.0.0.1:5432 (our machines and CI);
else a throwaway cluster from the PostgreSQL binaries on a free loopback port. If none of these
works the suite stops with the command that fixes it: the PostgreSQL half is never skipped.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


class NoPostgres(RuntimeError):
    pass


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _binaries() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_throwaway() -> str:
    bindir = _binaries()
    if bindir is None:
        raise NoPostgres(
            "no PostgreSQL server on 127.0.0.1:5432 and no PostgreSQL binaries to start one: "
            "install them (Debian/Ubuntu: `apt-get install postgresql`) or set "
            "TELECRM_TEST_POSTGRES_URL=postgresql://user@host:port/db"
        )
    url, stop = start_cluster(bindir, "-c fsync=off")
    atexit.register(stop)
    return url


def start_cluster(bindir: Path, settings: str = "") -> tuple[str, Callable[[], None]]:
    """A private PostgreSQL cluster on a free loopback port (as `postgres` when run as root,
    which PostgreSQL refuses): its admin URL, and how to stop it and remove its files."""
    workdir = Path(tempfile.mkdtemp(prefix="telecrm-pg-"))
    datadir = workdir / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = "postgres" if _user_exists("postgres") else "nobody"
        uid = pwd.getpwnam(user).pw_uid
        os.chown(workdir, uid, -1)
        run_as = ["runuser", "-u", user, "--"]
    port = _free_port()
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir),
            "-o",
            f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 {settings}",
            "-l",
            str(workdir / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(workdir, ignore_errors=True)

    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    for _ in range(50):
        if _reachable(url):
            return url, stop
        time.sleep(0.1)  # waiting for a server process we just started, not for our own code
    stop()
    raise NoPostgres(f"started a PostgreSQL cluster but it did not answer (log: {workdir}/log)")


LOGICAL = "-c wal_level=logical -c max_replication_slots=4 -c max_wal_senders=4"


@contextmanager
def logical_cluster(*, fsync: bool = False) -> Iterator[str | None]:
    """A private cluster at wal_level=logical (the shared server runs at replica), or None when
    no PostgreSQL binaries are found."""
    bindir = _binaries()
    if bindir is None:
        yield None
        return
    url, stop = start_cluster(bindir, LOGICAL + ("" if fsync else " -c fsync=off"))
    try:
        yield url
    finally:
        stop()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def admin_url() -> str:
    configured = os.environ.get("TELECRM_TEST_POSTGRES_URL")
    if configured:
        if not _reachable(configured):
            raise NoPostgres(f"TELECRM_TEST_POSTGRES_URL is set but does not answer: {configured}")
        return configured
    if _reachable(DEFAULT_ADMIN_URL):
        return DEFAULT_ADMIN_URL
    return _start_throwaway()


def create_database(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = psycopg.conninfo.conninfo_to_dict(admin)
    user = base.get("user", "postgres")
    host = base.get("host", "127.0.0.1")
    port = base.get("port", "5432")
    return f"postgresql+psycopg://{user}@{host}:{port}/{name}"


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
