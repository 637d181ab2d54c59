"""Drives the read API for bench/api_reads.py: keep-alive GETs with a bearer token (or a token
fetched before every read, the naive client), and a summary of py-spy's samples of the server.

Like bench/loadgen.py it writes raw HTTP/1.1 on asyncio streams, so the client's CPU stays small
next to the server's on a 2-core machine; unlike it, requests are built as they go (a random
patient each) and bodies are read (the naive client needs the token out of one).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.loadgen import LoadResult


@dataclass
class ReadClient:
    port: int
    keys: list[str]
    reason: str
    token: str | None
    basic: str  # base64 of client_id:secret, for POST /oauth/token
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def read_request(self, token: str) -> bytes:
        pid = self.rng.choice(self.keys)
        return (
            f"GET /v1/patients/{pid} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nX-Telecrm-Reason: {self.reason}\r\n\r\n"
        ).encode()

    def token_request(self) -> bytes:
        body = b"grant_type=client_credentials"
        return (
            f"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Basic {self.basic}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body


class Reads(LoadResult):
    def summary(self, concurrency: int) -> dict[str, Any]:
        return {
            "reads": self.requests,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "reads_per_s": round(self.requests / self.seconds, 1),
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
            "concurrency": concurrency,
            "seconds": round(self.seconds, 1),
        }


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
    body = await reader.readexactly(length) if length else b""
    return int(head[9:12]), body


async def _one_read(
    client: ReadClient, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, naive: bool
) -> int:
    token = client.token
    if naive:
        status, body = await _exchange(reader, writer, client.token_request())
        if status != 200:
            return status
        token = str(orjson.loads(body)["access_token"])
    assert token is not None
    status, _ = await _exchange(reader, writer, client.read_request(token))
    return status


def run_reads(client: ReadClient, *, naive: bool, concurrency: int, seconds: float) -> Reads:
    """Reads on `concurrency` keep-alive connections for `seconds`; a read's latency includes
    its token request when `naive`."""
    result = Reads()
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status = await _one_read(client, reader, writer, naive)
                result.latencies.append(time.perf_counter() - started)
                result.requests += 1
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status != 200:
                    result.errors += 1
        finally:
            writer.close()

    async def main() -> None:
        await asyncio.gather(*(connection() for _ in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(main())
    result.seconds = time.perf_counter() - started
    return result


# What a sample of the server is doing, by the frames on its stack: the first rule that matches
# wins, so each sample lands in one bucket. Markers are parts of py-spy's frame names.
BUCKETS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    # (bucket, markers, True: all markers anywhere in the stack / False: in the leaf frame)
    ("token check: ES256 signature + claims (jwt.decode)", ("_checked_claims (",), True),
    ("token check: client lookup in the database", ("_own_principal (",), True),
    ("token check: the rest (shape, unverified decode, key)", ("verify (", "tokens.py"), True),
    ("handler: audit entry (record_read -> append_audit)", ("record_read (",), True),
    ("handler: profile select (live_profile)", ("live_profile (",), True),
    ("handler: decode + decrypt + cut to the role", ("profile_json (",), True),
    ("handler: transaction, commit, the rest", ("get_patient (",), True),
    ("access dependencies: role, reason (api/access.py)", ("telecrm/api/access.py",), True),
    ("HTTP I/O (uvicorn httptools, socket writes)", ("httptools_impl",), False),
    ("thread hand-offs (anyio worker threads, 3 per read)", ("anyio/",), True),
    ("FastAPI / Starlette (routing, dependency solving, JSON response)", ("fastapi/",), True),
    ("FastAPI / Starlette (routing, dependency solving, JSON response)", ("starlette/",), True),
)


def _bucket(stack: str) -> str:
    leaf = stack.rsplit(";", 1)[-1]
    for name, markers, anywhere in BUCKETS:
        where = stack if anywhere else leaf
        if all(m in where for m in markers):
            return name
    return "other (event loop, uvicorn, interpreter)"


def profile_summary(raw: str) -> dict[str, Any]:
    """Shares of py-spy's samples (`--format raw`) by bucket, and the top leaf frames."""
    total = 0
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        buckets[_bucket(stack)] += count
        leaves[stack.rsplit(";", 1)[-1]] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "share_of_samples": {name: round(n / total, 3) for name, n in buckets.most_common()},
        "top_leaf_frames": [
            {"frame": frame, "share": round(n / total, 3)} for frame, n in leaves.most_common(12)
        ],
    }
