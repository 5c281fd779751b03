"""Incremental per-turbine preprocessing for the daemon (the streaming path).

The state of one turbine is tiny: the last S - 1 raw readings of the current segment
(S = smoothing length) and the last L - 1 smoothed values (L = window length). Feeding
readings runs the SAME smoothing kernel as the batch path on (kept tail + new readings),
so the windows and their timestamps equal the batch path's exactly (tested with
hypothesis). `push` takes one reading and returns zero or one window; `push_many` takes a
turbine's readings from one micro-batch and returns all windows they complete, vectorised.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wtbi_monitor.domain import ReadyWindow
from wtbi_monitor.errors import Reason, RecordError
from wtbi_monitor.preprocessing.smoothing import centred_moving_average


@dataclass(frozen=True)
class StreamWindows:
    """Windows completed by one `push_many` call, oldest first.

    Attributes:
        time_ms: int64 (n,), each window's timestamp (newest smoothed value's time).
        values: float64 (n, L, C), smoothed unscaled windows.
    """

    time_ms: NDArray[np.int64]
    values: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.time_ms.shape[0])


@dataclass
class StreamState:
    """Smoothing and windowing state of ONE turbine.

    Args:
        n_channels: C.
        smoothing_length: S, odd.
        window_length: L.
        max_gap_ms: a larger step between readings starts a new segment.
        stride: emit every `stride`-th window of a segment (1 in the daemon).
    """

    n_channels: int
    smoothing_length: int
    window_length: int
    max_gap_ms: int
    stride: int = 1
    last_time_ms: int | None = None
    last_group: int | None = None
    _raw: NDArray[np.float64] = field(init=False, repr=False)
    _raw_time: NDArray[np.int64] = field(init=False, repr=False)
    _smooth: NDArray[np.float64] = field(init=False, repr=False)
    _smooth_time: NDArray[np.int64] = field(init=False, repr=False)
    _windows_in_segment: int = field(init=False, default=0)
    segments_started: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._reset_segment()

    def _reset_segment(self) -> None:
        c = self.n_channels
        self._raw = np.empty((0, c), dtype=np.float64)
        self._raw_time = np.empty(0, dtype=np.int64)
        self._smooth = np.empty((0, c), dtype=np.float64)
        self._smooth_time = np.empty(0, dtype=np.int64)
        self._windows_in_segment = 0

    @property
    def buffered_readings(self) -> int:
        """Raw readings held (at most smoothing_length - 1)."""
        return int(self._raw.shape[0])

    @property
    def warming_up(self) -> bool:
        """True until the current segment has produced its first window."""
        return self._windows_in_segment == 0

    def check_time(self, time_ms: int) -> None:
        """Raise `RecordError` if a reading at `time_ms` would not be strictly newer."""
        if self.last_time_ms is not None and time_ms <= self.last_time_ms:
            reason = Reason.DUPLICATE_TIME if time_ms == self.last_time_ms else Reason.OUT_OF_ORDER
            detail = (
                f"time {time_ms} ms is not after the turbine's last reading {self.last_time_ms}"
            )
            raise RecordError(reason, detail)

    def push(
        self, time_ms: int, values: NDArray[np.float64], group: int | None = None
    ) -> ReadyWindow | None:
        """Feed one reading; return the window it completes, if any (turbine id left empty)."""
        out = self.push_many(
            np.array([time_ms], dtype=np.int64),
            values.reshape(1, -1),
            None if group is None else np.array([group], dtype=np.int64),
        )
        if len(out) == 0:
            return None
        return ReadyWindow(turbine_id="", time_ms=int(out.time_ms[0]), values=out.values[0])

    def push_many(
        self,
        times_ms: NDArray[np.int64],
        values: NDArray[np.float64],
        groups: NDArray[np.int64] | None = None,
    ) -> StreamWindows:
        """Feed readings of this turbine, oldest first; return the windows they complete.

        Args:
            times_ms: int64 (k,), strictly increasing and after `last_time_ms`.
            values: float64 (k, C), finite.
            groups: int64 (k,) recording-block ids, or None.

        Returns:
            The completed windows, oldest first.

        Raises:
            RecordError: a time is not strictly after the previous one (nothing is consumed).
        """
        k = int(times_ms.shape[0])
        c = self.n_channels
        empty = StreamWindows(
            np.empty(0, dtype=np.int64), np.empty((0, self.window_length, c), dtype=np.float64)
        )
        if k == 0:
            return empty
        self.check_time(int(times_ms[0]))
        if k > 1 and bool(np.any(np.diff(times_ms) <= 0)):
            detail = "times within one batch must be strictly increasing"
            raise RecordError(Reason.OUT_OF_ORDER, detail)
        # Segment breaks: against the previous reading, and inside this batch.
        prev_t = np.empty(k, dtype=np.int64)
        prev_t[1:] = times_ms[:-1]
        prev_t[0] = times_ms[0] if self.last_time_ms is None else self.last_time_ms
        breaks = (times_ms - prev_t) > self.max_gap_ms
        if self.last_time_ms is None:
            breaks[0] = True
        if groups is not None:
            prev_g = np.empty(k, dtype=np.int64)
            prev_g[1:] = groups[:-1]
            prev_g[0] = groups[0] if self.last_group is None else self.last_group
            breaks |= groups != prev_g
        cut = [*np.flatnonzero(breaks).tolist(), k]
        pieces: list[StreamWindows] = []
        if cut[0] != 0:
            pieces.append(self._extend(times_ms[: cut[0]], values[: cut[0]]))
        for a, b in itertools.pairwise(cut):
            self._reset_segment()
            self.segments_started += 1
            pieces.append(self._extend(times_ms[a:b], values[a:b]))
        self.last_time_ms = int(times_ms[-1])
        if groups is not None:
            self.last_group = int(groups[-1])
        pieces = [p for p in pieces if len(p)]
        if not pieces:
            return empty
        if len(pieces) == 1:
            return pieces[0]
        return StreamWindows(
            np.concatenate([p.time_ms for p in pieces]),
            np.concatenate([p.values for p in pieces]),
        )

    def snapshot(self) -> dict[str, Any]:
        """The complete state as a JSON-ready dict; float64 values are kept bit-exact."""
        return {
            "last_time_ms": self.last_time_ms,
            "last_group": self.last_group,
            "windows_in_segment": self._windows_in_segment,
            "segments_started": self.segments_started,
            "raw": encode_array(self._raw),
            "raw_time": self._raw_time.tolist(),
            "smooth": encode_array(self._smooth),
            "smooth_time": self._smooth_time.tolist(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load a `snapshot()` taken with the same channel count and lengths."""
        c = self.n_channels
        raw = decode_array(data["raw"]).reshape(-1, c)
        smooth = decode_array(data["smooth"]).reshape(-1, c)
        if raw.shape[0] >= self.smoothing_length or smooth.shape[0] >= self.window_length:
            msg = "snapshot does not fit this stream state's smoothing or window length"
            raise ValueError(msg)
        self._raw, self._smooth = raw, smooth
        self._raw_time = np.asarray(data["raw_time"], dtype=np.int64)
        self._smooth_time = np.asarray(data["smooth_time"], dtype=np.int64)
        self._windows_in_segment = int(data["windows_in_segment"])
        self.segments_started = int(data["segments_started"])
        self.last_time_ms = data["last_time_ms"]
        self.last_group = data["last_group"]

    def _extend(self, times_ms: NDArray[np.int64], values: NDArray[np.float64]) -> StreamWindows:
        """Add readings of the current segment; return the windows they complete."""
        s, ln = self.smoothing_length, self.window_length
        raw = np.concatenate([self._raw, values]) if self._raw.shape[0] else values
        raw_time = np.concatenate([self._raw_time, times_ms])
        new_smooth = centred_moving_average(raw, s)
        new_time = raw_time[s // 2 : s // 2 + new_smooth.shape[0]]
        self._raw = raw[-(s - 1) :].copy() if s > 1 else raw[:0].copy()
        self._raw_time = raw_time[-(s - 1) :].copy() if s > 1 else raw_time[:0].copy()
        smooth = np.concatenate([self._smooth, new_smooth])
        smooth_time = np.concatenate([self._smooth_time, new_time])
        n_win = smooth.shape[0] - ln + 1
        if n_win > 0:
            index = np.arange(n_win)
            keep = (self._windows_in_segment + index) % self.stride == 0
            starts = index[keep]
            out = StreamWindows(
                smooth_time[starts + ln - 1],
                smooth[starts[:, None] + np.arange(ln)[None, :]],
            )
            self._windows_in_segment += n_win
        else:
            out = StreamWindows(
                np.empty(0, dtype=np.int64),
                np.empty((0, ln, self.n_channels), dtype=np.float64),
            )
        self._smooth = smooth[-(ln - 1) :].copy()
        self._smooth_time = smooth_time[-(ln - 1) :].copy()
        return out


def encode_array(values: NDArray[np.float64]) -> str:
    """float64 array -> base64 of its little-endian bytes (exact, compact)."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


def decode_array(text: str) -> NDArray[np.float64]:
    """Inverse of `encode_array` (1-D; the caller reshapes)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f8").astype(np.float64)
