"""Historical files through the streaming code path (`wtbi-monitor replay` and `produce`).

Readings are encoded into the same JSON messages the daemon consumes, decoded by the same
decoder and processed by the same `StreamProcessor`, so a replay produces exactly the
daemon's score points and alarm events for the same data.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from wtbi_monitor.codec import encode_reading
from wtbi_monitor.data.wtbi import TurbineFrame
from wtbi_monitor.domain import InputRecord
from wtbi_monitor.scoring import BatchResult, StreamProcessor


def frames_to_messages(
    frames: list[TurbineFrame], channels: tuple[str, ...], *, compact: bool = False
) -> list[tuple[int, str, bytes]]:
    """Every reading of every turbine as (time_ms, turbine_id, message), merged by time."""
    per_turbine = []
    for frame in frames:
        groups = frame.groups
        rows = [
            (
                int(frame.times_ms[i]),
                frame.turbine_id,
                encode_reading(
                    frame.turbine_id,
                    int(frame.times_ms[i]),
                    frame.values[i],
                    channels,
                    group=None if groups is None else int(groups[i]),
                    compact=compact,
                ),
            )
            for i in range(len(frame))
        ]
        per_turbine.append(rows)
    return list(heapq.merge(*per_turbine, key=lambda r: (r[0], r[1])))


def replay_messages(
    processor: StreamProcessor,
    messages: list[tuple[int, str, bytes]],
    *,
    batch_records: int = 2000,
) -> Iterator[BatchResult]:
    """Process messages in micro-batches of `batch_records`, as the daemon would."""
    for start in range(0, len(messages), batch_records):
        records = [
            InputRecord(
                partition=0, offset=start + i, key=turbine.encode(), value=message, topic="replay"
            )
            for i, (_t, turbine, message) in enumerate(messages[start : start + batch_records])
        ]
        yield processor.process(records)
