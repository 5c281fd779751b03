"""Labelled windows of a farm, built with the same batch preprocessing as everything else.

A window's label is that of its newest sample (docs/domain 'Evaluation protocols'). A
window that touches any UNKNOWN raw row (transition zones) is left out of window metrics;
only windows whose every raw row is NORMAL may be used for training and calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wtbi_monitor.config import PreprocessingSettings
from wtbi_monitor.data.wtbi import TurbineFrame
from wtbi_monitor.domain import Label
from wtbi_monitor.preprocessing import (
    DerivedChannels,
    MinMaxScaler,
    ValidRanges,
    WindowedSeries,
    concat_series,
    window_series,
)
from wtbi_monitor.preprocessing.derived import available


@dataclass(frozen=True)
class LabelledWindows:
    """Windows of several turbines plus their ground truth.

    Attributes:
        series: the windowed series (indices into shared smoothed arrays).
        turbine_ids: turbine id of each `series.window_turbine` index.
        label: int8 (W,), label of each window's newest sample.
        touches_unknown: bool (W,), some raw row of the window is UNKNOWN.
        all_normal: bool (W,), every raw row of the window is NORMAL.
        rows_out_of_range: readings dropped as sensor faults before windowing.
        derived: the derived channels the windows hold after the source ones (or None).
    """

    series: WindowedSeries
    turbine_ids: tuple[str, ...]
    label: NDArray[np.int8]
    touches_unknown: NDArray[np.bool_]
    all_normal: NDArray[np.bool_]
    rows_out_of_range: int = 0
    derived: DerivedChannels | None = None

    def __len__(self) -> int:
        return len(self.series)

    def select(self, index: NDArray[np.bool_] | NDArray[np.int64]) -> LabelledWindows:
        """Only the chosen windows (smoothed data shared)."""
        return LabelledWindows(
            self.series.select(index),
            self.turbine_ids,
            self.label[index],
            self.touches_unknown[index],
            self.all_normal[index],
            self.rows_out_of_range,
            self.derived,
        )

    @property
    def evaluable(self) -> NDArray[np.bool_]:
        """Windows usable in window metrics: labelled, not touching transition zones."""
        mask: NDArray[np.bool_] = ~self.touches_unknown & (self.label != Label.UNKNOWN)
        return mask

    def normal_only(self) -> LabelledWindows:
        """Windows whose every raw row is NORMAL (training and calibration data)."""
        return self.select(self.all_normal)

    @property
    def time_ms(self) -> NDArray[np.int64]:
        """Window timestamps."""
        return self.series.time_ms

    @property
    def turbine(self) -> NDArray[np.str_]:
        """Turbine id of each window."""
        return np.asarray(self.turbine_ids)[self.series.window_turbine]

    def fit_scaler(self, margin: float = 1.0) -> MinMaxScaler:
        """Min-max scaler on every smoothed row covered by these windows."""
        covered = np.zeros(self.series.smoothed.shape[0], dtype=np.bool_)
        for offset in range(self.series.window_length):
            covered[self.series.starts + offset] = True
        return MinMaxScaler.fit(self.series.smoothed[covered], margin)


def drop_out_of_range(
    frames: list[TurbineFrame], pre: PreprocessingSettings
) -> tuple[list[TurbineFrame], int]:
    """Every turbine without its readings outside `preprocessing.valid_ranges`.

    Returns:
        The frames and the number of rows dropped (the caller reports it).
    """
    valid = ValidRanges.for_channels(pre.channels, pre.valid_ranges)
    if not valid.active:
        return frames, 0
    out, dropped = [], 0
    for frame in frames:
        bad = valid.bad_rows(frame.values)
        n_bad = int(bad.sum())
        if n_bad == 0:
            out.append(frame)
            continue
        dropped += n_bad
        keep = ~bad
        out.append(
            TurbineFrame(
                turbine_id=frame.turbine_id,
                times_ms=frame.times_ms[keep],
                values=frame.values[keep],
                groups=None if frame.groups is None else frame.groups[keep],
                labels=frame.labels[keep],
                dropped_rows=frame.dropped_rows,
                source=frame.source,
                channels=frame.channels,
            )
        )
    return out, dropped


def fit_derived(frames: list[TurbineFrame], pre: PreprocessingSettings) -> DerivedChannels:
    """The configured derived channels whose sources exist, fitted on NORMAL readings."""
    names = available(pre.derived, pre.channels)
    if not names:
        return DerivedChannels.none(pre.channels)
    frames, _ = drop_out_of_range(frames, pre)
    normal = [(f.turbine_id, f.values[f.labels == Label.NORMAL]) for f in frames]
    return DerivedChannels.fit(names, pre.channels, normal)


def build_windows(
    frames: list[TurbineFrame],
    pre: PreprocessingSettings,
    *,
    stride: int | None = None,
    derived: DerivedChannels | None = None,
) -> LabelledWindows:
    """Windows of every turbine, labelled: the batch path.

    Out-of-range readings are dropped, derived channels appended (without `derived` the
    windows hold the source channels only), then each turbine is segmented, smoothed and
    windowed.
    """
    frames, out_of_range = drop_out_of_range(frames, pre)
    parts, labels = [], []
    offset = 0
    for k, frame in enumerate(frames):
        values = frame.values
        if derived is not None:
            values = derived.apply(frame.turbine_id, values)
        parts.append(
            window_series(
                frame.times_ms,
                values,
                frame.groups,
                smoothing_length=pre.smoothing_length,
                window_length=pre.window_length,
                max_gap_ms=pre.max_gap_ms,
                stride=stride or pre.stride,
                turbine_index=k,
                row_offset=offset,
            )
        )
        labels.append(frame.labels)
        offset += len(frame)
    if not parts:
        msg = "no turbines to window"
        raise ValueError(msg)
    series = concat_series(parts)
    raw_labels = np.concatenate(labels) if labels else np.empty(0, dtype=np.int8)
    # Prefix sums count UNKNOWN and non-NORMAL rows inside each window's raw span.
    unknown = np.concatenate([[0], np.cumsum(raw_labels == Label.UNKNOWN)])
    not_normal = np.concatenate([[0], np.cumsum(raw_labels != Label.NORMAL)])
    first, last = series.first_raw_row, series.last_raw_row + 1
    return LabelledWindows(
        series=series,
        turbine_ids=tuple(f.turbine_id for f in frames),
        label=raw_labels[series.newest_row] if len(series) else np.empty(0, dtype=np.int8),
        touches_unknown=(unknown[last] - unknown[first]) > 0,
        all_normal=(not_normal[last] - not_normal[first]) == 0,
        rows_out_of_range=out_of_range,
        derived=derived,
    )


def subsample(n: int, limit: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Sorted random indices of at most `limit` out of n (all of them when n <= limit)."""
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=limit, replace=False)).astype(np.int64)


def scaled_windows(
    windows: LabelledWindows, scaler: MinMaxScaler, index: NDArray[np.int64] | None = None
) -> NDArray[np.float32]:
    """Gather and scale windows (float32, clipped to the scaler's band)."""
    raw = windows.series.windows(index)
    scaled, _ = scaler.transform(raw)
    return scaled
