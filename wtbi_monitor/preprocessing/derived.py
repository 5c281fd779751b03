"""Physics-aware input channels, derived from each raw reading (pure numpy).

* ``power_residual``: power minus the power a healthy turbine produces at the measured
  wind speed, from a per-turbine reference curve binned as in IEA Wind Task 19 (0.5 m/s
  bins, the median of every NORMAL training reading in the bin; bins with too few readings
  of a turbine take the farm-wide median). Ice shows as a negative residual at winds that
  normally produce; an iced anemometer as a positive one.
* ``pitch_asymmetry``: the spread (max - min) of the three blade pitch angles; iced blades,
  loaded unevenly, diverge.

A derived value depends on its own reading only, so the batch path (`apply` on a whole
turbine) and the streaming path (`apply` on each micro-batch) give bit-identical inputs to
the same smoothing kernel: the stream == batch property covers them. The fitted curves are
saved in the bundle manifest; a bundle trained with derived channels refuses data that
lacks their source channels, naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wtbi_monitor.errors import ConfigurationError

F64 = NDArray[np.float64]
#: Source channels each derived channel needs.
SOURCES: dict[str, tuple[str, ...]] = {
    "power_residual": ("wind_speed", "power"),
    "pitch_asymmetry": ("pitch1_angle", "pitch2_angle", "pitch3_angle"),
}
BIN_WIDTH_MS = 0.5  # m/s, IEA Wind Task 19
MAX_WIND_MS = 40.0
#: A turbine's own bin value needs at least this many normal readings.
MIN_BIN_READINGS = 30
POOLED = "*"


def missing_sources(names: tuple[str, ...], channels: tuple[str, ...]) -> dict[str, list[str]]:
    """For each derived channel, the source channels absent from `channels`."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        msg = f"unknown derived channel(s) {unknown}; known: {sorted(SOURCES)}"
        raise ConfigurationError(msg)
    out = {}
    for name in names:
        lacking = [c for c in SOURCES[name] if c not in channels]
        if lacking:
            out[name] = lacking
    return out


def available(names: tuple[str, ...], channels: tuple[str, ...]) -> tuple[str, ...]:
    """The derived channels whose sources all exist in `channels`."""
    lacking = missing_sources(names, channels)
    return tuple(n for n in names if n not in lacking)


