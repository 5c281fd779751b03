"""Per-channel min-max scaling fitted on training normal data only.

The authors fitted their scaler over the whole file, test and icing rows included: that
leaks the test range into training. Here the scaler is fitted on the smoothed values of
the training windows, stored in the bundle manifest, and values outside the fitted range
are clipped to [0, 1]; the clipped fraction is reported because a rising fraction means
the turbine is operating outside what the model has seen (drift).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wtbi_monitor.errors import DataFormatError, NotFittedError


@dataclass(frozen=True)
class MinMaxScaler:
    """Fitted per-channel minimum and maximum.

    Attributes:
        minimum: float64 (C,).
        maximum: float64 (C,); a constant channel (max == min) maps to 0.
    """

    minimum: NDArray[np.float64]
    maximum: NDArray[np.float64]

    @classmethod
    def fit(cls, values: NDArray[np.float64]) -> MinMaxScaler:
        """Fit on rows of shape (M, C) (all finite)."""
        if values.ndim != 2 or values.shape[0] == 0:
            msg = f"cannot fit a scaler on an array of shape {values.shape}"
            raise NotFittedError(msg)
        if not np.all(np.isfinite(values)):
            msg = "scaler training data contains non-finite values"
            raise DataFormatError(msg)
        return cls(values.min(axis=0), values.max(axis=0))

    @property
    def span(self) -> NDArray[np.float64]:
        """Max - min per channel, with constant channels given a span of 1."""
        span = self.maximum - self.minimum
        return np.where(span > 0, span, 1.0)

    def transform(self, values: NDArray[np.float64]) -> tuple[NDArray[np.float32], int]:
        """Scale to [0, 1] along the last axis and clip.

        Args:
            values: float64 array whose last axis is the C channels, e.g. (n, L, C).

        Returns:
            The scaled float32 array and the number of clipped values.
        """
        scaled = (values - self.minimum) / self.span
        clipped = int(np.count_nonzero((scaled < 0.0) | (scaled > 1.0)))
        np.clip(scaled, 0.0, 1.0, out=scaled)
        return scaled.astype(np.float32), clipped

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the bundle manifest."""
        return {"minimum": self.minimum.tolist(), "maximum": self.maximum.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MinMaxScaler:
        """Inverse of `to_json`."""
        return cls(
            np.asarray(data["minimum"], dtype=np.float64),
            np.asarray(data["maximum"], dtype=np.float64),
        )
