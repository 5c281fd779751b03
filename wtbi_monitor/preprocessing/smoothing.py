"""The centred moving average of model-spec section 1.

One kernel serves the batch path (whole segments from files) and the streaming path (a
turbine's last few raw readings plus the new ones). The kernel adds the shifted slices in
a fixed order, element by element, so the two paths give bit-identical smoothed values
for the same raw readings: a property test holds them to exact equality, not a tolerance.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def centred_moving_average(raw: NDArray[np.float64], length: int) -> NDArray[np.float64]:
    """Mean of each run of `length` consecutive rows, computed in a fixed order.

    Row j of the result is the mean of raw rows j .. j + length - 1, i.e. the smoothed value
    of the centre row j + length // 2. Only full averages are produced: no partial averages
    at the edges of a segment.

    Args:
        raw: float64 array of shape (N, C) from ONE contiguous segment.
        length: odd number of rows to average (11 in the paper).

    Returns:
        float64 array of shape (max(N - length + 1, 0), C).
    """
    n_out = raw.shape[0] - length + 1
    if n_out <= 0:
        return np.empty((0, raw.shape[1]), dtype=np.float64)
    acc = raw[0:n_out].copy()
    for k in range(1, length):
        acc += raw[k : k + n_out]
    acc /= length
    return acc