@dataclass
class PowerCurveReference:
    """Median power per wind-speed bin, per turbine and pooled over the farm.

    Attributes:
        curves: turbine id -> float64 (B,) median power per bin (NaN: not enough data);
            POOLED ("*") is the farm-wide curve, which also serves unknown turbines.
    """

    curves: dict[str, F64] = field(default_factory=dict)

    @classmethod
    def fit(cls, series: list[tuple[str, F64, F64]]) -> PowerCurveReference:
        """Fit from (turbine id, wind, power) of NORMAL training readings."""
        n_bins = int(MAX_WIND_MS / BIN_WIDTH_MS)
        pooled_w = np.concatenate([w for _, w, _ in series]) if series else np.empty(0)
        pooled_p = np.concatenate([p for _, _, p in series]) if series else np.empty(0)
        curves = {POOLED: _binned_median(pooled_w, pooled_p, n_bins, min_rows=5)}
        if not np.isfinite(curves[POOLED]).any():
            msg = "power_residual: no normal training readings to fit a reference power curve"
            raise ConfigurationError(msg)
        for turbine, wind, power in series:
            own = _binned_median(wind, power, n_bins, min_rows=MIN_BIN_READINGS)
            curves[turbine] = np.where(np.isfinite(own), own, curves[POOLED])
        return cls(curves)

    def expected(self, turbine_id: str, wind: F64) -> F64:
        """Reference power at each wind speed (linear between bin centres, flat outside)."""
        curve = self.curves.get(turbine_id, self.curves[POOLED])
        centres = (np.arange(curve.size) + 0.5) * BIN_WIDTH_MS
        ok = np.isfinite(curve)
        out: F64 = np.interp(wind, centres[ok], curve[ok])
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (NaN as null)."""
        return {
            "bin_width": BIN_WIDTH_MS,
            "curves": {
                k: [None if not np.isfinite(v) else float(v) for v in c]
                for k, c in self.curves.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PowerCurveReference:
        """Inverse of `to_json`."""
        return cls(
            {
                k: np.array([np.nan if v is None else v for v in c], dtype=np.float64)
                for k, c in data["curves"].items()
            }
        )


def _binned_median(wind: F64, power: F64, n_bins: int, *, min_rows: int) -> F64:
    out = np.full(n_bins, np.nan)
    if wind.size == 0:
        return out
    b = np.clip(np.floor(np.maximum(wind, 0.0) / BIN_WIDTH_MS).astype(np.int64), 0, n_bins - 1)
    order = np.argsort(b, kind="stable")
    b_sorted = b[order]
    bounds = np.searchsorted(b_sorted, np.arange(n_bins + 1))
    for k in range(n_bins):
        lo, hi = bounds[k], bounds[k + 1]
        if hi - lo >= min_rows:
            out[k] = float(np.median(power[order[lo:hi]]))
    return out


@dataclass
class DerivedChannels:
    """The derived channels of a model: appended, in this order, after the source channels.

    Attributes:
        names: derived channel names (empty: none).
        source: the source (configured) channels, in input order.
        curve: the power reference, when power_residual is among `names`.
    """

    names: tuple[str, ...]
    source: tuple[str, ...]
    curve: PowerCurveReference | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        """Model input channels: source channels, then derived ones."""
        return (*self.source, *self.names)

    def __bool__(self) -> bool:
        return bool(self.names)

    @classmethod
    def none(cls, source: tuple[str, ...]) -> DerivedChannels:
        """No derived channels."""
        return cls((), source)

    @classmethod
    def fit(
        cls,
        names: tuple[str, ...],
        source: tuple[str, ...],
        normal: list[tuple[str, F64]],
    ) -> DerivedChannels:
        """Fit on NORMAL training readings: (turbine id, values (N, C) in source order)."""
        lacking = missing_sources(names, source)
        if lacking:
            detail = "; ".join(f"{n} needs {', '.join(c)}" for n, c in lacking.items())
            msg = f"derived channels need source channels the data lacks: {detail}"
            raise ConfigurationError(msg)
        curve = None
        if "power_residual" in names:
            w, p = source.index("wind_speed"), source.index("power")
            curve = PowerCurveReference.fit([(t, v[:, w], v[:, p]) for t, v in normal])
        return cls(tuple(names), tuple(source), curve)

    def apply(self, turbine_id: str, values: F64) -> F64:
        """(N, C) source values -> (N, C + D) model inputs (a copy only when D > 0)."""
        if not self.names:
            return values
        extra = np.empty((values.shape[0], len(self.names)))
        for k, name in enumerate(self.names):
            if name == "power_residual":
                if self.curve is None:
                    msg = "power_residual has no fitted reference curve"
                    raise ConfigurationError(msg)
                w = values[:, self.source.index("wind_speed")]
                p = values[:, self.source.index("power")]
                extra[:, k] = p - self.curve.expected(turbine_id, w)
            elif name == "pitch_asymmetry":
                cols = [self.source.index(c) for c in SOURCES[name]]
                pitch = values[:, cols]
                extra[:, k] = pitch.max(axis=1) - pitch.min(axis=1)
        return np.concatenate([values, extra], axis=1)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the bundle manifest."""
        return {
            "names": list(self.names),
            "power_curve": None if self.curve is None else self.curve.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, source: tuple[str, ...]) -> DerivedChannels:
        """Inverse of `to_json` (None: a bundle without derived channels)."""
        if not data:
            return cls.none(source)
        curve = data.get("power_curve")
        return cls(
            tuple(data["names"]),
            source,
            None if curve is None else PowerCurveReference.from_json(curve),
        )
