"""A realistic synthetic wind farm in the WTBI format, with injected icing episodes.

The real WTBI data cannot be downloaded here, so the project ships a generator that follows
the physics in docs/domain.md closely enough that detection is NOT trivial:

* weather shared by the farm: a Weibull-distributed, autocorrelated wind with turbulence
  and gusts; slowly turning wind direction; ambient temperature with synoptic swings and a
  diurnal cycle (many cold days without ice); a latent humidity that decides when icing
  weather happens (humidity is not a channel, so cold alone does not mean ice);
* each turbine: the cubic-then-rated power curve (cut-in 3, rated 12, cut-out 25 m/s),
  direct-drive rotor speed, pitch near 0 below rated and rising above it, yaw that follows
  the wind with a dead band, motor/cabinet/nacelle temperatures that follow load and ambient
  with lags and heaters, pitch-cabinet charger currents, nacelle vibration; curtailment
  (power capped by pitching: a power deficit that is NOT ice), maintenance stops, low-wind
  idling, sensor noise, missing samples, and recording gaps that start a new `group`;
* icing episodes of different severities that build up while icing weather lasts and clear
  gradually (faster after a thaw): power below the curve, lower rotor speed, different and
  diverging pitch, more vibration, and for severe ones a stop; plus anemometer icing, where
  the wind reading falls and power looks too HIGH for the measured wind.

Labels follow the WTBI convention: icing intervals cover the body of each episode, normal
intervals cover everything at least `label_margin` away from any ice, and the transitions in
between stay unlabelled. Everything is deterministic for a given seed.
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
HOUR_S = 3600.0
CUT_IN, RATED_WIND, CUT_OUT = 3.0, 12.0, 25.0
MIN_RPM, MAX_RPM = 9.0, 17.3


@dataclass(frozen=True)
class Episode:
    """One injected icing episode of one turbine, as written to episodes.json."""

    turbine_id: str
    kind: str  # "blade" or "anemometer"
    start_ms: int  # first time the ice is noticeable (severity > 1 % of its peak)
    end_ms: int  # last such time
    label_start_ms: int  # start of the labelled icing interval
    label_end_ms: int
    peak_severity: float  # 0..1
    power_deficit: float  # fraction of power lost at full severity (blade icing)
    stops_turbine: bool
    affected_channels: tuple[str, ...]
    labelled: bool = True  # False: too weak to be noticed; its rows are left UNKNOWN


# ---------------------------------------------------------------------------- processes


def ar1(rng: np.random.Generator, n: int, dt_s: float, tau_s: float, std: float) -> F64:
    """A stationary Gauss-Markov (Ornstein-Uhlenbeck) process sampled every dt_s seconds."""
    a = math.exp(-dt_s / tau_s)
    noise = rng.standard_normal(n) * std * math.sqrt(1.0 - a**2)
    x0 = rng.standard_normal() * std
    out: F64 = lfilter([1.0], [1.0, -a], noise, zi=[a * x0])[0]
    return out


def lag(x: F64, dt_s: float, tau_s: float) -> F64:
    """First-order low-pass (thermal inertia, actuator lag) of x, starting at x[0]."""
    a = math.exp(-dt_s / tau_s)
    out: F64 = lfilter([1.0 - a], [1.0, -a], x, zi=[a * x[0]])[0]
    return out


def normal_cdf(x: F64) -> F64:
    """Standard normal CDF, vectorised."""
    out: F64 = ndtr(x)
    return out


def power_curve(v: F64, rated_kw: float) -> F64:
    """Cubic between cut-in and rated, flat to cut-out, with a rounded knee."""
    frac = np.clip((v**3 - CUT_IN**3) / (RATED_WIND**3 - CUT_IN**3), 0.0, None)
    knee = frac / (1.0 + frac**8) ** (1.0 / 8.0)  # smooth min(frac, 1)
    out: F64 = rated_kw * knee
    out[(v < CUT_IN) | (v >= CUT_OUT)] = 0.0
    return out


def rotor_speed(v: F64) -> F64:
    """Direct-drive rotor speed (rpm) along the optimal tip-speed ratio, clipped."""
    rpm: F64 = np.clip(
        MIN_RPM + (v - CUT_IN) * (MAX_RPM - MIN_RPM) / (9.5 - CUT_IN), MIN_RPM, MAX_RPM
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
    wind: F64  # hub-height mean wind (m/s), before turbine turbulence
    direction: F64  # wind direction (deg)
    temperature: F64  # ambient (C)
    icing_weather: NDArray[np.bool_]  # cold and humid enough to accrete ice


def make_time_grid(rng: np.random.Generator, days: float, interval_s: float) -> F64:
    """Sampling times: mostly `interval_s`, sometimes 10/7 longer, as in the WTBI data."""
    n = int(days * 86400 / interval_s)
    steps = np.where(rng.random(n) < 0.05, interval_s * 10.0 / 7.0, interval_s)
    steps[0] = 0.0
    return np.round(np.cumsum(steps))


def make_weather(rng: np.random.Generator, t_s: F64, start: datetime) -> Weather:
    """Farm weather: wind, direction, temperature, and when icing weather happens."""
    n = t_s.shape[0]
    dt = np.diff(t_s, prepend=t_s[0] - 7.0)
    step = float(np.median(dt))
    # Wind: a slow Gaussian process mapped to Weibull(k=2, c=7.5) marginals.
    g = ar1(rng, n, step, tau_s=5 * HOUR_S, std=1.0)
    u = np.clip(normal_cdf(g), 1e-6, 1 - 1e-6)
    wind = 7.5 * (-np.log1p(-u)) ** (1.0 / 2.0)
    direction = 220.0 + np.cumsum(rng.standard_normal(n) * 0.6 * np.sqrt(dt / 7.0))
    direction += ar1(rng, n, step, tau_s=2 * HOUR_S, std=25.0)
    # Temperature: winter mean, multi-day swings, a diurnal cycle peaking mid-afternoon.
    hours = (start.hour + start.minute / 60.0) + t_s / HOUR_S
    diurnal = 4.0 * np.cos(2 * np.pi * (hours - 15.0) / 24.0)
    synoptic = ar1(rng, n, step, tau_s=2.5 * 24 * HOUR_S, std=3.5)
    temperature = -3.0 + synoptic + diurnal + ar1(rng, n, step, tau_s=600.0, std=0.3)
    # Humidity is latent: icing needs cold AND humid air. Its own slow process.
    humid = ar1(rng, n, step, tau_s=10 * HOUR_S, std=1.0)
    icing_weather = (temperature > -10.0) & (temperature < 0.5) & (humid > 1.0)
    return Weather(t_s, dt, wind, direction, temperature, icing_weather)


# ---------------------------------------------------------------------------- icing


def severity_track(
    rng: np.random.Generator,
    weather: Weather,
    accretion: NDArray[np.bool_],
    s_max: float,
) -> F64:
    """Ice severity 0..s_max: grows while accreting, clears slowly, fast after a thaw.

    Accretion is proportional to wind speed (ISO 12494: rime grows with the flux of
    supercooled droplets, i.e. wind x liquid water content), so calm icing weather makes
    little ice and windy icing weather a lot.
    """
    n = weather.t_s.shape[0]
    grow_per_s = s_max / (rng.uniform(1.5, 5.0) * HOUR_S)
    clear_tau = rng.uniform(1.5, 5.0) * HOUR_S
    thaw_tau = rng.uniform(0.5, 1.5) * HOUR_S
    s = np.zeros(n)
    if not accretion.any():
        return s
    first = int(np.argmax(accretion))
    # Plain Python floats: this recursion has a branch per step, numpy scalars would be slow.
    growth_steps = (weather.dt_s * np.clip(weather.wind / 8.0, 0.1, 1.6)).tolist()
    acc = accretion.tolist()
    warm = (weather.temperature > 1.0).tolist()
    decay_thaw = math.exp(-7.0 / thaw_tau)
    decay_cold = math.exp(-7.0 / clear_tau)
    x = 0.0
    out = [0.0] * n
    for i in range(first, n):
        if acc[i]:
            x = min(s_max, x + grow_per_s * growth_steps[i])
        elif x > 0.0:
            x *= decay_thaw if warm[i] else decay_cold
            if x < 0.05 * s_max:  # the last traces of ice are shed at once
                x = 0.0
                if not any(acc[i:]):
                    break
        out[i] = x
    s[:] = out
    return s


def icing_windows(
    rng: np.random.Generator, weather: Weather, rate_per_week: float
) -> list[tuple[int, int]]:
    """Pick farm-level icing events inside icing weather, about `rate_per_week` of them."""
    n = weather.t_s.shape[0]
    candidates = runs(weather.icing_weather)
    weeks = (weather.t_s[-1] - weather.t_s[0]) / (7 * 24 * HOUR_S)
    wanted = rng.poisson(rate_per_week * max(weeks, 1e-9))
    # Prefer long spells of icing weather (real events last hours to days).
    long_enough = [(a, b) for a, b in candidates if weather.t_s[b] - weather.t_s[a] > 1.0 * HOUR_S]
    rng.shuffle(long_enough)
    chosen = sorted(long_enough[:wanted])
    # If the weather offered too few spells, force some: pick a time, make it a spell.
    while len(chosen) < wanted:
        a = int(rng.integers(0, max(n - 1, 1)))
        length = int(rng.uniform(3, 12) * HOUR_S / 7.0)
        b = min(n - 1, a + length)
        chosen.append((a, b))
        weather.temperature[a:b] = np.minimum(weather.temperature[a:b], rng.uniform(-6.0, -1.0))
        chosen.sort()
    # Cap each accretion spell at 30 h so that ice does not last the whole record.
    capped = []
    for a, b in chosen:
        end = min(b, int(np.searchsorted(weather.t_s, weather.t_s[a] + 30 * HOUR_S)))
        capped.append((a, max(a + 1, end)))
    return capped


# ---------------------------------------------------------------------------- turbine


@dataclass
class TurbineSim:
    """All channels of one turbine plus its ground truth, before missing samples are cut."""

    turbine_id: str
    values: F64  # (N, 26) in DEFAULT_CHANNELS order
    labels: NDArray[np.int8]
    episodes: list[Episode]


class FarmSimulator:
    """Generates a farm of turbines from `SimulationSettings`, deterministically per seed."""

    def __init__(self, settings: SimulationSettings, label_margin_s: float = 1800.0) -> None:
        self.cfg = settings
        self.label_margin_s = label_margin_s
        self.start = datetime.fromisoformat(settings.start).replace(tzinfo=UTC)
        self.start_ms = int(self.start.timestamp() * 1000)

    # -- public -----------------------------------------------------------------

    def generate(self) -> tuple[list[TurbineFrame], list[Episode]]:
        """Simulate every turbine; returns frames (after missing samples and gaps) and episodes."""
        root = np.random.SeedSequence(self.cfg.seed)
        farm_seed, *turbine_seeds = root.spawn(self.cfg.turbines + 1)
        farm_rng = np.random.default_rng(farm_seed)
        t_s = make_time_grid(farm_rng, self.cfg.days, self.cfg.interval_s)
        weather = make_weather(farm_rng, t_s, self.start)
        events = icing_windows(farm_rng, weather, self.cfg.icing_episodes_per_turbine_week)
        frames, episodes = [], []
        for k, seed in enumerate(turbine_seeds):
            rng = np.random.default_rng(seed)
            sim = self._turbine(rng, f"{k + 1:02d}", weather, events)
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
            "channels": list(DEFAULT_CHANNELS),
            "episodes": [asdict(e) for e in episodes],
        }
        (out_dir / "episodes.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        return frames, episodes

    # -- one turbine ----------------------------------------------------------------

    def _turbine(
        self,
        rng: np.random.Generator,
        turbine_id: str,
        weather: Weather,
        events: list[tuple[int, int]],
    ) -> TurbineSim:
        cfg = self.cfg
        n = weather.t_s.shape[0]
        dt = weather.dt_s
        step = float(np.median(dt))
        rated = cfg.rated_power_kw
        # ---- wind at this turbine: farm wind x site factor + turbulence and gusts
        site = rng.uniform(0.92, 1.08)
        turb = ar1(rng, n, step, tau_s=25.0, std=1.0) * 0.12 * weather.wind * site
        gusts = np.where(rng.random(n) < 0.01, rng.exponential(2.0, n), 0.0)
        wind_true = np.clip(weather.wind * site + turb + lag(gusts, step, 20.0), 0.0, None)
        wind_eff = lag(wind_true, step, 10.0)  # rotor inertia: the rotor sees a smoothed wind

        # ---- operating modes: stops (maintenance), curtailment
        stopped = self._spells(rng, n, dt, cfg.stops_per_turbine_week, (1.0, 8.0))
        curtail_cap = np.full(n, np.inf)
        for a, b in runs(self._spells(rng, n, dt, cfg.curtailment_per_turbine_week, (1.0, 6.0))):
            curtail_cap[a : b + 1] = rated * rng.uniform(0.3, 0.75)

        # ---- icing: which events hit this turbine, with what severity and kind
        severity = np.zeros(n)
        anemo_severity = np.zeros(n)
        deficit = np.zeros(n)
        stop_on_ice = np.zeros(n, dtype=np.bool_)
        blade_div = rng.normal(0.0, 1.0, 3)  # per-blade pitch divergence under ice
        episodes: list[Episode] = []
        for a, b in events:
            if rng.random() > 0.85:  # not every turbine ices in every event
                continue
            kind = "anemometer" if rng.random() < cfg.anemometer_icing_fraction else "blade"
            accretion = np.zeros(n, dtype=np.bool_)
            jitter = int(rng.normal(0, 0.5) * HOUR_S / 7.0)
            accretion[max(0, a + jitter) : max(0, b + jitter) + 1] = True
            accretion &= weather.temperature < 0.5
            s_max = float(rng.uniform(0.5, 1.0))
            s = severity_track(rng, weather, accretion, s_max)
            if not np.any(s > 0):
                continue
            d = float(rng.uniform(0.15, 0.5))  # light to moderate icing: 10-50 % power lost
            # Severe blade ice sometimes ends in a stop (operator or protection), while it
            # lasts above 80 % of this episode's target severity.
            stop_mask = s > 0.8 * max(s_max, 0.8)
            stops = kind == "blade" and bool(stop_mask.any()) and rng.random() < 0.5
            if kind == "blade":
                severity = np.maximum(severity, s)
                deficit = np.maximum(deficit, np.where(s > 0, d, 0.0))
                if stops:
                    stop_on_ice |= stop_mask
                affected: tuple[str, ...] = (
                    "power",
                    "generator_speed",
                    "pitch1_angle",
                    "pitch2_angle",
                    "pitch3_angle",
                    "acc_x",
                    "acc_y",
                )
            else:
                anemo_severity = np.maximum(anemo_severity, s)
                affected = ("wind_speed",)
            episodes.append(
                self._episode(
                    turbine_id,
                    kind=kind,
                    s=s,
                    t_s=weather.t_s,
                    deficit=d,
                    stops=stops,
                    affected=affected,
                )
            )
        effect = severity * deficit  # fraction of power lost

        # ---- power, rotor speed, pitch
        available = power_curve(wind_eff, rated)
        power = available * (1.0 - effect)
        power = np.minimum(power, curtail_cap)
        curtailed = np.isfinite(curtail_cap) & (available > curtail_cap)
        down = stopped | stop_on_ice
        # An iced rotor needs more wind to start turning (its cut-in rises).
        cut_in = CUT_IN * (1.0 + 1.0 * effect)
        producing = (wind_eff >= cut_in) & (wind_eff < CUT_OUT) & ~down
        power = np.where(producing, power, 0.0)
        power += rng.normal(0.0, 1.0, n) * (3.0 + 0.01 * np.abs(power)) * producing  # meter noise
        power = np.where(producing, power, rng.normal(-4.0, 1.0, n))  # idle consumption
        rpm = rotor_speed(wind_eff) * (1.0 - 0.35 * effect)
        rpm = np.where(producing, rpm, np.where(down, 0.3, 2.0) * rng.random(n))
        rpm = lag(rpm, step, 15.0) + rng.normal(0.0, 0.08, n)

        above_rated = np.clip(wind_eff - RATED_WIND, 0.0, None)
        # Below rated the controller keeps fine pitch (max power) with or without ice; above
        # rated an iced rotor captures less, so it needs less pitch to hold rated power.
        pitch = 2.6 * above_rated**0.8 * (1.0 - 0.8 * effect)
        pitch += np.where(
            curtailed, 14.0 * np.clip(1 - curtail_cap / np.maximum(available, 1), 0, 1) ** 0.7, 0.0
        )
        pitch = np.where(producing, pitch, np.where(down | (wind_eff >= CUT_OUT), 89.0, 65.0))
        pitch = lag(pitch, step, 8.0)
        pitches = []
        for k in range(3):
            # Static calibration offsets of a few tenths of a degree and encoder noise in
            # normal operation; iced blades, loaded unevenly, diverge a little more.
            offset = rng.normal(0.0, 0.3) + 0.8 * severity * blade_div[k]
            pitches.append(pitch + offset + rng.normal(0.0, 0.15, n))
        pitch_speed = [np.diff(p, prepend=p[0]) / dt + rng.normal(0.0, 0.02, n) for p in pitches]

        # ---- yaw with a dead band; relative wind direction
        wind_dir = weather.direction + ar1(rng, n, step, tau_s=30.0, std=6.0)
        yaw, yaw_speed = self._yaw(rng, wind_dir, dt, ~stopped)
        relative = wrap_deg(wind_dir - yaw)
        relative_mean = lag(relative, step, 12.5)  # 25 s mean of the angle of wind to nacelle

        # ---- temperatures: ambient sensor, motors, nacelle, pitch cabinets
        ambient = weather.temperature + rng.normal(0.0, 0.3) + rng.normal(0.0, 0.1, n)
        load = np.clip(power / rated, 0.0, 1.0)
        activity = lag(np.mean(np.abs(pitch_speed), axis=0), step, 600.0)
        motor = [
            lag(
                weather.temperature + 9.0 + rng.normal(0, 1.0) + 25.0 * activity + 6 * load,
                step,
                1800.0,
            )
            + rng.normal(0.0, 0.15, n)
            for _ in range(3)
        ]
        nacelle = np.maximum(lag(weather.temperature + 11.0 + 9.0 * load, step, 3600.0), 6.0)
        nacelle += rng.normal(0.0, 0.15, n)
        cabinets = [
            np.maximum(
                lag(weather.temperature + 17.0 + rng.normal(0, 1.5) + 5.0 * load, step, 3000.0),
                10.0,
            )
            + rng.normal(0.0, 0.2, n)
            for _ in range(3)
        ]
        charge_cycle = ar1(rng, n, step, tau_s=900.0, std=0.15)
        currents = [
            np.clip(0.35 + charge_cycle + 1.2 * np.abs(ps) + rng.normal(0.0, 0.05, n), 0.0, None)
            for ps in pitch_speed
        ]

        # ---- vibration: turbulence and speed driven; imbalance under blade ice
        base = 0.015 + 0.0035 * wind_eff + 0.012 * rpm / MAX_RPM
        imbalance = 1.0 + 3.0 * severity * rpm / MAX_RPM  # mass imbalance needs rotation
        phase = rng.uniform(0, 2 * np.pi, n)
        one_p = severity * rpm / MAX_RPM  # once-per-revolution component, aliased by sampling
        acc_x = base * imbalance * rng.standard_normal(n) + 0.04 * one_p * np.sin(phase)
        acc_y = 0.8 * base * imbalance * rng.standard_normal(n) + 0.03 * one_p * np.cos(phase)

        # ---- the anemometer: small bias, noise; under-reads when iced
        measured_wind = wind_true * rng.uniform(0.98, 1.02) * (1.0 - 0.3 * anemo_severity)
        measured_wind = np.clip(measured_wind + rng.normal(0.0, 0.15, n), 0.0, None)

        channels = {
            "wind_speed": measured_wind,
            "generator_speed": np.clip(rpm, 0.0, None),
            "power": power,
            "wind_direction": relative,
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
        values = np.stack([channels[c] for c in DEFAULT_CHANNELS], axis=1)
        labels = self._labels(weather.t_s, episodes)
        return TurbineSim(turbine_id, values, labels, episodes)

    # -- helpers ---------------------------------------------------------------------

    def _spells(
        self,
        rng: np.random.Generator,
        n: int,
        dt: F64,
        per_week: float,
        hours: tuple[float, float],
    ) -> NDArray[np.bool_]:
        """Random spells (stops, curtailment) at `per_week`, each lasting `hours`."""
        mask = np.zeros(n, dtype=np.bool_)
        weeks = float(np.sum(dt)) / (7 * 24 * HOUR_S)
        for _ in range(rng.poisson(per_week * weeks)):
            a = int(rng.integers(0, n))
            length = int(rng.uniform(*hours) * HOUR_S / float(np.mean(dt)))
            mask[a : a + length] = True
        return mask

    def _yaw(
        self, rng: np.random.Generator, wind_dir: F64, dt: F64, active: NDArray[np.bool_]
    ) -> tuple[F64, F64]:
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
                    speed[i] = move / dts[i] if dts[i] > 0 else 0.0
                    if abs(err) < 1.5:
                        moving = False
            yaw[i] = y
        return np.asarray(yaw), np.asarray(speed) + rng.normal(0.0, 0.01, n)

    def _episode(
        self,
        turbine_id: str,
        *,
        kind: str,
        s: F64,
        t_s: F64,
        deficit: float,
        stops: bool,
        affected: tuple[str, ...],
    ) -> Episode:
        peak = float(s.max())
        present = np.flatnonzero(s > 0)
        body = np.flatnonzero(s >= 0.5 * peak)
        to_ms = self._to_ms(t_s)
        # Operators label what they can notice: >= 8 % power lost (blade ice), or a stop, or
        # a wind reading >= 8 % low (anemometer ice). Weaker ice stays unlabelled.
        noticeable = (peak * deficit if kind == "blade" else 0.3 * peak) >= 0.08 or stops
        return Episode(
            turbine_id=turbine_id,
            kind=kind,
            start_ms=int(to_ms[present[0]]),
            end_ms=int(to_ms[present[-1]]),
            label_start_ms=int(to_ms[body[0]]),
            label_end_ms=int(to_ms[body[-1]]),
            peak_severity=round(peak, 4),
            power_deficit=round(deficit, 4) if kind == "blade" else 0.0,
            stops_turbine=stops,
            affected_channels=affected,
            labelled=noticeable,
        )

    def _to_ms(self, t_s: F64) -> NDArray[np.int64]:
        ms: NDArray[np.int64] = (self.start_ms + np.round(t_s * 1000)).astype(np.int64)
        return ms

    def _labels(self, t_s: F64, episodes: list[Episode]) -> NDArray[np.int8]:
        """ICING in each episode's body, UNKNOWN in its tails and margin, NORMAL elsewhere."""
        t_ms = self._to_ms(t_s)
        labels = np.full(t_ms.shape[0], Label.NORMAL, dtype=np.int8)
        margin = int(self.label_margin_s * 1000)
        for e in episodes:
            lo, hi = np.searchsorted(t_ms, [e.start_ms - margin, e.end_ms + margin])
            labels[lo:hi] = np.where(labels[lo:hi] == Label.ICING, Label.ICING, Label.UNKNOWN)
        for e in episodes:
            if not e.labelled:
                continue
            lo, hi = np.searchsorted(t_ms, [e.label_start_ms, e.label_end_ms], side="left")
            labels[lo : hi + 1] = Label.ICING
        return labels

    def _sample(self, rng: np.random.Generator, sim: TurbineSim, t_s: F64) -> TurbineFrame:
        """Cut missing samples and recording gaps; number the recording blocks (groups)."""
        n = t_s.shape[0]
        keep = np.asarray(rng.random(n) >= self.cfg.missing_sample_fraction, dtype=np.bool_)
        group = np.zeros(n, dtype=np.int64)
        for a, b in runs(
            self._spells(
                rng,
                n,
                np.diff(t_s, prepend=t_s[0] - 7.0),
                self.cfg.gaps_per_turbine_week,
                (0.05, 6.0),
            )
        ):
            keep[a : b + 1] = False
            group[b + 1 :] += 1
        return TurbineFrame(
            turbine_id=sim.turbine_id,
            times_ms=self._to_ms(t_s)[keep],
            values=sim.values[keep],
            groups=group[keep] + 1,
            labels=sim.labels[keep],
            source="simulated",
            channels=DEFAULT_CHANNELS,
        )


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
