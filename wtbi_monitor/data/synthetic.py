"""A synthetic wind farm in the WTBI format, calibrated to real 10-minute SCADA.

The real WTBI data cannot be downloaded here, and every detection number the project
publishes is measured on this generator, so it is calibrated statistic by statistic to a
real farm's 10-minute SCADA (docs/realism.md gives the statistics, their bands and the
measured values; `wtbi-monitor realism` computes them for any farm). Two profiles:

* ``wtbi``: the 26 WTBI channels at ~7 s (some steps 10 s), a WINTER run at a cold site
  (default 4 turbines x 28 days from 1 November) with its episode list in episodes.json;
* ``scada10``: real-shaped data, 10-minute averages of 7 channels (wind_speed, power,
  pitch_angle, environment_tmp, yaw_position, wind_direction, vane_position), a 2 MW class
  turbine, a mild climate with a seasonal cycle (default 4 turbines x 2 years).

Physics and climate, shared by both (every process is defined in continuous time, so the
two profiles are the same farm sampled differently):

* weather: a Weibull wind made of a fast (hours) and a slow (days) component, so that it
  persists over hours and days like real wind; a seasonal temperature cycle with
  anomalies of weeks, synoptic swings of days and a diurnal cycle; a latent humidity that
  decides when icing weather happens (humidity is not a channel: cold alone is not ice);
* each turbine: a cubic-then-rated power curve driven by the rotor-effective wind, which
  differs from the nacelle anemometer's by a slowly varying ratio (flow distortion, shear,
  veer): this is the power scatter of real 10-minute data, largest where the curve is
  steep; air density and stable stratification raise power in cold weather below rated;
  pitch near 0 below rated and rising above it, feathered (~90 deg) when stopped; yaw that
  follows the wind with a dead band; motor/cabinet/nacelle temperatures that follow load and
  ambient with lags; vibration; maintenance and fault stops; curtailment; low-wind idling;
* icing: accretion while icing weather lasts (mostly between -6 and 0 C), a power deficit
  that grows with the ice, and in most episodes a stop by the ice detector with the pitch
  feathered until the ice is shed or thaws, then a restart; short episodes as well as long
  ones; anemometer icing (the wind reading falls, power looks TOO HIGH) as a minority mode;
* data defects: single missing samples (7 s profile), rare long outages (each starts a new
  `group`), and sensor faults the reader and the daemon must survive: frozen wind or
  temperature sensors, impossible temperatures (-273.15 C), pitch outliers, rows with wind
  and power exactly 0.

Labels follow the WTBI convention: ICING where the ice's effect is visible (a power deficit
of at least 5 % of the curve, or a stop by the ice detector), UNKNOWN around it (where ice is
present but too weak to see, and a margin), NORMAL elsewhere. Everything is deterministic
for a given seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from scipy.signal import lfilter
from scipy.special import ndtr

from wtbi_monitor.config import SimulationSettings
from wtbi_monitor.data.wtbi import TurbineFrame, runs, write_turbine
from wtbi_monitor.domain import DEFAULT_CHANNELS, MS_PER_DAY, Label

F64 = NDArray[np.float64]
B = NDArray[np.bool_]
HOUR_S = 3600.0
DAY_S = 86400.0
MIN_RPM, MAX_RPM = 9.0, 17.3
#: Channels of the real-shaped 10-minute profile, in file order.
SCADA10_CHANNELS: tuple[str, ...] = (
    "wind_speed",
    "power",
    "pitch_angle",
    "environment_tmp",
    "yaw_position",
    "wind_direction",
    "vane_position",
)
BLADE_AFFECTED = (
    "power",
    "generator_speed",
    "pitch1_angle",
    "pitch2_angle",
    "pitch3_angle",
    "pitch_angle",
    "acc_x",
    "acc_y",
)
FEATHERED_DEG = 89.0


@dataclass(frozen=True)
class Climate:
    """Farm weather parameters (temperatures in C, times in hours unless stated)."""

    mean_c: float  # annual mean
    seasonal_amplitude_c: float  # half the difference between summer and winter means
    coldest_day: float  # day of year of the coldest seasonal mean
    anomaly_sd_c: float  # colder or milder spells of weeks
    anomaly_tau_days: float
    synoptic_sd_c: float  # weather systems passing over days
    synoptic_tau_h: float
    diurnal_amplitude_c: float
    cold_spells_per_winter: float  # cold-air outbreaks of a few days (November-March)
    cold_spell_depth_c: float  # their mean depth
    weibull_k: float
    weibull_c: float  # m/s
    wind_slow_share: float  # variance share of the slow (days) wind component
    wind_fast_tau_h: float
    wind_slow_tau_h: float
    winter_wind_boost: float  # winter mean wind / annual mean wind - 1
    icing_humidity_z: float  # icing weather when the latent humidity exceeds this (N(0,1))
    icing_warmest_c: float  # icing weather only below this temperature...
    icing_coldest_c: float  # ...and above this one (colder air holds too little water)
    icing_cold_preference: float  # lowers the humidity needed per degree below 0 (to -4 C)


@dataclass(frozen=True)
class Turbine:
    """The turbine model."""

    rated_kw: float
    cut_in: float
    rated_wind: float
    cut_out: float
    #: sd and correlation time of the rotor-effective / measured wind ratio - 1.
    flow_sd: float
    flow_tau_h: float
    #: multiplicative power scatter (sd, correlation time) and meter noise (share of rated).
    power_sd: float
    power_tau_h: float
    #: additive power scatter (sd as a share of rated, correlation time) while producing.
    additive_sd: float
    #: rotor-effective wind gain per 10 C below +10 C (stable, sheared cold air).
    cold_wind_gain: float


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the two data shapes."""

    name: str
    interval_s: float
    irregular_steps: bool  # some steps 10/7 longer, as in the WTBI data
    channels: tuple[str, ...]
    days: float
    start: str
    climate: Climate
    turbine: Turbine
    missing_sample_fraction: float
    gaps_per_turbine_week: float


