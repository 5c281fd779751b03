"""Contiguous segments: where smoothing and windowing must restart.

A new segment starts at the first reading, wherever the time step exceeds the configured
maximum gap, and wherever the source's `group` id changes (docs/domain 'Segments and
gaps'). No smoothed value and no window ever spans two segments.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from wtbi_monitor.errors import DataFormatError


def check_strictly_increasing(times_ms: NDArray[np.int64], what: str = "time") -> None:
    """Raise `DataFormatError` naming the first place where time does not increase.

    Args:
        times_ms: reading times of one turbine, in file order.
        what: name used in the error message (e.g. the file name).
    """
    if times_ms.size < 2:
        return
    steps = np.diff(times_ms)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        i = int(bad[0])
        kind = "duplicate" if steps[i] == 0 else "decreasing"
        msg = (
            f"{what}: {kind} timestamp at row {i + 1} "
            f"({int(times_ms[i])} ms then {int(times_ms[i + 1])} ms); "
            "times must be strictly increasing per turbine"
        )
        raise DataFormatError(msg)


def segment_starts(
    times_ms: NDArray[np.int64],
    groups: NDArray[np.int64] | None,
    max_gap_ms: int,
) -> NDArray[np.bool_]:
    """Mark the readings that start a new contiguous segment.

    Args:
        times_ms: strictly increasing reading times, shape (N,).
        groups: recording-block ids, shape (N,), or None when the source has none.
        max_gap_ms: largest time step that keeps two readings in one segment.

    Returns:
        Boolean array of shape (N,), True where a segment starts.
    """
    n = times_ms.shape[0]
    starts = np.zeros(n, dtype=np.bool_)
    if n == 0:
        return starts
    starts[0] = True
    starts[1:] = np.diff(times_ms) > max_gap_ms
    if groups is not None:
        starts[1:] |= groups[1:] != groups[:-1]
    return starts


def segment_bounds(starts: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Turn segment-start flags into half-open row ranges [begin, end)."""
    begins = np.flatnonzero(starts)
    if begins.size == 0:
        return []
    ends = np.append(begins[1:], starts.shape[0])
    return [(int(b), int(e)) for b, e in zip(begins, ends, strict=True)]
