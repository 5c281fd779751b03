"""InfluxDB-protocol sink (influxdb-client v2 write API), acknowledged writes only.

The sink owns its format: it takes score points and alarm events (the database port,
`ports.DatabaseSink`) and writes them as line protocol (`line_protocol.py`) under its own
measurement names (`influx.score_measurement`, `influx.alarm_measurement`).

influxdb-client's batching mode does not flush on close and can lose data silently
(docs/pitfalls.md), so this sink uses the SYNCHRONOUS write API on explicit chunks of at
most `batch_lines` lines, from a worker thread, with the client's own retries off. Each
failure is classified here and raised as `SinkError` for the service: 429, 5xx and
connection errors are retryable (the Retry-After header is honoured); other 4xx are
permanent and are not retried: the chunk goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime
from typing import Any

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from wtbi_monitor.adapters.line_protocol import lines_of
from wtbi_monitor.config import InfluxSettings
from wtbi_monitor.domain import AlarmEvent, DeadLetterRecord, InputRecord, ScorePoints
from wtbi_monitor.errors import Reason, SinkError
from wtbi_monitor.logs import get_logger
from wtbi_monitor.ports import DeadLetterSink

log = get_logger(__name__)


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), if any."""
    if not headers:
        return None
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime  # noqa: PLC0415 - rare path

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


#: A refused chunk is dead-lettered in pieces of at most this many bytes (whole lines), so
#: that each fits in a producer request and can be re-sent as it is.
DEAD_LETTER_PIECE_BYTES = 512 * 1024


def _pieces(lines: list[str], limit: int) -> list[bytes]:
    """Lines joined by newlines, in pieces of at most `limit` bytes (or one long line)."""
    pieces: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode()
        if current and size + len(data) + 1 > limit:
            pieces.append(b"\n".join(current))
            current, size = [], 0
        current.append(data)
        size += len(data) + 1
    if current:
        pieces.append(b"\n".join(current))
    return pieces


class InfluxSink:
    """Writes score points and alarm events and waits for the database to acknowledge them.

    Args:
        settings: URL, token, org, bucket, batch size, timeout, gzip.
        dead_letters: where chunks the database rejects permanently (4xx) are sent.
    """

    def __init__(
        self,
        settings: InfluxSettings,
        dead_letters: DeadLetterSink | None = None,
        *,
        dead_letter_piece_bytes: int = DEAD_LETTER_PIECE_BYTES,
    ) -> None:
        self.settings = settings
        self.dead_letters = dead_letters
        self.piece_bytes = dead_letter_piece_bytes
        self._client = InfluxDBClient(
            url=settings.url,
            token=settings.token.get_secret_value(),
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
            enable_gzip=settings.gzip,
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)

    def close(self) -> None:
        """Release the HTTP pool."""
        self._write.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]

    async def write(self, points: ScorePoints, events: list[AlarmEvent]) -> int:
        """Write the points and events; see `write_lines` (returns the lines refused)."""
        score, alarm = self.settings.score_measurement, self.settings.alarm_measurement
        return await self.write_lines(lines_of(points, events, score, alarm))

    async def write_lines(self, lines: list[str]) -> int:
        """Write every line; raise `SinkError(retryable=True)` if the database is not there.

        Chunks rejected with a permanent 4xx are dead-lettered and counted, not retried;
        returns how many lines were rejected that way.
        """
        size = self.settings.batch_lines
        rejected = 0
        for start in range(0, len(lines), size):
            chunk = lines[start : start + size]
            try:
                await asyncio.to_thread(self._write_chunk, chunk)
            except SinkError as exc:
                if exc.retryable or self.dead_letters is None:
                    raise
                rejected += len(chunk)
                log.error("database_rejected_lines", lines=len(chunk), error=str(exc))  # noqa: TRY400 - expected, no traceback wanted
                letters = [
                    DeadLetterRecord(
                        InputRecord(
                            partition=-1, offset=-1, key=b"influx", value=part, topic="influx"
                        ),
                        Reason.SINK_REJECTED,
                        str(exc)[:500],
                    )
                    for part in _pieces(chunk, self.piece_bytes)
                ]
                try:
                    await self.dead_letters.publish(letters)
                except SinkError as dlq:
                    if dlq.retryable:
                        raise
                    # Refused for good there too: say so and write the other chunks.
                    log.error("database_rejected_lines_lost", lines=len(chunk), error=str(dlq))  # noqa: TRY400
        return rejected

    def _write_chunk(self, chunk: list[str]) -> None:
        try:
            self._write.write(
                bucket=self.settings.bucket,
                org=self.settings.org,
                record="\n".join(chunk),
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # a str-valued constant
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            retryable = status == 429 or status >= 500 or status == 0
            body = (exc.body or b"")[:300] if isinstance(exc.body, bytes) else str(exc.body)[:300]
            msg = f"database answered {status} {exc.reason}: {body!r}"
            raise SinkError(
                msg, retryable=retryable, retry_after_s=retry_after_seconds(exc.headers)
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            msg = f"database unreachable: {exc!r}"
            raise SinkError(msg, retryable=True) from exc
