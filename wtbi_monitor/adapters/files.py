"""The file sink of `wtbi-monitor replay --out`: score points and alarm events as JSON lines.

docs/schemas.md documents the records. An alarm record is the alert-topic message plus a
`type`, so one parser reads both.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson

from wtbi_monitor.codec import alarm_event_to_dict
from wtbi_monitor.domain import TOP_K, AlarmEvent, ScorePoints


def score_records(points: ScorePoints) -> list[dict[str, Any]]:
    """JSON-lines form of the score points (replay output)."""
    out = []
    tops = points.top_index.tolist()
    shares = points.top_share.tolist()
    for i, turbine in enumerate(points.turbine):
        rec: dict[str, Any] = {
            "type": "score",
            "model": points.model,
            "turbine_id": turbine,
            "time_ms": int(points.time_ms[i]),
            "score": float(points.score[i]),
            "threshold": float(points.threshold[i]),
            "tail_probability": float(points.tail_probability[i]),
            "clip_fraction": float(points.clip_fraction[i]),
            "above": bool(points.score[i] > points.threshold[i]),
        }
        if tops[i][0] >= 0:
            rec["top"] = [[tops[i][k], shares[i][k]] for k in range(TOP_K) if tops[i][k] >= 0]
        out.append(rec)
    return out


def alarm_record(event: AlarmEvent) -> dict[str, Any]:
    """JSON-lines form of an alarm event (the alert-topic message plus a type)."""
    return {"type": "alarm", **alarm_event_to_dict(event)}


class JsonLinesSink:
    """Appends score points and alarm events to a JSON-lines file, in delivery order.

    Implements the database port (`ports.DatabaseSink`), so replay to a file goes through
    the same delivery as the daemon; use it as a context manager.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: IO[bytes] = path.open("wb")

    async def write(self, points: ScorePoints, events: list[AlarmEvent]) -> int:
        """Write the records (nothing is refused)."""
        for rec in score_records(points):
            self._fh.write(orjson.dumps(rec) + b"\n")
        for event in events:
            self._fh.write(orjson.dumps(alarm_record(event)) + b"\n")
        return 0

    def close(self) -> None:
        """Flush and close the file."""
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