WTBI = Profile(
    name="wtbi",
    interval_s=7.0,
    irregular_steps=True,
    channels=DEFAULT_CHANNELS,
    days=28.0,
    start="2015-11-01T00:00:00",
    climate=Climate(
        mean_c=6.0,
        seasonal_amplitude_c=9.0,
        coldest_day=20.0,
        anomaly_sd_c=1.5,
        anomaly_tau_days=12.0,
        synoptic_sd_c=3.0,
        synoptic_tau_h=60.0,
        diurnal_amplitude_c=2.5,
        cold_spells_per_winter=4.0,
        cold_spell_depth_c=5.0,
        weibull_k=2.1,
        weibull_c=6.6,
        wind_slow_share=0.5,
        wind_fast_tau_h=5.0,
        wind_slow_tau_h=48.0,
        winter_wind_boost=0.0,
        icing_humidity_z=1.5,
        icing_warmest_c=0.0,
        icing_coldest_c=-7.0,
        icing_cold_preference=0.0,
    ),
    turbine=Turbine(
        rated_kw=1500.0,
        cut_in=3.0,
        rated_wind=11.5,
        cut_out=25.0,
        flow_sd=0.01,
        flow_tau_h=0.7,
        power_sd=0.025,
        power_tau_h=0.5,
        additive_sd=0.016,
        cold_wind_gain=0.035,
    ),
    missing_sample_fraction=0.01,
    gaps_per_turbine_week=0.4,
)
SCADA10 = Profile(
    name="scada10",
    interval_s=600.0,
    irregular_steps=False,
    channels=SCADA10_CHANNELS,
    days=730.0,
    start="2019-10-01T00:00:00",
    climate=Climate(
        mean_c=14.5,
        seasonal_amplitude_c=7.0,
        coldest_day=20.0,
        anomaly_sd_c=2.5,
        anomaly_tau_days=12.0,
        synoptic_sd_c=2.0,
        synoptic_tau_h=60.0,
        diurnal_amplitude_c=2.0,
        cold_spells_per_winter=7.0,
        cold_spell_depth_c=5.0,
        weibull_k=2.1,
        weibull_c=6.1,
        wind_slow_share=0.5,
        wind_fast_tau_h=5.0,
        wind_slow_tau_h=48.0,
        winter_wind_boost=0.1,
        icing_humidity_z=1.35,
        icing_warmest_c=0.0,
        icing_coldest_c=-7.0,
        icing_cold_preference=0.0,
    ),
    turbine=Turbine(
        rated_kw=2000.0,
        cut_in=3.0,
        rated_wind=11.5,
        cut_out=25.0,
        flow_sd=0.01,
        flow_tau_h=0.7,
        power_sd=0.025,
        power_tau_h=0.5,
        additive_sd=0.016,
        cold_wind_gain=0.035,
    ),
    missing_sample_fraction=0.0,
    gaps_per_turbine_week=0.18,
)
PROFILES: dict[str, Profile] = {p.name: p for p in (WTBI, SCADA10)}


@dataclass(frozen=True)
class Episode:
    """One icing episode of one turbine, as written to episodes.json."""

    turbine_id: str
    kind: str  # "blade" or "anemometer"
    start_ms: int  # first time ice is present
    end_ms: int  # last such time
    label_start_ms: int  # first labelled (visible) time
    label_end_ms: int  # last labelled time
    peak_severity: float  # 0..1
    power_deficit: float  # fraction of power lost at full severity (blade icing)
    stops_turbine: bool  # the ice detector stopped the turbine during the episode
    affected_channels: tuple[str, ...]
    labelled: bool = True  # False: never visible; its rows are left UNKNOWN


# ---------------------------------------------------------------------------- processes


def ar1(rng: np.random.Generator, n: int, dt_s: float, tau_s: float, std: float) -> F64:
    """A stationary Gauss-Markov (Ornstein-Uhlenbeck) process sampled every dt_s seconds.

    When the process is much faster than the sampling (tau_s << dt_s), each sample stands
    for the AVERAGE over its interval, as a SCADA system's 10-minute mean does: its
    standard deviation shrinks by the variance factor of an interval mean.
    """
    x = dt_s / tau_s
    a = math.exp(-x)
    avg = 1.0 if x < 1e-3 else math.sqrt(2.0 / x**2 * (x - 1.0 + math.exp(-x)))
    s = std * avg
    noise = rng.standard_normal(n) * s * math.sqrt(1.0 - a**2)
    x0 = rng.standard_normal() * s
    out: F64 = lfilter([1.0], [1.0, -a], noise, zi=[a * x0])[0]
    return out


def lag(x: F64, dt_s: float, tau_s: float) -> F64:
    """First-order low-pass (thermal inertia, actuator lag) of x, starting at x[0]."""
    a = math.exp(-dt_s / tau_s)
    out: F64 = lfilter([1.0 - a], [1.0, -a], x, zi=[a * x[0]])[0]
    return out


def white(rng: np.random.Generator, n: int, dt_s: float, std_at_7s: float) -> F64:
    """Independent sensor noise, given as its sd per 7 s sample, averaged over dt_s."""
    return rng.standard_normal(n) * std_at_7s * math.sqrt(min(1.0, 7.0 / dt_s))


