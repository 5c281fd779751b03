"""/metrics (Prometheus text format) and /healthz on the event loop (asyncio streams).

    GET /metrics        Prometheus exposition of the service's registry
    GET /healthz        200 when live and ready, else 503; JSON body with every flag
    GET /healthz/live   200 while the main loop turns (liveness)
    GET /healthz/ready  200 when assigned, consuming and able to write (readiness)

A few dozen lines of asyncio are enough for two read-only endpoints; a web framework would
be a larger dependency than the feature.
"""

from __future__ import annotations

import asyncio

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from wtbi_monitor.logs import get_logger
from wtbi_monitor.telemetry import Health, ServiceMetrics

log = get_logger(__name__)
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HttpEndpoint:
    """The metrics and health server of one service instance."""

    def __init__(self, metrics: ServiceMetrics, health: Health, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful when `port` is 0)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("http_listening", host=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a request (pure, for tests)."""
        if method != "GET":
            return 405, "text/plain", b"method not allowed\n"
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
        if path in ("/healthz", "/healthz/live", "/healthz/ready"):
            state = self.health.as_dict()
            ok = {
                "/healthz": state["live"] and state["ready"],
                "/healthz/live": state["live"],
                "/healthz/ready": state["ready"],
            }[path]
            return (200 if ok else 503), "application/json", orjson.dumps(state) + b"\n"
        return 404, "text/plain", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("GET", "/")
            status, ctype, body = self.respond(method, path)
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that goes away is not our problem
        finally:
            writer.close()
