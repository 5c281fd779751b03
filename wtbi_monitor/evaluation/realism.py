"""How real does a farm look? The statistics of the generator issue, for any WTBI farm.

`farm_statistics` computes, for a farm in the WTBI format (synthetic or real), the
statistics that decide what a detector learns: power-curve scatter at the 10-minute scale,
the air-density effect in cold weather, climate (time below 0 C, temperature during
icing), what icing does (stops with feathered pitch, deficits, wind, anemometer icing),
episode durations and rates, the wind regime, operating modes, data gaps and sensor
faults. Data sampled faster than 10 minutes is first averaged to 10-minute rows, so a 7 s
farm and a real 10-minute SCADA export are measured alike.

`BANDS` states, for each statistic, the value measured on a real wind farm's 10-minute
SCADA (4 turbines of 2 MW, two years, icing labelled by an IEA Task 19 style rule; the
numbers come from the project's generator issue, the data itself is not in the repository)
and the band a realistic generator must fall in. Climate statistics have a second band for
a WINTER run (a few weeks of a cold season), which is allowed to be colder than a whole
year. docs/realism.md explains each definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from wtbi_monitor.data.wtbi import TurbineFrame, runs
from wtbi_monitor.domain import Label

F64 = NDArray[np.float64]
TEN_MIN_MS = 600_000
HOUR_MS = 3_600_000
#: A turbine counts as stopped at or below this share of rated power.
STOPPED_SHARE = 0.01
#: Reference curve (IEA Task 19): production at ambient temperatures above this (C).
WARM_C = 3.0
BIN_MS = 0.5  # wind-speed bin width (m/s)
MIN_BIN_ROWS = 10
#: Physically impossible values are counted as sensor faults and then ignored.
TEMP_LIMITS = (-60.0, 60.0)
PITCH_LIMITS = (-10.0, 120.0)
#: Consecutive identical 10-minute values of wind or temperature that count as frozen.
FROZEN_ROWS = 6


@dataclass(frozen=True)
class Band:
    """What a realistic farm should show for one statistic.

    Attributes:
        key: statistic name (a key of `farm_statistics`).
        label: human description, with its unit.
        real: the value measured on real 10-minute SCADA (None: reported, not measured).
        low, high: the band for a year-long run (None: unbounded on that side).
        winter: an overriding (low, high) band for a winter run, for climate statistics.
    """

    key: str
    label: str
    real: float | None
    low: float | None
    high: float | None
    winter: tuple[float | None, float | None] | None = None
    #: a winter run may be too short to measure this (e.g. too few warm windy rows).
    optional_in_winter: bool = False

    def bounds(self, season: str) -> tuple[float | None, float | None]:
        """The band that applies to a 'year' or a 'winter' run."""
        if season == "winter" and self.winter is not None:
            return self.winter
        return self.low, self.high

    def holds(self, value: float | None, season: str) -> bool:
        """Whether `value` lies inside the band (a missing value never does)."""
        if value is None or not math.isfinite(value):
            return season == "winter" and self.optional_in_winter
        low, high = self.bounds(season)
        return (low is None or value >= low) and (high is None or value <= high)


BANDS: tuple[Band, ...] = (
    Band(
        "residual_sd",
        "power-curve residual, warm normal production 4-11 m/s, robust sd (MAD), of rated",
        0.019,
        0.012,
        0.030,
    ),
    Band("residual_p1", "residual P1, of rated", -0.065, -0.11, -0.035),
    Band("residual_p99", "residual P99, of rated", 0.078, 0.04, 0.12),
    Band(
        "spread_4_8",
        "P10-P90 spread of power per 0.5 m/s bin, 4-8 m/s, of rated",
        0.070,
        0.045,
        0.11,
    ),
    Band("spread_8_12", "P10-P90 spread, 8-12 m/s, of rated", 0.118, 0.07, 0.17),
    Band(
        "spread_12_16",
        "P10-P90 spread, 12-16 m/s, of rated",
        0.071,
        0.02,
        0.12,
        optional_in_winter=True,
    ),
    # In a winter run the warm (> +3 C) reference is itself cool, so the density contrast
    # with sub-zero operation is smaller than over a year.
    Band(
        "cold_median_residual",
        "cold (< 0 C) ice-free production 4-11 m/s vs the warm curve: median residual, of rated",
        0.045,
        0.02,
        0.08,
        winter=(0.005, 0.08),
    ),
    Band(
        "cold_share_above_0p1",
        "... share above +0.1 of rated",
        0.11,
        0.03,
        0.25,
        winter=(0.002, 0.25),
    ),
    Band(
        "below_zero_share", "time below 0 C, share of rows", 0.015, 0.005, 0.04, winter=(0.03, 0.6)
    ),
    Band(
        "below_zero_share_nov_mar",
        "time below 0 C in November-March",
        0.037,
        0.015,
        0.09,
        winter=(0.03, 0.6),
    ),
    Band("icing_temp_median", "temperature during icing, median (C)", -1.5, -3.5, -0.5),
    Band("icing_temp_p10", "temperature during icing, P10 (C)", -5.3, -9.0, -2.0),
    Band("icing_temp_p90", "temperature during icing, P90 (C)", -0.2, -1.5, 0.8),
    Band(
        "temp_auroc_all",
        "AUROC of ambient temperature alone (colder = higher), all rows",
        0.99,
        0.93,
        1.0,
        winter=(0.6, 1.0),
    ),
    Band(
        "temp_auroc_below0", "AUROC of ambient temperature alone, rows below 0 C", 0.57, 0.4, 0.72
    ),
    Band(
        "icing_stopped_share",
        "icing rows with the turbine stopped (power <= 1 % of rated)",
        0.76,
        0.5,
        0.9,
    ),
    Band(
        "icing_stopped_pitch_median", "pitch of stopped icing rows, median (deg)", 90.0, 75.0, 95.0
    ),
    Band(
        "icing_deficit_median",
        "power deficit while producing during icing, median, of rated",
        -0.074,
        -0.15,
        -0.03,
    ),
    Band("icing_wind_median", "wind during icing, median (m/s)", 5.7, 4.0, 8.0),
    Band(
        "icing_above_curve_share",
        "icing rows above the P90 curve (iced anemometer)",
        0.03,
        0.0,
        0.08,
    ),
    Band("event_duration_min_h", "icing event duration, minimum (h)", 0.67, 0.1, 1.5),
    Band("event_duration_median_h", "icing event duration, median (h)", 2.3, 1.0, 5.0),
    Band("event_duration_max_h", "icing event duration, maximum (h)", 23.0, 6.0, 48.0),
    Band("events_short_share", "icing events of at most 40 minutes, share", 5 / 26, 0.03, 0.4),
    Band("events_per_720h_below0", "icing events per turbine per 720 h below 0 C", 17.9, 8.0, 30.0),
    Band("wind_mean", "mean wind speed (m/s)", 5.4, 4.5, 7.0),
    Band("wind_p99", "wind speed P99 (m/s)", 12.4, 10.5, 15.0),
    Band("rated_share", "time at rated power (>= 95 % of rated)", 0.005, 0.001, 0.03),
    Band("wind_acf_1h", "wind autocorrelation at 1 h", 0.88, 0.8, 0.95),
    Band("wind_acf_6h", "wind autocorrelation at 6 h", 0.61, 0.45, 0.75),
    Band("wind_acf_24h", "wind autocorrelation at 24 h", 0.30, 0.12, 0.45),
    Band(
        "stopped_windy_share",
        "stopped with wind >= 5 m/s (not icing), share of rows",
        0.010,
        0.003,
        0.03,
    ),
    Band(
        "curtailed_share",
        "curtailed (capped production, pitched), share of rows",
        0.003,
        0.0005,
        0.012,
    ),
    Band("missing_share", "missing 10-minute rows, share", 0.006, 0.001, 0.03),
    Band("gaps_per_turbine_week", "gaps per turbine-week", 0.18, 0.05, 0.6),
    Band("longest_gap_h", "longest gap (h)", 133.0, 6.0, None, winter=(2.0, None)),
    Band(
        "frozen_rows",
        "rows of frozen wind or temperature sensors (>= 1 h unchanged)",
        None,
        1.0,
        None,
    ),
    Band(
        "impossible_temp_rows", "rows with an impossible temperature (e.g. -273 C)", None, 1.0, None
    ),
    Band("pitch_outlier_rows", "rows with a pitch angle outside -10..120 deg", None, 1.0, None),
    Band("zero_rows", "rows with wind = 0 and power = 0 exactly", None, 1.0, None),
)
BAND_BY_KEY = {b.key: b for b in BANDS}


# ---------------------------------------------------------------------------- channels


@dataclass(frozen=True)
class Physical:
    """The physical channels of one turbine on a 10-minute grid (NaN where missing).

    Attributes:
        turbine_id: the turbine.
        slot_ms: int64 (n,), start of each 10-minute slot from the first to the last one.
        present: bool (n,), a reading exists in the slot.
        wind, power, temp, pitch: float64 (n,); pitch is NaN when there is no pitch channel.
        label: int8 (n,), ICING when at least half the slot's readings are, NORMAL when all
            are, UNKNOWN otherwise (and where missing).
    """

    turbine_id: str
    slot_ms: NDArray[np.int64]
    present: NDArray[np.bool_]
    wind: F64
    power: F64
    temp: F64
    pitch: F64
    label: NDArray[np.int8]


def _column(frame: TurbineFrame, names: tuple[str, ...]) -> F64 | None:
    """The first of `names` that the frame has; for pitch1..3 their mean."""
    for name in names:
        if name in frame.channels:
            out: F64 = frame.values[:, frame.channels.index(name)].astype(np.float64)
            return out
    blades = [c for c in ("pitch1_angle", "pitch2_angle", "pitch3_angle") if c in frame.channels]
    if "pitch" in names[0] and blades:
        cols = [frame.channels.index(c) for c in blades]
        mean: F64 = frame.values[:, cols].mean(axis=1)
        return mean
    return None


def to_ten_minutes(frame: TurbineFrame) -> Physical:
    """Average a turbine's readings into 10-minute slots (a 10-minute farm is kept as is)."""
    wind = _column(frame, ("wind_speed",))
    power = _column(frame, ("power",))
    temp = _column(frame, ("environment_tmp", "ambient_temperature", "temperature"))
    if wind is None or power is None or temp is None:
        msg = (
            f"turbine {frame.turbine_id}: the realism report needs wind_speed, power and "
            f"environment_tmp; the data has {list(frame.channels)}"
        )
        raise ValueError(msg)
    pitch = _column(frame, ("pitch_angle", "pitch1_angle"))
    pitch = np.full_like(wind, np.nan) if pitch is None else pitch
    slot = (frame.times_ms // TEN_MIN_MS).astype(np.int64)
    first, last = int(slot[0]), int(slot[-1])
    n = last - first + 1
    idx = slot - first
    count = np.bincount(idx, minlength=n).astype(np.float64)
    present = count > 0

    def mean(x: F64) -> F64:
        # Impossible temperatures and pitch outliers would dominate a 10-minute mean; the
        # fault counts are taken on the raw readings (see `sensor_faults`).
        ok = np.isfinite(x)
        s = np.bincount(idx[ok], weights=x[ok], minlength=n)
        c = np.bincount(idx[ok], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out: F64 = np.where(c > 0, s / np.maximum(c, 1), np.nan)
        return out

    temp_ok = np.where((temp > TEMP_LIMITS[0]) & (temp < TEMP_LIMITS[1]), temp, np.nan)
    pitch_ok = np.where((pitch > PITCH_LIMITS[0]) & (pitch < PITCH_LIMITS[1]), pitch, np.nan)
    icing = np.bincount(idx, weights=(frame.labels == Label.ICING).astype(float), minlength=n)
    normal = np.bincount(idx, weights=(frame.labels == Label.NORMAL).astype(float), minlength=n)
    label = np.full(n, Label.UNKNOWN, dtype=np.int8)
    label[present & (normal == count)] = Label.NORMAL
    label[present & (icing >= 0.5 * count)] = Label.ICING
    return Physical(
        turbine_id=frame.turbine_id,
        slot_ms=(np.arange(first, last + 1, dtype=np.int64) * TEN_MIN_MS),
        present=present,
        wind=mean(wind),
        power=mean(power),
        temp=mean(temp_ok),
        pitch=mean(pitch_ok),
        label=label,
    )


def sensor_faults(frame: TurbineFrame) -> dict[str, int]:
    """Counts of the sensor faults a reader and the daemon must survive (raw readings)."""
    wind = _column(frame, ("wind_speed",))
    power = _column(frame, ("power",))
    temp = _column(frame, ("environment_tmp", "ambient_temperature", "temperature"))
    pitch = _column(frame, ("pitch_angle", "pitch1_angle"))
    out = {"impossible_temp_rows": 0, "pitch_outlier_rows": 0, "zero_rows": 0, "frozen_rows": 0}
    if temp is not None:
        out["impossible_temp_rows"] = int(np.sum((temp <= TEMP_LIMITS[0]) | (temp >= 60.0)))
    if pitch is not None:
        out["pitch_outlier_rows"] = int(np.sum((pitch < PITCH_LIMITS[0]) | (pitch > 120.0)))
    if wind is not None and power is not None:
        out["zero_rows"] = int(np.sum((wind == 0.0) & (power == 0.0)))
    # Frozen: the same value for at least an hour of readings.
    step_ms = float(np.median(np.diff(frame.times_ms))) if len(frame) > 1 else TEN_MIN_MS
    run_len = max(FROZEN_ROWS, round(HOUR_MS / max(step_ms, 1.0)))
    for x in (wind, temp):
        if x is None or x.size < run_len:
            continue
        same = np.r_[False, x[1:] == x[:-1]]
        for a, b in runs(same):
            if b - a + 2 >= run_len and x[a] != 0.0:
                out["frozen_rows"] += b - a + 2
    return out


# ---------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class Curve:
    """The warm-weather reference: per 0.5 m/s bin, P10, P50 and P90 of power, and P50 pitch."""

    p10: F64
    p50: F64
    p90: F64
    pitch50: F64
    rated_kw: float

    def bins(self, wind: F64) -> NDArray[np.int64]:
        """Bin index of each wind speed."""
        b: NDArray[np.int64] = np.clip(
            np.floor(np.nan_to_num(wind, nan=0.0) / BIN_MS), 0, self.p50.size - 1
        ).astype(np.int64)
        return b

    def expected(self, wind: F64) -> F64:
        """Median warm power at each wind speed, interpolated between bin centres."""
        centres = (np.arange(self.p50.size) + 0.5) * BIN_MS
        ok = np.isfinite(self.p50)
        out: F64 = np.interp(wind, centres[ok], self.p50[ok])
        return out


def reference_curve(rows: list[Physical], max_wind: float = 30.0) -> Curve:
    """P10/P50/P90 of warm NORMAL production per wind bin, pooled over turbines."""
    n_bins = int(max_wind / BIN_MS)
    wind = np.concatenate([r.wind for r in rows])
    power = np.concatenate([r.power for r in rows])
    temp = np.concatenate([r.temp for r in rows])
    pitch = np.concatenate([r.pitch for r in rows])
    label = np.concatenate([r.label for r in rows])
    rough_rated = float(np.nanquantile(power, 0.999))
    ref = (label == Label.NORMAL) & (temp > WARM_C) & (power > STOPPED_SHARE * rough_rated)
    ref &= np.isfinite(wind)
    b = np.clip(np.floor(wind[ref] / BIN_MS), 0, n_bins - 1).astype(int)
    p = power[ref]
    q = pitch[ref]
    p10, p50, p90, pitch50 = (np.full(n_bins, np.nan) for _ in range(4))
    for k in range(n_bins):
        sel = p[b == k]
        if sel.size >= MIN_BIN_ROWS:
            p10[k], p50[k], p90[k] = np.quantile(sel, [0.1, 0.5, 0.9])
            qs = q[b == k]
            qs = qs[np.isfinite(qs)]
            pitch50[k] = float(np.median(qs)) if qs.size else np.nan
    if not np.isfinite(p50).any():
        msg = "no warm (> +3 C) normal production rows: cannot build a reference power curve"
        raise ValueError(msg)
    return Curve(p10, p50, p90, pitch50, float(np.nanmax(p50)))


# ---------------------------------------------------------------------------- statistics


def _auroc(labels: NDArray[np.int8], score: F64) -> float | None:
    ok = np.isfinite(score) & ((labels == Label.ICING) | (labels == Label.NORMAL))
    y = labels[ok] == Label.ICING
    if not (0 < y.sum() < y.size):
        return None
    return float(roc_auc_score(y, score[ok]))


def _acf(x: F64, lag: int) -> float:
    a, b = x[:-lag], x[lag:]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 10:
        return math.nan
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _events(r: Physical) -> list[tuple[int, int]]:
    """Runs of ICING slots; a gap of up to 30 minutes inside a run does not end it."""
    icing = r.label == Label.ICING
    merged = icing.copy()
    for a, b in runs(~icing):
        if a > 0 and b < icing.size - 1 and (b - a + 1) <= 3 and not r.present[a : b + 1].any():
            merged[a : b + 1] = True
    return runs(merged)


def farm_statistics(frames: list[TurbineFrame]) -> dict[str, Any]:
    """Every statistic of `BANDS` for a farm (plus a few counts for context)."""
    rows = [to_ten_minutes(f) for f in frames if len(f) > 1]
    if not rows:
        msg = "no turbine has readings"
        raise ValueError(msg)
    curve = reference_curve(rows)
    rated = curve.rated_kw

    def cat(name: str) -> Any:
        return np.concatenate([getattr(r, name) for r in rows])

    wind, power, temp, pitch, label = (cat(k) for k in ("wind", "power", "temp", "pitch", "label"))
    present = cat("present")
    slot = cat("slot_ms")
    residual = (power - curve.expected(wind)) / rated
    producing = present & (power > STOPPED_SHARE * rated)
    mid = producing & (wind >= 4.0) & (wind <= 11.0)
    normal = label == Label.NORMAL
    icing = label == Label.ICING
    warm_normal = mid & normal & (temp > WARM_C)
    cold_normal = mid & normal & (temp < 0.0)
    out: dict[str, Any] = {"turbines": len(rows), "rows_10min": int(present.sum())}
    res = residual[warm_normal]
    if res.size:
        med = float(np.median(res))
        out["residual_sd"] = 1.4826 * float(np.median(np.abs(res - med)))
        out["residual_p1"], out["residual_p99"] = (float(v) for v in np.quantile(res, [0.01, 0.99]))
    # Spread of the warm reference itself, per bin, averaged over the bins of each range.
    spread = (curve.p90 - curve.p10) / rated
    centres = (np.arange(spread.size) + 0.5) * BIN_MS
    for lo, hi in ((4, 8), (8, 12), (12, 16)):
        sel = (centres >= lo) & (centres < hi) & np.isfinite(spread)
        out[f"spread_{lo}_{hi}"] = float(np.mean(spread[sel])) if sel.any() else None
    cold = residual[cold_normal]
    if cold.size:
        out["cold_median_residual"] = float(np.median(cold))
        out["cold_share_above_0p1"] = float(np.mean(cold > 0.1))
    t_ok = present & np.isfinite(temp)
    out["below_zero_share"] = float(np.mean(temp[t_ok] < 0.0))
    months = (slot.astype("datetime64[ms]").astype("datetime64[M]").astype(int) % 12) + 1
    winter = t_ok & np.isin(months, (11, 12, 1, 2, 3))
    out["below_zero_share_nov_mar"] = float(np.mean(temp[winter] < 0.0)) if winter.any() else None
    ice_t = temp[icing & np.isfinite(temp)]
    if ice_t.size:
        p10, p50, p90 = np.quantile(ice_t, [0.1, 0.5, 0.9])
        out |= {"icing_temp_p10": p10, "icing_temp_median": p50, "icing_temp_p90": p90}
    out["temp_auroc_all"] = _auroc(label, -temp)
    below = temp < 0.0
    out["temp_auroc_below0"] = _auroc(np.where(below, label, Label.UNKNOWN).astype(np.int8), -temp)
    n_ice = int(icing.sum())
    out["icing_rows"] = n_ice
    if n_ice:
        stopped = icing & present & (power <= STOPPED_SHARE * rated)
        out["icing_stopped_share"] = float(stopped.sum() / n_ice)
        sp = pitch[stopped & np.isfinite(pitch)]
        out["icing_stopped_pitch_median"] = float(np.median(sp)) if sp.size else None
        deficit = residual[icing & producing]
        out["icing_deficit_median"] = float(np.median(deficit)) if deficit.size else None
        out["icing_wind_median"] = float(np.nanmedian(wind[icing]))
        b = curve.bins(wind)
        judged = np.isfinite(curve.p90[b])
        above = icing & producing & judged & (power > np.where(judged, curve.p90[b], np.inf))
        out["icing_above_curve_share"] = float(above.sum() / n_ice)
    durations: list[float] = []
    hours_below = 0.0
    for r in rows:
        durations += [(b - a + 1) * TEN_MIN_MS / HOUR_MS for a, b in _events(r)]
        hours_below += float(np.sum(r.present & (r.temp < 0.0))) * TEN_MIN_MS / HOUR_MS
    out["events"] = len(durations)
    if durations:
        d = np.asarray(durations)
        out["event_duration_min_h"] = float(d.min())
        out["event_duration_median_h"] = float(np.median(d))
        out["event_duration_max_h"] = float(d.max())
        out["events_short_share"] = float(np.mean(d <= 40 / 60 + 1e-9))
    per_turbine_hours_below = hours_below / len(rows)
    if per_turbine_hours_below > 0:
        out["events_per_720h_below0"] = (len(durations) / len(rows)) / (
            per_turbine_hours_below / 720.0
        )
    w_ok = present & np.isfinite(wind)
    out["wind_mean"] = float(np.mean(wind[w_ok]))
    out["wind_p99"] = float(np.quantile(wind[w_ok], 0.99))
    out["rated_share"] = float(np.mean(power[present] >= 0.95 * rated))
    for hours in (1, 6, 24):
        vals = [_acf(r.wind, hours * 6) for r in rows]
        vals = [v for v in vals if math.isfinite(v)]
        out[f"wind_acf_{hours}h"] = float(np.mean(vals)) if vals else None
    not_icing = present & ~icing & (label != Label.UNKNOWN)
    stopped_all = power <= STOPPED_SHARE * rated
    out["stopped_windy_share"] = float(np.mean((stopped_all & (wind >= 5.0))[not_icing]))
    b = curve.bins(wind)
    pitch_ref = curve.pitch50[b]
    curtailed = (
        producing
        & (wind >= 6.0)
        & (power <= 0.8 * curve.expected(wind))
        & np.isfinite(pitch_ref)
        & (pitch >= np.nan_to_num(pitch_ref, nan=np.inf) + 3.0)
    )
    out["curtailed_share"] = float(np.mean(curtailed[not_icing]))
    missing = 0
    gaps = 0
    longest = 0.0
    weeks = 0.0
    for r in rows:
        missing += int((~r.present).sum())
        gap_runs = runs(~r.present)
        gaps += len(gap_runs)
        if gap_runs:
            longest = max(longest, *((b - a + 1) * TEN_MIN_MS / HOUR_MS for a, b in gap_runs))
        weeks += r.present.size * TEN_MIN_MS / (7 * 24 * HOUR_MS)
    total = sum(r.present.size for r in rows)
    out["missing_share"] = missing / total
    out["gaps_per_turbine_week"] = gaps / weeks if weeks else None
    out["longest_gap_h"] = longest
    faults = [sensor_faults(f) for f in frames]
    for key in ("frozen_rows", "impossible_temp_rows", "pitch_outlier_rows", "zero_rows"):
        out[key] = float(sum(f[key] for f in faults))
    out["rated_kw_estimate"] = rated
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in out.items()}


def check_bands(stats: dict[str, Any], season: str) -> list[tuple[Band, Any, bool]]:
    """Each band with the farm's value and whether it holds."""
    return [(b, stats.get(b.key), b.holds(stats.get(b.key), season)) for b in BANDS]


def season_of(frames: list[TurbineFrame]) -> str:
    """'year' for records of at least 300 days, 'winter' for shorter ones."""
    span = max(int(f.times_ms[-1]) for f in frames) - min(int(f.times_ms[0]) for f in frames)
    return "year" if span >= 300 * 24 * HOUR_MS else "winter"


# ---------------------------------------------------------------------------- report


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"
    return str(value)


def _band_text(band: Band, season: str) -> str:
    low, high = band.bounds(season)
    if low is None and high is None:
        return "any"
    if high is None:
        return f">= {_fmt(low)}"
    if low is None:
        return f"<= {_fmt(high)}"
    return f"{_fmt(low)} .. {_fmt(high)}"


def report_rows(stats: dict[str, Any], season: str) -> list[tuple[str, str, str, str, str]]:
    """(statistic, value, real, band, verdict) for every band."""
    return [
        (
            band.label,
            _fmt(value),
            _fmt(band.real),
            _band_text(band, season),
            "in band" if ok else "OUT",
        )
        for band, value, ok in check_bands(stats, season)
    ]


def plot_power_curve(frames: list[TurbineFrame], path: Path) -> None:
    """10-minute power vs wind (normal, icing) with the warm P10/P50/P90 curve; residuals.

    The right panel is the histogram of the residual of warm and of cold normal production.
    """
    import matplotlib as mpl  # noqa: PLC0415 - plotting is optional and slow to import

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = [to_ten_minutes(f) for f in frames if len(f) > 1]
    curve = reference_curve(rows)
    rated = curve.rated_kw
    wind = np.concatenate([r.wind for r in rows])
    power = np.concatenate([r.power for r in rows]) / rated
    temp = np.concatenate([r.temp for r in rows])
    label = np.concatenate([r.label for r in rows])
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(11, 4.2))
    rng = np.random.default_rng(0)
    normal = np.flatnonzero(label == Label.NORMAL)
    normal = normal[rng.permutation(normal.size)[:20_000]]
    ax.scatter(wind[normal], power[normal], s=1, c="0.6", alpha=0.4, label="normal")
    icing = label == Label.ICING
    ax.scatter(wind[icing], power[icing], s=3, c="tab:blue", alpha=0.7, label="icing")
    centres = (np.arange(curve.p50.size) + 0.5) * BIN_MS
    for q, style in ((curve.p10, "--"), (curve.p50, "-"), (curve.p90, "--")):
        ax.plot(centres, q / rated, style, c="tab:red", lw=1)
    ax.set(xlabel="wind speed (m/s, 10-min mean)", ylabel="power / rated", xlim=(0, 20))
    ax.set_title("power curve; red: warm reference P10 / P50 / P90")
    ax.legend(loc="upper left", markerscale=4)
    residual = power - curve.expected(wind) / rated
    ok = (label == Label.NORMAL) & (temp > WARM_C) & (wind >= 4) & (wind <= 11)
    ok &= power > STOPPED_SHARE
    hist.hist(residual[ok], bins=120, range=(-0.2, 0.2), color="0.4")
    cold = (label == Label.NORMAL) & (temp < 0) & (wind >= 4) & (wind <= 11) & (power > 0.01)
    if cold.sum() > 20:
        hist.hist(residual[cold], bins=120, range=(-0.2, 0.2), color="tab:cyan", alpha=0.6)
    hist.set(xlabel="residual (power - warm P50) / rated, 4-11 m/s", ylabel="10-min rows")
    hist.set_title("grey: warm normal; cyan: cold (< 0 C) ice-free")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    frames: list[TurbineFrame], out_dir: Path, *, title: str, command: str
) -> tuple[Path, list[tuple[Band, Any, bool]]]:
    """realism.md plus power_curve.png in `out_dir`; returns the page and the band checks."""
    stats = farm_statistics(frames)
    season = season_of(frames)
    checks = check_bands(stats, season)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_power_curve(frames, out_dir / "power_curve.png")
    inside = sum(ok for _, _, ok in checks)
    lines = [
        f"# Realism report: {title}",
        "",
        (
            f"Made by `{command}`. {stats['turbines']} turbines, "
            f"{stats['rows_10min']:,} 10-minute rows, {stats.get('events', 0)} icing events, "
            f"rated power estimated at {stats['rated_kw_estimate']:,.0f} kW; judged as a "
            f"{'year-long' if season == 'year' else 'winter'} run. "
            f"{inside} of {len(checks)} statistics inside their band."
        ),
        "",
        "| statistic | this farm | real 10-minute SCADA | band | |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in report_rows(stats, season)]
    lines += [
        "",
        "![power curve and residuals](power_curve.png)",
        "",
        "Definitions: docs/realism.md.",
        "",
    ]
    page = out_dir / "realism.md"
    page.write_text("\n".join(lines))
    return page, checks