def normal_cdf(x: F64) -> F64:
    """Standard normal CDF, vectorised."""
    out: F64 = ndtr(x)
    return out


def power_curve(
    v: F64,
    rated_kw: float,
    *,
    cut_in: float = 3.0,
    rated_wind: float = 12.0,
    cut_out: float = 25.0,
    gain: F64 | float = 1.0,
) -> F64:
    """Cubic between cut-in and rated, flat to cut-out, with a rounded knee.

    `gain` multiplies the cubic part before the knee (air density): it raises power below
    rated and leaves rated power unchanged.
    """
    frac = np.clip((v**3 - cut_in**3) / (rated_wind**3 - cut_in**3), 0.0, None) * gain
    knee = frac / (1.0 + frac**5) ** (1.0 / 5.0)  # smooth min(frac, 1), like real curves
    out: F64 = rated_kw * knee
    out[(v < cut_in) | (v >= cut_out)] = 0.0
    return out


def rotor_speed(v: F64, cut_in: float, rated_wind: float) -> F64:
    """Rotor speed (rpm) along the optimal tip-speed ratio, clipped."""
    rpm: F64 = np.clip(
        MIN_RPM + (v - cut_in) * (MAX_RPM - MIN_RPM) / (0.8 * rated_wind - cut_in),
        MIN_RPM,
        MAX_RPM,
    )
    return rpm


def wrap_deg(x: F64) -> F64:
    """Wrap angles to (-180, 180]."""
    wrapped: F64 = (x + 180.0) % 360.0 - 180.0
    return wrapped


# ---------------------------------------------------------------------------- weather


@dataclass
class Weather:
    """Farm-wide weather on the common time grid."""

    t_s: F64  # seconds since start
    dt_s: F64
    wind: F64  # hub-height mean wind (m/s)
    direction: F64  # wind direction (deg, 0-360)
    temperature: F64  # ambient (C)
    humidity: F64  # latent, N(0, 1)
    icing_weather: B  # cold and humid enough to accrete ice


def make_time_grid(rng: np.random.Generator, days: float, profile: Profile) -> F64:
    """Sampling times: `interval_s`, and for the WTBI profile sometimes 10/7 longer."""
    step = profile.interval_s
    n = int(days * DAY_S / step)
    if profile.irregular_steps:
        steps = np.where(rng.random(n) < 0.05, step * 10.0 / 7.0, step)
    else:
        steps = np.full(n, step)
    steps[0] = 0.0
    return np.round(np.cumsum(steps))


def make_weather(
    rng: np.random.Generator,
    t_s: F64,
    start: datetime,
    climate: Climate,
    *,
    temperature_offset_c: float = 0.0,
    icing_frequency: float = 1.0,
) -> Weather:
    """Farm weather: wind, direction, temperature, humidity and icing weather."""
    n = t_s.shape[0]
    dt = np.diff(t_s, prepend=t_s[0] - (t_s[1] - t_s[0] if n > 1 else 7.0))
    step = float(np.median(dt))
    start_doy = start.timetuple().tm_yday - 1 + (start.hour + start.minute / 60.0) / 24.0
    doy = start_doy + t_s / DAY_S
    season = np.cos(2 * np.pi * (doy - climate.coldest_day) / 365.25)  # 1 in midwinter
    # Wind: two Gaussian processes (hours and days) mapped to Weibull marginals; a little
    # windier in winter.
    fast = ar1(rng, n, step, climate.wind_fast_tau_h * HOUR_S, 1.0)
    slow = ar1(rng, n, step, climate.wind_slow_tau_h * HOUR_S, 1.0)
    share = climate.wind_slow_share
    g = math.sqrt(1 - share) * fast + math.sqrt(share) * slow
    u = np.clip(normal_cdf(g), 1e-6, 1 - 1e-6)
    scale = climate.weibull_c * (1.0 + climate.winter_wind_boost * season)
    wind = scale * (-np.log1p(-u)) ** (1.0 / climate.weibull_k)
    direction = 220.0 + np.cumsum(rng.standard_normal(n) * 0.6 * np.sqrt(dt / 7.0))
    direction += ar1(rng, n, step, tau_s=2 * HOUR_S, std=25.0)
    # Temperature: seasonal mean, anomalies of weeks, synoptic swings, diurnal cycle.
    hours = (start.hour + start.minute / 60.0) + t_s / HOUR_S
    diurnal = climate.diurnal_amplitude_c * np.cos(2 * np.pi * (hours - 15.0) / 24.0)
    temperature = (
        climate.mean_c
        + temperature_offset_c
        - climate.seasonal_amplitude_c * season
        + ar1(rng, n, step, climate.anomaly_tau_days * DAY_S, climate.anomaly_sd_c)
        + ar1(rng, n, step, climate.synoptic_tau_h * HOUR_S, climate.synoptic_sd_c)
        + diurnal
        + ar1(rng, n, step, tau_s=600.0, std=0.3)
        - _cold_spells(rng, t_s, season, climate)
    )
    # Humidity is latent: icing needs cold AND humid air (fog, drizzle, low cloud).
    humidity = ar1(rng, n, step, tau_s=3 * HOUR_S, std=1.0)
    # Supercooled fog and drizzle are likelier a few degrees below zero than just below it.
    z = climate.icing_humidity_z - math.log(max(icing_frequency, 1e-6)) / 2.0
    z_at = z + climate.icing_cold_preference * np.clip(temperature, -4.0, 0.0)
    icing_weather = (
        (temperature < climate.icing_warmest_c)
        & (temperature > climate.icing_coldest_c)
        & (humidity > z_at)
    )
    return Weather(t_s, dt, wind, direction % 360.0, temperature, humidity, icing_weather)


