"""Puller benchmark: `telecrm pull` against the simulated platform API on loopback. Prints JSON.

The platform API (`telecrm simulate serve`) runs in its own process; the puller reads every
patient and consultation into a fresh SQLite database (pages of 200), then pulls again to show
the incremental pass.

    .venv/bin/python bench/puller.py --patients 20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_intake import free_port
from telecrm.bootstrap import bootstrap
from telecrm.ingest.puller import PlatformPuller
from telecrm.security.keyring import generate_master_key
from telecrm.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--months", type=int, default=12)
    args = parser.parse_args()
    port = free_port()
    secret = secrets.token_hex(32)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "telecrm.cli",
            "simulate",
            "serve",
            "--port",
            str(port),
            "--patients",
            str(args.patients),
            "--months",
            str(args.months),
            "--print-admin-token",
        ],
        env={**os.environ, "TELECRM_PLATFORM_JWT_SECRET": secret},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        token = None
        assert server.stderr is not None
        for line in server.stderr:
            found = re.search(r"admin token: (\S+)", line)
            if found:
                token = found.group(1)
            if "platform API on" in line:
                break
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        with tempfile.TemporaryDirectory() as tmp:
            rt = bootstrap(
                Settings(
                    home=Path(tmp),
                    database_url=f"sqlite:///{tmp}/pull.db",
                    master_key=generate_master_key(),
                    embedded_worker=False,
                )
            )
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ) as client:
                puller = PlatformPuller(client, rt.intake(), rt.engine, rt.clock, page_size=200)
                started = time.perf_counter()
                first = puller.pull()
                first_s = time.perf_counter() - started
                started = time.perf_counter()
                second = puller.pull()
                second_s = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        json.dumps(
            {
                "benchmark": "puller",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                "patients_simulated": args.patients,
                "first_pull": {
                    "records": first.records,
                    "pages": first.pages,
                    "events_stored": first.accepted,
                    "seconds": round(first_s, 2),
                    "records_per_s": round(first.records / first_s),
                    "rejected": len(first.rejected),
                },
                "second_pull": {
                    "records": second.records,
                    "events_stored": second.accepted,
                    "seconds": round(second_s, 3),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
