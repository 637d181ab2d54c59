"""HTTP intake benchmark: `telecrm serve` (uvicorn, SQLite) on loopback, signed webhooks.

Measures single-event requests/s with p50/p99 latency, and batched events/s (1,000 per request).
The server runs in its own process (one uvicorn worker, embedded projection worker off so the
figure is intake alone); the load generator runs in this process. Prints JSON.

    .venv/bin/python bench/http_intake.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.events import synthetic_events
from bench.loadgen import build_request, run_load
from telecrm.ingest.signatures import generate_secret, signed_headers
from telecrm.security.keyring import generate_master_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    workdir: Path, secret: str, port: int, workers: int = 1
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TELECRM_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "TELECRM_MASTER_KEY": generate_master_key(),
        "TELECRM_WEBHOOK_SECRETS": secret,
        "TELECRM_EMBEDDED_WORKER": "false",
        "TELECRM_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "telecrm.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


def signed(port: int, secret: str, payload: object, msg_id: str) -> bytes:
    body = orjson.dumps(payload)
    headers = signed_headers(secret, msg_id, int(time.time()), body)
    return build_request("127.0.0.1", port, "/v1/events", body, headers)


def in_blocks(events: Iterator[dict], block: int = 500) -> Iterator[dict]:
    """Registrations of `block` patients, then those patients' other events, and so on.

    `synthetic_events` yields each patient's registration followed by their other events.
    """
    registrations: list[dict] = []
    others: list[dict] = []
    for e in events:
        if e["type"] == "patient.registered" and len(registrations) == block:
            yield from registrations
            yield from others
            registrations, others = [], []
        (registrations if e["type"] == "patient.registered" else others).append(e)
    yield from registrations
    yield from others


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="telecrm serve processes")
    args = parser.parse_args()
    secret = generate_secret()
    results: dict[str, object] = {
        "benchmark": "http_intake",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "database": "sqlite (WAL)",
        "server": f"telecrm serve --workers {args.workers}",
    }
    end = datetime.now(UTC) - timedelta(minutes=1)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start_server(Path(tmp), secret, port, args.workers)
        try:
            # Phase 1: one event per request. Requests go out 16 at a time, so a patient's
            # follow-ups are sent a block after their registration, never racing it.
            singles = [
                signed(port, secret, e, f"msg_s{i}")
                for i, e in enumerate(
                    in_blocks(synthetic_events(patients=40_000, end=end, per_patient=3))
                )
            ]
            warm = run_load(
                "127.0.0.1", port, singles[:2000], concurrency=args.concurrency, max_seconds=10
            )
            single = run_load(
                "127.0.0.1",
                port,
                singles[2000:],
                concurrency=args.concurrency,
                max_seconds=args.seconds,
            )
            results["single_event"] = {
                "requests": single.requests,
                "errors": single.errors,
                "statuses": single.statuses,
                "requests_per_s": round(single.requests / single.seconds),
                "p50_ms": round(single.percentile(50) * 1000, 2),
                "p99_ms": round(single.percentile(99) * 1000, 2),
                "concurrency": args.concurrency,
                "warmup_requests": warm.requests,
            }
            # Phase 2: batches of 1,000 events.
            events = list(synthetic_events(patients=100_000, end=end, per_patient=5, id_prefix="b"))
            batches = [
                signed(port, secret, {"events": events[i : i + 1000]}, f"msg_b{i}")
                for i in range(0, len(events), 1000)
            ]
            batched = run_load("127.0.0.1", port, batches, concurrency=4, max_seconds=args.seconds)
            results["batched"] = {
                "requests": batched.requests,
                "errors": batched.errors,
                "events_per_s": round(batched.requests * 1000 / batched.seconds),
                "p50_ms": round(batched.percentile(50) * 1000, 1),
                "p99_ms": round(batched.percentile(99) * 1000, 1),
                "batch_size": 1000,
            }
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
