"""Preprocessing: segments, the centred moving average, windows, scaling (pure numpy).

The batch path (`window_series`) and the streaming path (`StreamState`) share one
smoothing kernel and give identical windows and timestamps.
"""

from wtbi_monitor.preprocessing.derived import DerivedChannels
from wtbi_monitor.preprocessing.scaling import MinMaxScaler
from wtbi_monitor.preprocessing.segments import (
    check_strictly_increasing,
    segment_bounds,
    segment_starts,
)
from wtbi_monitor.preprocessing.smoothing import centred_moving_average
from wtbi_monitor.preprocessing.stream import StreamState, StreamWindows
from wtbi_monitor.preprocessing.validity import ValidRanges
from wtbi_monitor.preprocessing.windows import WindowedSeries, concat_series, window_series

__all__ = [
    "DerivedChannels",
    "MinMaxScaler",
    "StreamState",
    "StreamWindows",
    "ValidRanges",
    "WindowedSeries",
    "centred_moving_average",
    "check_strictly_increasing",
    "concat_series",
    "segment_bounds",
    "segment_starts",
    "window_series",
]
