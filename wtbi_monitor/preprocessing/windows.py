"""Batch windowing: from one turbine's raw readings to indexed L x C windows.

Windows are not materialised up front. A `WindowedSeries` keeps the smoothed series of all
segments back to back plus the start index of every window, and gathers windows on demand:
a month of 7 s data is about 370k stride-1 windows, which would take 1 GB as float32 copies
but only a few MB as indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wtbi_monitor.preprocessing.segments import (
    check_strictly_increasing,
    segment_bounds,
    segment_starts,
)
from wtbi_monitor.preprocessing.smoothing import centred_moving_average


@dataclass(frozen=True)
class WindowedSeries:
    """Smoothed readings of one or more turbines and the windows cut from them.

    Attributes:
        smoothed: float64 (M, C), smoothed values of every segment, back to back.
        smoothed_time_ms: int64 (M,), time of each smoothed value (its centre reading).
        centre_row: int64 (M,), row of the centre reading in the caller's raw array.
        starts: int64 (W,), index into `smoothed` of each window's oldest row.
        window_turbine: int32 (W,), index of the turbine each window belongs to.
        window_length: L, smoothed rows per window.
        smoothing_length: raw rows averaged into one smoothed value.
    """

    smoothed: NDArray[np.float64]
    smoothed_time_ms: NDArray[np.int64]
    centre_row: NDArray[np.int64]
    starts: NDArray[np.int64]
    window_turbine: NDArray[np.int32]
    window_length: int
    smoothing_length: int

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def n_channels(self) -> int:
        """Number of channels C."""
        return int(self.smoothed.shape[1])

    @property
    def time_ms(self) -> NDArray[np.int64]:
        """Each window's timestamp: the time of its newest smoothed value."""
        return self.smoothed_time_ms[self.starts + self.window_length - 1]

    @property
    def first_raw_row(self) -> NDArray[np.int64]:
        """Oldest raw row that contributes to each window."""
        return self.centre_row[self.starts] - self.smoothing_length // 2

    @property
    def last_raw_row(self) -> NDArray[np.int64]:
        """Newest raw row that contributes to each window."""
        return self.centre_row[self.starts + self.window_length - 1] + self.smoothing_length // 2

    @property
    def newest_row(self) -> NDArray[np.int64]:
        """Raw row of each window's newest smoothed value (its label row)."""
        return self.centre_row[self.starts + self.window_length - 1]

    def windows(self, index: NDArray[np.int64] | slice | None = None) -> NDArray[np.float64]:
        """Gather windows as a float64 array of shape (n, L, C)."""
        starts = self.starts if index is None else self.starts[index]
        rows = starts[:, None] + np.arange(self.window_length)[None, :]
        out: NDArray[np.float64] = self.smoothed[rows]
        return out

    def select(self, mask_or_index: NDArray[np.bool_] | NDArray[np.int64]) -> WindowedSeries:
        """A view with only the chosen windows (the smoothed series is shared, not copied)."""
        return WindowedSeries(
            smoothed=self.smoothed,
            smoothed_time_ms=self.smoothed_time_ms,
            centre_row=self.centre_row,
            starts=self.starts[mask_or_index],
            window_turbine=self.window_turbine[mask_or_index],
            window_length=self.window_length,
            smoothing_length=self.smoothing_length,
        )


def window_series(
    times_ms: NDArray[np.int64],
    values: NDArray[np.float64],
    groups: NDArray[np.int64] | None,
    *,
    smoothing_length: int,
    window_length: int,
    max_gap_ms: int,
    stride: int = 1,
    turbine_index: int = 0,
    row_offset: int = 0,
) -> WindowedSeries:
    """Segment, smooth and window one turbine's readings (the batch path).

    Args:
        times_ms: strictly increasing times, shape (N,).
        values: float64 raw readings, shape (N, C), all finite.
        groups: recording-block ids, shape (N,), or None.
        smoothing_length: odd moving-average length (11).
        window_length: smoothed rows per window (26).
        max_gap_ms: a larger time step starts a new segment.
        stride: keep every `stride`-th window of each segment, counting from its first.
        turbine_index: stored in `window_turbine` for every window.
        row_offset: added to raw row numbers (to index a larger concatenated array).

    Returns:
        The windowed series.
    """
    check_strictly_increasing(times_ms)
    half = smoothing_length // 2
    smoothed_parts: list[NDArray[np.float64]] = []
    time_parts: list[NDArray[np.int64]] = []
    row_parts: list[NDArray[np.int64]] = []
    start_parts: list[NDArray[np.int64]] = []
    m = 0  # smoothed rows emitted so far
    for begin, end in segment_bounds(segment_starts(times_ms, groups, max_gap_ms)):
        smooth = centred_moving_average(values[begin:end], smoothing_length)
        k = smooth.shape[0]
        if k == 0:
            continue
        centre = np.arange(begin + half, begin + half + k, dtype=np.int64)
        smoothed_parts.append(smooth)
        time_parts.append(times_ms[centre])
        row_parts.append(centre + row_offset)
        n_windows = k - window_length + 1
        if n_windows > 0:
            start_parts.append(np.arange(m, m + n_windows, stride, dtype=np.int64))
        m += k
    c = values.shape[1]
    starts = np.concatenate(start_parts) if start_parts else np.empty(0, dtype=np.int64)
    return WindowedSeries(
        smoothed=np.concatenate(smoothed_parts) if smoothed_parts else np.empty((0, c)),
        smoothed_time_ms=(
            np.concatenate(time_parts) if time_parts else np.empty(0, dtype=np.int64)
        ),
        centre_row=np.concatenate(row_parts) if row_parts else np.empty(0, dtype=np.int64),
        starts=starts,
        window_turbine=np.full(starts.shape[0], turbine_index, dtype=np.int32),
        window_length=window_length,
        smoothing_length=smoothing_length,
    )


def concat_series(parts: list[WindowedSeries]) -> WindowedSeries:
    """Join the windowed series of several turbines into one (indices are shifted)."""
    if not parts:
        msg = "concat_series needs at least one series"
        raise ValueError(msg)
    offsets = np.cumsum([0] + [p.smoothed.shape[0] for p in parts[:-1]])
    return WindowedSeries(
        smoothed=np.concatenate([p.smoothed for p in parts]),
        smoothed_time_ms=np.concatenate([p.smoothed_time_ms for p in parts]),
        centre_row=np.concatenate([p.centre_row for p in parts]),
        starts=np.concatenate([p.starts + o for p, o in zip(parts, offsets, strict=True)]),
        window_turbine=np.concatenate([p.window_turbine for p in parts]),
        window_length=parts[0].window_length,
        smoothing_length=parts[0].smoothing_length,
    )
