"""Time-ordered splits: earlier data trains, the next part validates, the latest tests.

Cuts are farm-wide times, so no turbine trains on a period another one is tested on.
Frames are cut at the times themselves, so no window straddles a cut.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def time_split(
    frames: list[TurbineFrame], train_fraction: float, validation_fraction: float
) -> TimeSplit:
    """Cut the farm's time span into train / validation / test by fractions."""
    start, end = farm_span(frames)
    span = end - start
    v = start + round(span * train_fraction)
    t = start + round(span * (train_fraction + validation_fraction))
    return TimeSplit(start, v, t, end)


def cut(frames: list[TurbineFrame], start_ms: int | None, end_ms: int | None) -> list[TurbineFrame]:
    """Every turbine's rows with start_ms <= time < end_ms (None: unbounded)."""
    return [f.slice_time(start_ms, end_ms) for f in frames]
