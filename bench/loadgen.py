"""A small keep-alive HTTP/1.1 load generator on asyncio streams (no client library in the way).

Python HTTP clients cost more CPU per request than the server under test; on a 2-core machine
that would measure the client. This one writes pre-built requests and reads Content-Length
bodies, nothing more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str, port: int, next_request: Callable[[], bytes | None], result: LoadResult
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            request = next_request()
            if request is None:
                return
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            result.latencies.append(time.perf_counter() - started)
            result.requests += 1
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status >= 300:
                result.errors += 1
    finally:
        writer.close()


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run_load(
    host: str, port: int, requests: list[bytes], *, concurrency: int, max_seconds: float
) -> LoadResult:
    """Send `requests` over `concurrency` keep-alive connections; stop early after max_seconds."""
    result = LoadResult()
    queue = iter(requests)
    deadline = time.perf_counter() + max_seconds

    def next_request() -> bytes | None:
        if time.perf_counter() > deadline:
            return None
        return next(queue, None)

    async def main() -> None:
        await asyncio.gather(
            *(_connection(host, port, next_request, result) for _ in range(concurrency))
        )

    started = time.perf_counter()
    asyncio.run(main())
    result.seconds = time.perf_counter() - started
    return result