def _cold_spells(rng: np.random.Generator, t_s: F64, season: F64, climate: Climate) -> F64:
    """Cold-air outbreaks: a few per winter, 1-6 days long, ramping in and out."""
    out = np.zeros(t_s.shape[0])
    winter_days = float(np.sum(season > 0.3)) * float(np.median(np.diff(t_s))) / DAY_S
    count = rng.poisson(climate.cold_spells_per_winter * winter_days / 150.0)
    winter = np.flatnonzero(season > 0.3)
    for _ in range(count if winter.size else 0):
        centre = t_s[int(rng.choice(winter))]
        half = rng.uniform(0.5, 3.0) * DAY_S
        depth = rng.exponential(climate.cold_spell_depth_c)
        shape = np.clip(1.0 - np.abs(t_s - centre) / half, 0.0, None)
        out += depth * np.sqrt(shape)
    return out


# ---------------------------------------------------------------------------- icing


def severity_track(rng: np.random.Generator, weather: Weather, accretion: B, s_max: float) -> F64:
    """Ice severity 0..s_max: grows while accreting, clears slowly, fast after a thaw.

    Accretion grows with wind speed (ISO 12494: rime grows with the flux of supercooled
    droplets), but only weakly here: light winds ice turbines too.
    """
    n = weather.t_s.shape[0]
    s = np.zeros(n)
    if not accretion.any():
        return s
    grow_per_s = s_max / (rng.uniform(0.3, 2.5) * HOUR_S)
    clear_tau = math.exp(rng.uniform(math.log(0.2), math.log(12.0))) * HOUR_S
    thaw_tau = rng.uniform(0.1, 0.4) * HOUR_S
    first = int(np.argmax(accretion))
    # Plain Python floats: this recursion has a branch per step, numpy scalars would be slow.
    growth = (weather.dt_s * np.clip(0.6 + weather.wind / 15.0, 0.6, 1.6)).tolist()
    dts = weather.dt_s.tolist()
    acc = accretion.tolist()
    warm = (weather.temperature > 0.2).tolist()
    last_acc = int(np.flatnonzero(accretion)[-1])
    x = 0.0
    out = [0.0] * n
    for i in range(first, n):
        if acc[i]:
            x = min(s_max, x + grow_per_s * growth[i])
        elif x > 0.0:
            x *= math.exp(-dts[i] / (thaw_tau if warm[i] else clear_tau))
            if x < 0.05 * s_max:  # the last traces of ice are shed at once
                x = 0.0
                if i > last_acc:
                    break
        out[i] = x
    s[:] = out
    return s


@dataclass
class IceEffects:
    """What the ice does to one turbine, per sample."""

    blade: F64  # blade-ice severity 0..1
    anemometer: F64  # anemometer-ice severity 0..1
    deficit: F64  # fraction of power lost at the current blade severity
    ice_stop: B  # stopped by the ice detector
    label: NDArray[np.int8]
    episodes: list[Episode]


# ---------------------------------------------------------------------------- turbine


@dataclass
class TurbineSim:
    """All channels of one turbine plus its ground truth, before missing samples are cut."""

    turbine_id: str
    values: F64  # (N, C) in the profile's channel order
    labels: NDArray[np.int8]
    episodes: list[Episode]


