"""Time-ordered splits: earlier data trains and validates, the latest tests.

Cuts are farm-wide times, so no turbine trains on a period another one is tested on.
Frames are cut at the times themselves, so no window straddles a cut.

Validation inside the development (training) period is taken either as its newest tail
(`tail`, the paper's way) or as interleaved blocks spread over the whole period (`blocks`,
the default): a tail of autumn weeks does not represent winter, so a threshold calibrated
on it fires far more often in winter than its target rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from wtbi_monitor.data.wtbi import TurbineFrame


@dataclass(frozen=True)
class TimeSplit:
    """Farm-wide cut times in ms.

    train = [start, validation_start), validation = [validation_start, test_start),
    test = [test_start, end].
    """

    start_ms: int
    validation_start_ms: int
    test_start_ms: int
    end_ms: int


def farm_span(frames: list[TurbineFrame]) -> tuple[int, int]:
    """Earliest and latest reading time over the farm."""
    starts = [int(f.times_ms[0]) for f in frames if len(f)]
    ends = [int(f.times_ms[-1]) for f in frames if len(f)]
    if not starts:
        msg = "the data has no readings"
        raise ValueError(msg)
    return min(starts), max(ends)


def parse_date_ms(text: str) -> int:
    """Epoch ms of an ISO date or date-time (naive = UTC)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def time_split(
    frames: list[TurbineFrame],
    train_fraction: float,
    validation_fraction: float,
    *,
    validation_start: str | None = None,
    test_start: str | None = None,
) -> TimeSplit:
    """Cut the farm's time span into train / validation / test, by fractions or dates.

    Dates (ISO, UTC) win over fractions; without a validation date the validation part keeps
    its share of the development period.
    """
    start, end = farm_span(frames)
    span = end - start
    t = start + round(span * (train_fraction + validation_fraction))
    if test_start is not None:
        t = parse_date_ms(test_start)
    share = train_fraction / (train_fraction + validation_fraction)
    v = start + round((t - start) * share)
    if validation_start is not None:
        v = parse_date_ms(validation_start)
    if not start < v <= t < end:
        msg = (
            "time split: need start < validation start <= test start < end; got "
            f"{start}, {v}, {t}, {end} ms"
        )
        raise ValueError(msg)
    return TimeSplit(start, v, t, end)


def cut(frames: list[TurbineFrame], start_ms: int | None, end_ms: int | None) -> list[TurbineFrame]:
    """Every turbine's rows with start_ms <= time < end_ms (None: unbounded)."""
    return [f.slice_time(start_ms, end_ms) for f in frames]


def select_rows(frame: TurbineFrame, keep: np.ndarray) -> TurbineFrame:
    """The rows of `frame` where `keep` is True (a removed stretch becomes a time gap)."""
    return TurbineFrame(
        turbine_id=frame.turbine_id,
        times_ms=frame.times_ms[keep],
        values=frame.values[keep],
        groups=None if frame.groups is None else frame.groups[keep],
        labels=frame.labels[keep],
        dropped_rows=0,
        source=frame.source,
        channels=frame.channels,
    )


def interleaved(
    frames: list[TurbineFrame], validation_fraction: float, block_ms: int
) -> tuple[list[TurbineFrame], list[TurbineFrame]]:
    """Split farm-wide blocks of `block_ms`: every k-th block validates (k = 1 / fraction).

    Blocks are numbered from the farm's first reading, and the first validation block is
    the one in the middle of the first k, so neither edge of the record is favoured. A
    block boundary is a cut in time: the block's first window starts after it (the windowing
    sees the removed block as a gap), so no window straddles training and validation.
    """
    start, _ = farm_span(frames)
    every = max(2, round(1.0 / validation_fraction))
    train, validation = [], []
    for f in frames:
        block = (f.times_ms - start) // block_ms
        is_val = (block % every) == every // 2
        train.append(select_rows(f, ~is_val))
        validation.append(select_rows(f, is_val))
    return train, validation
