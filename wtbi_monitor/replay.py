"""Historical files through the streaming code path (`wtbi-monitor replay` and `produce`).

Two ways in, the same `StreamProcessor` behind both, so a replay produces the daemon's
score points, alarm events and dead letters for the same data:

* `replay_messages`: every reading encoded into the JSON message the daemon consumes and
  decoded by the daemon's decoder, in micro-batches (the daemon's exact input path);
* `replay_frames` (the default of `wtbi-monitor replay`): each turbine's readings go to the
  processor as arrays, in large chunks, skipping the JSON round trip. The decoder's checks
  that a file's reading can fail (valid ranges, future times, turbine id, message size) run
  vectorised; a reading they flag is encoded and decoded like a message, so the decoder
  itself gives every verdict, reason and detail. Outputs equal the message path's (tested);
  only their order differs: turbine after turbine instead of interleaved in time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from wtbi_monitor.codec import MAX_TURBINE_ID, encode_reading
from wtbi_monitor.data.wtbi import TurbineFrame
from wtbi_monitor.domain import DeadLetterRecord, InputRecord
from wtbi_monitor.logs import get_logger
from wtbi_monitor.scoring import BatchResult, StreamProcessor

log = get_logger(__name__)

#: Readings per chunk of the fast path: bounds the memory of one chunk's windows
#: (16,384 x 26 x 28 float64 = 95 MB) while keeping the per-chunk cost negligible.
REPLAY_CHUNK = 16_384

#: Upper bound of the characters orjson writes for one float64 ("-1.2345678901234567e-308").
_FLOAT_CHARS = 24


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
            _record(start + i, turbine, message)
            for i, (_t, turbine, message) in enumerate(messages[start : start + batch_records])
        ]
        yield processor.process(records)


def replay_frames(
    processor: StreamProcessor, frames: list[TurbineFrame], *, chunk: int = REPLAY_CHUNK
) -> Iterator[BatchResult]:
    """Each turbine's readings as arrays through the processor, `chunk` readings at a time.

    Offsets are the readings' positions in `frames_to_messages`' order, as in
    `replay_messages`. A farm larger than the processor's turbine cap goes through
    `replay_messages` (in chunks of `chunk` records): which readings the cap rejects
    depends on the interleaving in time.

    Raises:
        ValueError: the processor already tracks one of the turbines (its state would
            skip or reject readings by offset and time), or a frame's channels are not
            the decoder's.
    """
    channels = processor.decoder.channels
    for f in frames:
        if f.channels not in ((), channels) or f.values.shape[1] != len(channels):
            msg = f"turbine {f.turbine_id}: the frame's channels are not the decoder's"
            raise ValueError(msg)
        if f.turbine_id in processor.turbines:
            msg = f"turbine {f.turbine_id}: replay_frames needs a processor without its state"
            raise ValueError(msg)
    cap = processor.max_turbines
    if cap is not None and len(frames) + len(processor.turbines) > cap:
        log.info("replay_through_messages", turbines=len(frames), max_turbines=cap)
        messages = frames_to_messages(frames, channels)
        yield from replay_messages(processor, messages, batch_records=chunk)
        return
    for frame, offsets in zip(frames, merge_offsets(frames), strict=True):
        yield from _replay_frame(processor, frame, offsets, chunk)


def merge_offsets(frames: list[TurbineFrame]) -> list[NDArray[np.int64]]:
    """Each reading's offset in `frames_to_messages`' order (time, then turbine id)."""
    if not frames:
        return []
    rank_of = {tid: k for k, tid in enumerate(sorted(f.turbine_id for f in frames))}
    times = np.concatenate([f.times_ms for f in frames])
    ranks = np.concatenate([np.full(len(f), rank_of[f.turbine_id]) for f in frames])
    offsets = np.empty(times.shape[0], dtype=np.int64)
    offsets[np.lexsort((ranks, times))] = np.arange(times.shape[0])
    bounds = np.cumsum([0, *(len(f) for f in frames)])
    return [offsets[a:b] for a, b in itertools.pairwise(bounds)]


def _suspects(processor: StreamProcessor, frame: TurbineFrame) -> NDArray[np.bool_]:
    """Readings the decoder might reject (a superset: the decoder decides)."""
    decoder = processor.decoder
    turbine = frame.turbine_id
    if not 0 < len(turbine) <= MAX_TURBINE_ID or not turbine.isprintable():
        return np.ones(len(frame), dtype=np.bool_)
    if _longest_message(turbine, decoder.channels) > decoder.max_bytes:
        return np.ones(len(frame), dtype=np.bool_)
    horizon = decoder.clock() * 1000 + decoder.max_future_ms
    suspect: NDArray[np.bool_] = decoder.valid.bad_rows(frame.values) | (frame.times_ms > horizon)
    return suspect


def _longest_message(turbine_id: str, channels: tuple[str, ...]) -> int:
    """An upper bound of the bytes of any reading message of this turbine."""
    shortest = encode_reading(
        turbine_id, -(2**62), np.zeros(len(channels)), channels, group=-(2**62)
    )  # every value written as "0.0"
    return len(shortest) + (_FLOAT_CHARS - 3) * len(channels)


def _replay_frame(
    processor: StreamProcessor,
    frame: TurbineFrame,
    offsets: NDArray[np.int64],
    chunk: int,
) -> Iterator[BatchResult]:
    """One turbine's readings in chunks; flagged readings judged by the decoder, per chunk."""
    n = len(frame)
    groups = frame.groups if frame.groups is not None else np.full(n, -1, dtype=np.int64)
    suspect = _suspects(processor, frame)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        accepted = np.ones(stop - start, dtype=np.bool_)
        dead = []
        flagged = (start + np.flatnonzero(suspect[start:stop])).tolist()
        if flagged:
            records = [_message_record(frame, i, int(offsets[i]), processor) for i in flagged]
            verdicts = processor.decoder.decode_batch([(r.value, r.key) for r in records])
            for j, error in sorted(verdicts.errors.items()):
                dead.append(DeadLetterRecord(records[j], error.reason, error.detail))
                accepted[flagged[j] - start] = False
        rows = start + np.flatnonzero(accepted)
        prepared = processor.prepare_readings(
            frame.turbine_id,
            frame.times_ms[rows],
            frame.values[rows],
            groups[rows],
            offsets[rows],
            dead_letters=dead,
        )
        yield processor.finish(prepared, processor.score(prepared))


def _message_record(
    frame: TurbineFrame, i: int, offset: int, processor: StreamProcessor
) -> InputRecord:
    """Reading i of `frame` as the record `replay_messages` gives it."""
    message = encode_reading(
        frame.turbine_id,
        int(frame.times_ms[i]),
        frame.values[i],
        processor.decoder.channels,
        group=None if frame.groups is None else int(frame.groups[i]),
    )
    return _record(offset, frame.turbine_id, message)


def _record(offset: int, turbine_id: str, message: bytes) -> InputRecord:
    return InputRecord(
        partition=0, offset=offset, key=turbine_id.encode(), value=message, topic="replay"
    )