class FarmSimulator:
    """Generates a farm of turbines from `SimulationSettings`, deterministically per seed."""

    def __init__(self, settings: SimulationSettings, label_margin_s: float = 1800.0) -> None:
        self.cfg = settings
        self.profile = PROFILES[settings.profile]
        self.label_margin_s = label_margin_s
        start = settings.start or self.profile.start
        self.start = datetime.fromisoformat(start).replace(tzinfo=UTC)
        self.start_ms = int(self.start.timestamp() * 1000)
        self.days = settings.days if settings.days is not None else self.profile.days
        interval = settings.interval_s or self.profile.interval_s
        self.grid = Profile(**{**self.profile.__dict__, "interval_s": interval})
        self.rated_kw = settings.rated_power_kw or self.profile.turbine.rated_kw
        self.channels = self.profile.channels

    # -- public -----------------------------------------------------------------

    def generate(self) -> tuple[list[TurbineFrame], list[Episode]]:
        """Simulate every turbine; returns frames (after missing samples and gaps) and episodes."""
        root = np.random.SeedSequence(self.cfg.seed)
        farm_seed, *turbine_seeds = root.spawn(self.cfg.turbines + 1)
        farm_rng = np.random.default_rng(farm_seed)
        t_s = make_time_grid(farm_rng, self.days, self.grid)
        weather = make_weather(
            farm_rng,
            t_s,
            self.start,
            self.profile.climate,
            temperature_offset_c=self.cfg.temperature_offset_c,
            icing_frequency=self.cfg.icing_frequency,
        )
        frames, episodes = [], []
        for k, seed in enumerate(turbine_seeds):
            rng = np.random.default_rng(seed)
            sim = self._turbine(rng, f"{k + 1:02d}", weather)
            frames.append(self._sample(rng, sim, t_s))
            episodes.extend(sim.episodes)
        return frames, episodes

    def write(self, out_dir: Path) -> tuple[list[TurbineFrame], list[Episode]]:
        """Generate and write the farm in the WTBI layout plus episodes.json."""
        frames, episodes = self.generate()
        out_dir.mkdir(parents=True, exist_ok=True)
        for frame in frames:
            icing = [
                (int(frame.times_ms[a]), int(frame.times_ms[b]))
                for a, b in runs(frame.labels == Label.ICING)
            ]
            normal = [
                (int(frame.times_ms[a]), int(frame.times_ms[b]))
                for a, b in runs(frame.labels == Label.NORMAL)
            ]
            write_turbine(
                out_dir, frame, failure=icing, normal=normal, file_format=self.cfg.file_format
            )
        doc: dict[str, Any] = {
            "settings": self.cfg.model_dump(),
            "profile": self.profile.name,
            "interval_s": self.grid.interval_s,
            "rated_power_kw": self.rated_kw,
            "channels": list(self.channels),
            "episodes": [asdict(e) for e in episodes],
        }
        (out_dir / "episodes.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        return frames, episodes

    # -- one turbine ----------------------------------------------------------------

    def _turbine(self, rng: np.random.Generator, turbine_id: str, weather: Weather) -> TurbineSim:
        cfg, tm = self.cfg, self.profile.turbine
        n = weather.t_s.shape[0]
        dt = weather.dt_s
        step = float(np.median(dt))
        rated = self.rated_kw
        curve = {"cut_in": tm.cut_in, "rated_wind": tm.rated_wind, "cut_out": tm.cut_out}

        # ---- wind at this turbine: farm wind x site factor, mesoscale and turbulence
        site = rng.uniform(0.95, 1.05)
        meso = 1.0 + ar1(rng, n, step, tau_s=1200.0, std=0.05)
        turb = ar1(rng, n, step, tau_s=25.0, std=0.12)  # averaged away at 10 minutes
        gusts = np.where(rng.random(n) < 0.01 * min(1.0, step / 7.0), rng.exponential(2.0, n), 0.0)
        hub = np.clip(weather.wind * site * meso, 0.0, None)
        wind_true = np.clip(hub * (1.0 + turb) + lag(gusts, step, 20.0), 0.0, None)
        # The rotor sees a smoothed wind whose ratio to the nacelle anemometer's drifts
        # slowly (flow distortion, shear, veer): the power scatter of 10-minute data.
        flow = 1.0 + ar1(rng, n, step, tm.flow_tau_h * HOUR_S, tm.flow_sd)
        # Cold air is usually stable and sheared: the rotor's upper half sees more wind
        # than the nacelle anemometer, so cold weather yields more power for the same
        # measured wind (with air density below).
        stable = np.clip((10.0 - weather.temperature) / 10.0, -1.0, 2.0)
        flow *= 1.0 + tm.cold_wind_gain * stable
        wind_eff = lag(wind_true, step, 10.0) * flow

        # ---- operating modes: maintenance and fault stops, curtailment
        stopped = self._spells(rng, n, dt, cfg.stops_per_turbine_week, median_h=4.0, sigma=1.0)
        curtail_cap = np.full(n, np.inf)
        for a, b in runs(
            self._spells(rng, n, dt, cfg.curtailment_per_turbine_week, median_h=4.0, sigma=0.6)
        ):
            curtail_cap[a : b + 1] = rated * rng.uniform(0.2, 0.7)

        # ---- icing
        ice = self._icing(rng, turbine_id, weather)
        effect = ice.blade * ice.deficit  # fraction of power lost

        # ---- power, rotor speed, pitch
        # Air density raises power below rated: P ~ rho ~ 1 / T_kelvin (relative to +10 C).
        density = 283.15 / (273.15 + weather.temperature)
        # Scatter below rated (rotor aerodynamics, turbulence); pitch control holds rated.
        scatter = 1.0 + ar1(rng, n, step, tm.power_tau_h * HOUR_S, tm.power_sd)
        available = power_curve(wind_eff, rated, gain=density * scatter, **curve)
        additive = ar1(rng, n, step, tm.power_tau_h * HOUR_S, tm.additive_sd * rated)
        power = available * (1.0 - effect)
        share = available / rated  # the additive part fades near cut-in and at rated
        power += additive * np.clip(1.0 - share, 0.0, 1.0) * np.clip(share / 0.1, 0.0, 1.0)
        power = np.minimum(power, curtail_cap)
        curtailed = np.isfinite(curtail_cap) & (available > curtail_cap)
        down = stopped | ice.ice_stop
        # An iced rotor needs more wind to start turning (its cut-in rises).
        cut_in = tm.cut_in * (1.0 + 1.0 * effect)
        producing = (wind_eff >= cut_in) & (wind_eff < tm.cut_out) & ~down
        power = np.where(producing, power, 0.0)
        power += white(rng, n, step, 3.0) * producing + white(rng, n, step, 0.01) * power
        power = np.where(producing, power, -4.0 + white(rng, n, step, 1.0))  # idle consumption
        power = np.minimum(power, 1.02 * rated)
        rpm = rotor_speed(wind_eff, tm.cut_in, tm.rated_wind) * (1.0 - 0.35 * effect)
        rpm = np.where(producing, rpm, np.where(down, 0.3, 2.0) * rng.random(n))
        rpm = lag(rpm, step, 15.0) + white(rng, n, step, 0.08)

        above_rated = np.clip(wind_eff - tm.rated_wind, 0.0, None)
        # Below rated the controller keeps fine pitch (max power) with or without ice; above
        # rated an iced rotor captures less, so it needs less pitch to hold rated power.
        pitch = 2.6 * above_rated**0.8 * (1.0 - 0.8 * effect)
        pitch += np.where(
            curtailed, 14.0 * np.clip(1 - curtail_cap / np.maximum(available, 1), 0, 1) ** 0.7, 0.0
        )
        pitch = np.where(
            producing, pitch, np.where(down | (wind_eff >= tm.cut_out), FEATHERED_DEG, 65.0)
        )
        pitch = lag(pitch, step, 8.0)
        blade_div = rng.normal(0.0, 1.0, 3)  # per-blade pitch divergence under ice
        pitches = []
        for k in range(3):
            # Static calibration offsets of a few tenths of a degree and encoder noise in
            # normal operation; iced blades, loaded unevenly, diverge a little more.
            offset = rng.normal(0.0, 0.3) + 0.8 * ice.blade * blade_div[k]
            pitches.append(pitch + offset + white(rng, n, step, 0.15))
        pitch_speed = [np.diff(p, prepend=p[0]) / dt + white(rng, n, step, 0.02) for p in pitches]

        # ---- yaw with a dead band; relative wind direction (the vane)
        wind_dir = weather.direction + ar1(rng, n, step, tau_s=30.0, std=6.0)
        yaw, yaw_speed = self._yaw(rng, wind_dir, dt, ~stopped)
        relative = wrap_deg(wind_dir - yaw)
        relative_mean = lag(relative, step, 12.5)  # 25 s mean of the angle of wind to nacelle

        # ---- temperatures: ambient sensor, motors, nacelle, pitch cabinets
        ambient = weather.temperature + rng.normal(0.0, 0.3) + white(rng, n, step, 0.1)
        load = np.clip(power / rated, 0.0, 1.0)
        activity = lag(np.mean(np.abs(pitch_speed), axis=0), step, 600.0)
        motor = [
            lag(
                weather.temperature + 9.0 + rng.normal(0, 1.0) + 25.0 * activity + 6 * load,
                step,
                1800.0,
            )
            + white(rng, n, step, 0.15)
            for _ in range(3)
        ]
        nacelle = np.maximum(lag(weather.temperature + 11.0 + 9.0 * load, step, 3600.0), 6.0)
        nacelle += white(rng, n, step, 0.15)
        cabinets = [
            np.maximum(
                lag(weather.temperature + 17.0 + rng.normal(0, 1.5) + 5.0 * load, step, 3000.0),
                10.0,
            )
            + white(rng, n, step, 0.2)
            for _ in range(3)
        ]
        charge_cycle = ar1(rng, n, step, tau_s=900.0, std=0.15)
        currents = [
            np.clip(0.35 + charge_cycle + 1.2 * np.abs(ps) + white(rng, n, step, 0.05), 0.0, None)
            for ps in pitch_speed
        ]

        # ---- vibration: turbulence and speed driven; imbalance under blade ice
        base = 0.015 + 0.0035 * wind_eff + 0.012 * rpm / MAX_RPM
        imbalance = 1.0 + 3.0 * ice.blade * rpm / MAX_RPM  # mass imbalance needs rotation
        phase = rng.uniform(0, 2 * np.pi, n)
        one_p = ice.blade * rpm / MAX_RPM  # once-per-revolution component, aliased by sampling
        acc_x = base * imbalance * rng.standard_normal(n) + 0.04 * one_p * np.sin(phase)
        acc_y = 0.8 * base * imbalance * rng.standard_normal(n) + 0.03 * one_p * np.cos(phase)

        # ---- the anemometer: small bias, noise; under-reads when iced
        measured_wind = hub * (1.0 + turb) * rng.uniform(0.98, 1.02)  # calibration
        measured_wind *= 1.0 - 0.25 * ice.anemometer
        measured_wind = np.clip(measured_wind + white(rng, n, step, 0.15), 0.0, None)

        channels = {
            "wind_speed": measured_wind,
            "generator_speed": np.clip(rpm, 0.0, None),
            "power": power,
            "pitch_angle": np.mean(pitches, axis=0),
            "vane_position": relative,
            "wind_direction_mean": relative_mean,
            "yaw_position": yaw % 360.0,
            "yaw_speed": yaw_speed,
            "pitch1_angle": pitches[0],
            "pitch2_angle": pitches[1],
            "pitch3_angle": pitches[2],
            "pitch1_speed": pitch_speed[0],
            "pitch2_speed": pitch_speed[1],
            "pitch3_speed": pitch_speed[2],
            "pitch1_moto_tmp": motor[0],
            "pitch2_moto_tmp": motor[1],
            "pitch3_moto_tmp": motor[2],
            "acc_x": acc_x,
            "acc_y": acc_y,
            "environment_tmp": ambient,
            "int_tmp": nacelle,
            "pitch1_ng5_tmp": cabinets[0],
            "pitch2_ng5_tmp": cabinets[1],
            "pitch3_ng5_tmp": cabinets[2],
            "pitch1_ng5_DC": currents[0],
            "pitch2_ng5_DC": currents[1],
            "pitch3_ng5_DC": currents[2],
        }
        # WTBI's wind_direction is the angle of the wind to the nacelle; the 10-minute
        # profile's is the absolute direction, with the vane's relative angle beside it.
        channels["wind_direction"] = relative if self.profile.name == "wtbi" else (wind_dir % 360.0)
        self._sensor_faults(rng, channels, dt)
        values = np.stack([channels[c] for c in self.channels], axis=1)
        return TurbineSim(turbine_id, values, ice.label, ice.episodes)

    # -- icing ---------------------------------------------------------------------

    def _icing(self, rng: np.random.Generator, turbine_id: str, weather: Weather) -> IceEffects:
        """Episodes of this turbine in the farm's icing-weather spells."""
        cfg = self.cfg
        n = weather.t_s.shape[0]
        step = float(np.median(weather.dt_s))
        blade = np.zeros(n)
        anemo = np.zeros(n)
        deficit = np.zeros(n)
        ice_stop = np.zeros(n, dtype=np.bool_)
        visible = np.zeros(n, dtype=np.bool_)
        present = np.zeros(n, dtype=np.bool_)
        episodes: list[Episode] = []
        # Spells closer than an hour are one event (ice does not disappear in between).
        spells = _merge_close(runs(weather.icing_weather), weather.t_s, HOUR_S)
        susceptibility = rng.uniform(0.7, 1.3)
        for a, b in spells:
            if rng.random() > 0.85:  # not every turbine ices in every event
                continue
            kind = "anemometer" if rng.random() < cfg.anemometer_icing_fraction else "blade"
            accretion = np.zeros(n, dtype=np.bool_)
            jitter = round(rng.normal(0, 0.3) * HOUR_S / step)
            accretion[max(0, a + jitter) : max(0, b + jitter) + 1] = True
            accretion &= weather.temperature < self.profile.climate.icing_warmest_c + 0.5
            s_max = float(np.clip(rng.uniform(0.15, 1.0) * susceptibility, 0.1, 1.0))
            s = severity_track(rng, weather, accretion, s_max)
            if not np.any(s > 0):
                continue
            # Iced rotors that still turn lose most of their power (real SCADA: a median
            # deficit of 7 % of rated at a median wind of 5.7 m/s, where the curve gives ~10 %).
            d = float(rng.uniform(0.6, 1.0))
            stop_mask = np.zeros(n, dtype=np.bool_)
            stops = False
            if kind == "blade":
                stops = rng.random() < cfg.stop_on_ice_probability
                if stops:
                    stop_mask = _ice_detector_stop(rng, s, weather.t_s)
                    stops = bool(stop_mask.any())
                blade = np.maximum(blade, s)
                deficit = np.maximum(deficit, np.where(s > 0, d, 0.0))
                ice_stop |= stop_mask
                seen = (s * d >= 0.35) | stop_mask
                affected = tuple(c for c in BLADE_AFFECTED if c in self.channels)
            else:
                anemo = np.maximum(anemo, s)
                seen = 0.25 * s >= 0.15
                affected = ("wind_speed",)
            present |= s > 0
            visible |= seen
            episodes.append(
                self._episode(
                    turbine_id,
                    kind=kind,
                    s=s,
                    seen=seen,
                    t_s=weather.t_s,
                    deficit=d,
                    stops=stops,
                    affected=affected,
                )
            )
        label = self._labels(weather.t_s, present, visible)
        return IceEffects(blade, anemo, deficit, ice_stop, label, episodes)

    def _labels(self, t_s: F64, present: B, visible: B) -> NDArray[np.int8]:
        """ICING where visible; UNKNOWN where ice is present or within the margin of it."""
        labels = np.full(t_s.shape[0], Label.NORMAL, dtype=np.int8)
        margin = self.label_margin_s
        for a, b in runs(present):
            lo, hi = np.searchsorted(t_s, [t_s[a] - margin, t_s[b] + margin])
            labels[lo:hi] = Label.UNKNOWN
        labels[visible] = Label.ICING
        return labels

    # -- helpers ---------------------------------------------------------------------

    def _spells(
        self,
        rng: np.random.Generator,
        n: int,
        dt: F64,
        per_week: float,
        *,
        median_h: float,
        sigma: float,
        max_h: float = 240.0,
    ) -> B:
        """Random spells at `per_week`, each lasting a log-normal number of hours."""
        mask = np.zeros(n, dtype=np.bool_)
        weeks = float(np.sum(dt)) / (7 * DAY_S)
        mean_dt = float(np.mean(dt))
        for _ in range(rng.poisson(per_week * weeks)):
            a = int(rng.integers(0, n))
            hours = min(max_h, median_h * math.exp(sigma * rng.standard_normal()))
            mask[a : a + max(1, round(hours * HOUR_S / mean_dt))] = True
        return mask

    def _yaw(self, rng: np.random.Generator, wind_dir: F64, dt: F64, active: B) -> tuple[F64, F64]:
        """Nacelle yaw that starts when misalignment exceeds a dead band, at 0.5 deg/s."""
        n = wind_dir.shape[0]
        yaw = [0.0] * n
        speed = [0.0] * n
        directions, dts, on = wind_dir.tolist(), dt.tolist(), active.tolist()
        y = directions[0]
        err_avg = 0.0
        moving = False
        for i in range(n):
            err = (directions[i] - y + 180.0) % 360.0 - 180.0
            err_avg += (err - err_avg) * min(1.0, dts[i] / 60.0)  # ~1 min averaged error
            if on[i]:
                if not moving and abs(err_avg) > 8.0:
                    moving = True
                if moving:
                    move = math.copysign(min(0.5 * dts[i], abs(err)), err)
                    y += move
                    # A 10-minute mean of the yaw rate: the move spread over the interval.
                    speed[i] = move / dts[i] if dts[i] > 0 else 0.0
                    if abs(err) < 1.5:
                        moving = False
            yaw[i] = y
        return np.asarray(yaw), np.asarray(speed) + white(rng, n, float(np.median(dt)), 0.01)

    def _sensor_faults(self, rng: np.random.Generator, channels: dict[str, F64], dt: F64) -> None:
        """Frozen sensors, impossible temperatures, pitch outliers and all-zero rows."""
        n = dt.shape[0]
        weeks = float(np.sum(dt)) / (7 * DAY_S)
        step = float(np.median(dt))
        pitch_names = [c for c in ("pitch_angle", "pitch1_angle") if c in self.channels]
        kinds = ("frozen", "impossible_temp", "pitch_outlier", "zeros")
        count = max(len(kinds), rng.poisson(self.cfg.sensor_faults_per_turbine_week * weeks))
        for k in range(count):
            kind = kinds[k % len(kinds)] if k < len(kinds) else kinds[int(rng.integers(0, 4))]
            a = int(rng.integers(0, n))
            if kind == "frozen":
                name = "wind_speed" if rng.random() < 0.5 else "environment_tmp"
                hours = rng.uniform(1.5, 12.0)
                b = min(n, a + max(7, round(hours * HOUR_S / step)))
                channels[name][a:b] = channels[name][a]
            elif kind == "impossible_temp":
                b = min(n, a + max(1, round(rng.uniform(0, 1800) / step)))
                channels["environment_tmp"][a:b] = -273.15
            elif kind == "pitch_outlier":
                for name in pitch_names:
                    channels[name][a] = rng.choice((-45.0, 180.0, 359.0))
            else:
                b = min(n, a + max(1, round(rng.uniform(0, 1200) / step)))
                channels["wind_speed"][a:b] = 0.0
                channels["power"][a:b] = 0.0

    def _episode(
        self,
        turbine_id: str,
        *,
        kind: str,
        s: F64,
        seen: B,
        t_s: F64,
        deficit: float,
        stops: bool,
        affected: tuple[str, ...],
    ) -> Episode:
        peak = float(s.max())
        ice = np.flatnonzero(s > 0)
        body = np.flatnonzero(seen)
        to_ms = self._to_ms(t_s)
        labelled = body.size > 0
        lo, hi = (body[0], body[-1]) if labelled else (ice[0], ice[-1])
        return Episode(
            turbine_id=turbine_id,
            kind=kind,
            start_ms=int(to_ms[ice[0]]),
            end_ms=int(to_ms[ice[-1]]),
            label_start_ms=int(to_ms[lo]),
            label_end_ms=int(to_ms[hi]),
            peak_severity=round(peak, 4),
            power_deficit=round(deficit, 4) if kind == "blade" else 0.0,
            stops_turbine=stops,
            affected_channels=affected,
            labelled=labelled,
        )

    def _to_ms(self, t_s: F64) -> NDArray[np.int64]:
        ms: NDArray[np.int64] = (self.start_ms + np.round(t_s * 1000)).astype(np.int64)
        return ms

    def _sample(self, rng: np.random.Generator, sim: TurbineSim, t_s: F64) -> TurbineFrame:
        """Cut missing samples and recording gaps; number the recording blocks (groups)."""
        n = t_s.shape[0]
        missing = (
            self.cfg.missing_sample_fraction
            if self.cfg.missing_sample_fraction is not None
            else self.profile.missing_sample_fraction
        )
        keep = np.asarray(rng.random(n) >= missing, dtype=np.bool_)
        group = np.zeros(n, dtype=np.int64)
        dt = np.diff(t_s, prepend=t_s[0] - (t_s[1] - t_s[0] if n > 1 else 7.0))
        gaps = self.cfg.gaps_per_turbine_week
        gaps = self.profile.gaps_per_turbine_week if gaps is None else gaps
        outages = self._spells(rng, n, dt, gaps, median_h=1.5, sigma=1.6, max_h=168.0)
        for a, b in runs(outages):
            keep[a : b + 1] = False
            group[b + 1 :] += 1
        return TurbineFrame(
            turbine_id=sim.turbine_id,
            times_ms=self._to_ms(t_s)[keep],
            values=sim.values[keep],
            groups=group[keep] + 1,
            labels=sim.labels[keep],
            source="simulated",
            channels=self.channels,
        )


def _merge_close(spells: list[tuple[int, int]], t_s: F64, gap_s: float) -> list[tuple[int, int]]:
    """Join spells separated by less than `gap_s`."""
    out: list[tuple[int, int]] = []
    for a, b in spells:
        if out and t_s[a] - t_s[out[-1][1]] < gap_s:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _ice_detector_stop(rng: np.random.Generator, s: F64, t_s: F64) -> B:
    """The ice detector's stop: from the trip level until most of the ice has gone.

    The turbine restarts when severity falls below half the trip level, and not before a
    minimum stop time.
    """
    trip = rng.uniform(0.25, 0.6)
    over = np.flatnonzero(s >= trip)
    mask = np.zeros(s.shape[0], dtype=np.bool_)
    if over.size == 0:
        return mask
    a = int(over[0])
    restart = 0.5 * trip
    min_stop_s = rng.uniform(0.5, 3.0) * HOUR_S
    after = np.flatnonzero((s < restart) & (t_s >= t_s[a] + min_stop_s))
    after = after[after > a]
    b = int(after[0]) if after.size else s.shape[0]
    mask[a:b] = True
    return mask


def episodes_in_range(episodes: list[Episode], start_ms: int, end_ms: int) -> list[Episode]:
    """Episodes whose labelled body overlaps [start_ms, end_ms)."""
    return [e for e in episodes if e.label_end_ms >= start_ms and e.label_start_ms < end_ms]


def read_episodes(path: Path) -> list[Episode]:
    """Read the episodes.json written by `FarmSimulator.write`."""
    doc = orjson.loads(path.read_bytes())
    return [
        Episode(**{**e, "affected_channels": tuple(e["affected_channels"])})
        for e in doc["episodes"]
    ]


def simulated_days(frames: list[TurbineFrame]) -> float:
    """Mean span of the frames in days (for messages)."""
    spans = [(f.times_ms[-1] - f.times_ms[0]) / MS_PER_DAY for f in frames if len(f)]
    return float(np.mean(spans)) if spans else 0.0
