"""Physical plausibility: readings outside a channel's valid range are not data.

Real SCADA carries sensor faults that are finite but impossible (an ambient temperature of
-273.15 C, a pitch angle of 359 deg). Such a reading would stretch the scaler and dominate
an 11-sample average, so it is treated like a missing reading: the batch path drops the
row (and counts it), the streaming path dead-letters the record with reason
`out_of_range`. Both therefore window the same remaining readings (the stream == batch
property holds). Ranges are configuration (`preprocessing.valid_ranges`); channels without
a range are not checked, so standardised data without units can be used unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ValidRanges:
    """Per-channel [low, high] bounds in model channel order (+-inf: unchecked).

    Attributes:
        channels: channel names.
        low: float64 (C,).
        high: float64 (C,).
    """

    channels: tuple[str, ...]
    low: NDArray[np.float64]
    high: NDArray[np.float64]

    @classmethod
    def for_channels(
        cls, channels: tuple[str, ...], ranges: dict[str, tuple[float, float]]
    ) -> ValidRanges:
        """Bounds of the configured channels (ranges of other channels are ignored)."""
        low = np.array([ranges.get(c, (-np.inf, np.inf))[0] for c in channels], dtype=float)
        high = np.array([ranges.get(c, (-np.inf, np.inf))[1] for c in channels], dtype=float)
        return cls(channels, low, high)

    @property
    def active(self) -> bool:
        """Whether any channel is checked."""
        return bool(np.isfinite(self.low).any() or np.isfinite(self.high).any())

    def bad_rows(self, values: NDArray[np.float64]) -> NDArray[np.bool_]:
        """(N,) True where some value of the row (N, C) is outside its range."""
        if not self.active or values.shape[0] == 0:
            return np.zeros(values.shape[0], dtype=np.bool_)
        outside = (values < self.low) | (values > self.high)
        out: NDArray[np.bool_] = np.any(outside, axis=1)
        return out

    def violation(self, row: NDArray[np.float64]) -> str | None:
        """A message naming the first out-of-range value of one reading, or None."""
        if not self.active:
            return None
        bad = np.flatnonzero((row < self.low) | (row > self.high))
        if bad.size == 0:
            return None
        k = int(bad[0])
        return (
            f"{self.channels[k]} = {float(row[k])!r} is outside its valid range "
            f"[{self.low[k]:g}, {self.high[k]:g}]"
        )
