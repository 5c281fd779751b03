"""A small fault-injecting HTTP proxy in front of the real database (tests only).

Modes: "pass" forwards requests to the upstream server; "503" and "429" answer with that
status and a Retry-After header; "400" answers 400 (a permanent error); "reset" closes the
connection without answering. Every request is recorded in order (`attempts`: mode and
arrival time), counted per mode, and its (decompressed) body kept.

`mode` holds a fault for as long as it is set: a test switches it off on a condition (for
example once `counts[mode]` reached N), never after a sleep. `fail(mode, times)` queues
exactly `times` requests in that mode ahead of `mode`; the queue empties by itself, so a
test never races the daemon to switch a fault off. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections import Counter, deque
from dataclasses import dataclass


@dataclass
class _Step:
    """Requests queued by `FaultProxy.fail`."""

    mode: str
    left: int
    retry_after: str | None


class FaultProxy:
    """HTTP/1.1 proxy with switchable failure modes."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.retry_after = "1"
        self.counts: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.requests: list[tuple[str, bytes]] = []
        self.bodies: list[tuple[str, bytes]] = []
        self.attempts: list[tuple[str, float]] = []  # (mode, arrival time), in order
        self._plan: deque[_Step] = deque()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen on a free loopback port; return it."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def fail(self, mode: str, times: int, retry_after: str | None = None) -> None:
        """Answer `times` more requests in `mode` (after those already queued), then
        go back to `mode` ("pass" unless a test set it); `retry_after` for these only."""
        if times > 0:
            self._plan.append(_Step(mode, times, retry_after))

    @property
    def queued(self) -> int:
        """Requests still queued by `fail`."""
        return sum(step.left for step in self._plan)

    def _next(self) -> tuple[str, str]:
        """Mode and Retry-After for the request that just arrived."""
        if not self._plan:
            return self.mode, self.retry_after
        step = self._plan[0]
        step.left -= 1
        if step.left <= 0:
            self._plan.popleft()
        return step.mode, self.retry_after if step.retry_after is None else step.retry_after

    @property
    def url(self) -> str:
        """Base URL for clients."""
        return f"http://127.0.0.1:{self.port}"

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        return head + body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await self._read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if request is None:
                    return
                mode, retry_after = self._next()
                now = time.monotonic()
                self.counts[mode] += 1
                self.times.setdefault(mode, []).append(now)
                self.attempts.append((mode, now))
                self.requests.append((mode, request.split(b"\r\n", 1)[0]))
                head_part, _, raw_body = request.partition(b"\r\n\r\n")
                if b"content-encoding: gzip" in head_part.lower() and raw_body:
                    raw_body = gzip.decompress(raw_body)
                self.bodies.append((mode, raw_body))
                if mode == "reset":
                    writer.transport.abort()
                    return
                if mode in ("503", "429", "400"):
                    reason = {
                        "503": "Service Unavailable",
                        "429": "Too Many Requests",
                        "400": "Bad Request",
                    }[mode]
                    body = b'{"code":"injected","message":"fault proxy"}'
                    head = (
                        f"HTTP/1.1 {mode} {reason}\r\nRetry-After: {retry_after}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                    )
                    writer.write(head.encode() + body)
                    await writer.drain()
                    continue
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
                # One request per upstream connection keeps the relaying simple: ask the
                # upstream to close after its answer, then relay everything it sends.
                head, _, body = request.partition(b"\r\n\r\n")
                lines = [
                    ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")
                ]
                up_writer.write(b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body)
                await up_writer.drain()
                response = await up_reader.read()
                up_writer.close()
                writer.write(response)
                await writer.drain()
                if b"Connection: close" in response:
                    return
        finally:
            with contextlib.suppress(Exception):
                writer.close()
