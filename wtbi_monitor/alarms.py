"""The icing alarm state machine: window scores in, alarm EVENTS out (pure, no I/O).

Timing is in TIME, not in window counts, so the same settings behave alike at 7 s and at
10-minute sampling (docs/alarms.md has a timeline picture):

* Evidence per window: the model's score above its turbine's threshold, and/or the IEA
  Wind Task 19 rule's condition (power below P10 of the reference curve at T < 0 C in at
  least half of the window's rows; model/classical.py); `policy` says which counts
  (model, rule, either, both). Windows are not counted while a gate holds: ambient temperature above
  `temperature_gate_c`, the turbine stopped for lack of wind, or a curtailment/stop flag.
* Raise (on-delay): when at least `on_fraction` of the windows expected in the last
  `on_window_s` count. The alarm starts at the oldest counting window of that run.
* Clear (off-delay with hysteresis): when the evidence has been absent for `off_delay_s`
  (the model's score at or below the turbine's clear level, the rule condition off) and
  the alarm has lasted `min_duration_s`. The clear level is the (1 - clear_tail) quantile
  of the turbine's validation normal scores, never above its threshold: reachable for any
  detector, also for bounded or discrete scores (a score AT the clear level clears). The
  alarm ends at its last window with evidence.
* Re-arm: a raise within `rearm_s` of the previous alarm's end (its last window with
  evidence) continues the same alarm (same id and start), so one icing episode with a
  pause gives one alarm, not two.
* Identity: alarm_id = UUID5(turbine | start ms | model version), so the same input always
  gives the same ids and a replay overwrites instead of duplicating.
* Attribution: each channel's error in excess of its median on normal validation data,
  summed over the alarm's counting windows, as shares of the total (`rank_channels`, the
  one ranking used by the daemon, `score`, the evaluation and the benchmark).
* Drift: per turbine, the share of windows above the threshold outside alarms and gates,
  averaged over `drift_horizon_s`; above `drift_factor` x the calibrated false-positive
  rate the turbine is flagged as drifting (the threshold no longer represents its normal
  operation: recalibrate, docs/operations.md).

The same machine runs in evaluation (event metrics), replay and the daemon.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wtbi_monitor.config import AlarmSettings
from wtbi_monitor.domain import TOP_K, AlarmEvent, AlarmState, Severity, WindowScore
from wtbi_monitor.preprocessing.stream import decode_array, encode_array

#: Namespace of alarm ids (a fixed random UUID; changing it changes every id).
ALARM_NAMESPACE = uuid.UUID("6f1c2b1e-4d0a-4c7e-9a55-0f3b9d2c7e11")
MODEL, RULE = 1, 2  # evidence bits
EVIDENCE_NAMES = {MODEL: "model", RULE: "rule", MODEL | RULE: "model+rule"}


class TurbineState(enum.StrEnum):
    """Where one turbine's alarm machine stands."""

    WARMING_UP = "warming_up"
    NORMAL = "normal"
    RAISED = "raised"


class Gate(enum.StrEnum):
    """Why a window did not count towards raising."""

    WARM = "warm"
    CALM = "calm"
    FLAG = "flag"


def alarm_id(turbine_id: str, start_ms: int, model_version: str) -> str:
    """Deterministic alarm identity."""
    return str(uuid.uuid5(ALARM_NAMESPACE, f"{turbine_id}|{start_ms}|{model_version}"))


@dataclass(frozen=True)
class Levels:
    """A turbine's raise threshold and clear level (clear_level <= threshold)."""

    threshold: float
    clear_level: float


def clear_level_of(sorted_scores: NDArray[np.float64], threshold: float, tail: float) -> float:
    """The (1 - tail) quantile of normal scores, capped at the threshold."""
    if sorted_scores.size == 0:
        return threshold
    return min(threshold, float(np.quantile(sorted_scores, 1.0 - tail)))


@dataclass(frozen=True)
class AlarmContext:
    """What the machine needs to know about the model.

    Attributes:
        model_name: bundle name.
        model_version: bundle version (name@hash), part of alarm ids.
        threshold: the fleet's raise level.
        reference: median score of normal validation windows (severity).
        channels: channel names, in the order of `WindowScore.channel_errors`.
        channel_reference: per-channel median error on normal validation windows, or None.
        clear_level: the fleet's clear level (<= threshold).
        interval_s: time between consecutive windows of a turbine (sampling interval, x the
            stride when only every n-th window is scored).
        per_turbine: turbines with their own calibrated levels.
        target_fpr: the calibrated false-positive rate (drift reference).
        max_power: largest training power (physical units), for the calm gate.
    """

    model_name: str
    model_version: str
    threshold: float
    reference: float
    channels: tuple[str, ...]
    channel_reference: NDArray[np.float64] | None = None
    clear_level: float | None = None
    interval_s: float = 7.0
    per_turbine: dict[str, Levels] = field(default_factory=dict)
    target_fpr: float = 0.001
    max_power: float | None = None

    def levels(self, turbine_id: str) -> Levels:
        """The turbine's own levels, else the fleet's."""
        own = self.per_turbine.get(turbine_id)
        if own is not None:
            return own
        clear = self.threshold if self.clear_level is None else self.clear_level
        return Levels(self.threshold, min(clear, self.threshold))

    def severity(self, peak: float, threshold: float) -> Severity:
        """Peak distance above normal, in units of (threshold - normal)."""
        span = threshold - self.reference
        if not np.isfinite(span) or span <= 0:
            return Severity.MEDIUM
        ratio = (peak - self.reference) / span
        if ratio >= 3.0:
            return Severity.HIGH
        if ratio >= 1.5:
            return Severity.MEDIUM
        return Severity.LOW


def lowest_clear_level(context: AlarmContext) -> float:
    """The lowest clear level of any turbine.

    Windows at or above it can matter to an alarm, so their per-channel errors are computed.
    """
    levels = [context.levels(""), *context.per_turbine.values()]
    return min(level.clear_level for level in levels)


@dataclass
class _Active:
    alarm_id: str
    start_ms: int
    raised_ms: int
    last_active_ms: int
    peak: float
    windows_above: int
    contribution: NDArray[np.float64] | None
    evidence: int


@dataclass(frozen=True)
class _Seen:
    time_ms: int
    counts: bool  # evidence under the policy and not gated
    bits: int
    score: float
    excess: NDArray[np.float64] | None


@dataclass
class TurbineAlarm:
    """The alarm machine of ONE turbine."""

    turbine_id: str
    settings: AlarmSettings
    context: AlarmContext
    state: TurbineState = TurbineState.WARMING_UP
    #: windows not counted, per gate (the processor turns them into metrics)
    gated: dict[str, int] = field(default_factory=dict)
    #: the gate of the last window, or None
    last_gate: str | None = None
    _recent: deque[_Seen] = field(init=False, default_factory=deque)
    _active: _Active | None = field(init=False, default=None)
    _last: _Active | None = field(init=False, default=None)  # the last cleared alarm
    _last_clear_ms: int | None = field(init=False, default=None)
    _ew_windows: float = field(init=False, default=0.0)
    _ew_above: float = field(init=False, default=0.0)
    _ew_time_ms: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        s, interval = self.settings, max(self.context.interval_s, 1e-3)
        self.levels = self.context.levels(self.turbine_id)
        self.on_window_ms = round(s.on_window_s * 1000)
        self.required = max(1, math.ceil(s.on_fraction * s.on_window_s / interval - 1e-9))
        self.off_delay_ms = round(s.off_delay_s * 1000)
        self.min_duration_ms = round(s.min_duration_s * 1000)
        self.rearm_ms = round(s.rearm_s * 1000)
        self.drift_tau_ms = s.drift_horizon_s * 1000
        self.drift_min_windows = 0.5 * s.drift_horizon_s / interval

    @property
    def active_alarm_id(self) -> str | None:
        """Id of the raised alarm, if any."""
        return self._active.alarm_id if self._active else None

    # ------------------------------------------------------------------ evidence

    def _gate(self, w: WindowScore) -> Gate | None:
        s = self.settings
        if (
            s.temperature_gate_c is not None
            and w.ambient_temp is not None
            and w.ambient_temp > s.temperature_gate_c
        ):
            return Gate.WARM
        if (
            s.stopped_power_share is not None
            and self.context.max_power is not None
            and w.power is not None
            and w.wind_speed is not None
            and w.power < s.stopped_power_share * self.context.max_power
            and w.wind_speed < s.stopped_wind_ms
        ):
            return Gate.CALM
        if w.flagged:
            return Gate.FLAG
        return None

    def _bits(self, w: WindowScore, level: float, *, strict: bool) -> int:
        model = w.score > level if strict else w.score >= level
        return (MODEL if model else 0) | (RULE if w.rule else 0)

    def _holds(self, bits: int) -> bool:
        policy = self.settings.policy
        if policy == "model":
            return bool(bits & MODEL)
        if policy == "rule":
            return bool(bits & RULE)
        if policy == "both":
            return bits == MODEL | RULE
        return bits != 0  # either

    def _excess(self, w: WindowScore) -> NDArray[np.float64] | None:
        if w.channel_errors is None:
            return None
        return channel_excess(w.channel_errors, self.context.channel_reference)

    # ------------------------------------------------------------------ updates

    def update(self, w: WindowScore) -> AlarmEvent | None:
        """Feed the next window of this turbine (time order); return a transition or None."""
        if self.state is TurbineState.WARMING_UP:
            self.state = TurbineState.NORMAL
        gate = self._gate(w)
        self.last_gate = None if gate is None else gate.value
        if gate is not None:
            self.gated[gate.value] = self.gated.get(gate.value, 0) + 1
        if self.state is TurbineState.NORMAL:
            return self._update_normal(w, gate)
        return self._update_raised(w, gate)

    def _drift(self, w: WindowScore, above: bool) -> None:
        if self._ew_time_ms is not None:
            decay = math.exp(-max(0, w.time_ms - self._ew_time_ms) / self.drift_tau_ms)
            self._ew_windows *= decay
            self._ew_above *= decay
        self._ew_time_ms = w.time_ms
        self._ew_windows += 1.0
        self._ew_above += 1.0 if above else 0.0

    @property
    def drift_rate(self) -> float | None:
        """Recent share of windows above the threshold outside alarms and gates."""
        if self._ew_windows < self.drift_min_windows:
            return None
        return self._ew_above / self._ew_windows

    @property
    def drifting(self) -> bool:
        """The turbine exceeds its threshold far more often than it was calibrated for."""
        rate = self.drift_rate
        factor = self.settings.drift_factor
        return rate is not None and rate > factor * self.context.target_fpr

    def _update_normal(self, w: WindowScore, gate: Gate | None) -> AlarmEvent | None:
        """No active alarm: raise when enough recent windows count."""
        bits = self._bits(w, self.levels.threshold, strict=True)
        counts = gate is None and self._holds(bits)
        if gate is None:
            self._drift(w, bool(bits & MODEL))
        self._recent.append(_Seen(w.time_ms, counts, bits, w.score, self._excess(w)))
        horizon = w.time_ms - self.on_window_ms
        while self._recent and self._recent[0].time_ms <= horizon:
            self._recent.popleft()
        if not counts:
            return None
        counting = [h for h in self._recent if h.counts]
        if len(counting) < self.required:
            return None
        start = counting[0].time_ms
        contributions = [h.excess for h in counting if h.excess is not None]
        contribution = np.sum(contributions, axis=0) if contributions else None
        evidence = 0
        for h in counting:
            evidence |= h.bits
        last = self._last
        if (
            last is not None
            and self._last_clear_ms is not None
            and start - self._last_clear_ms <= self.rearm_ms
        ):
            # Re-arm: the same episode continues; keep its id, start and history.
            self._active = _Active(
                alarm_id=last.alarm_id,
                start_ms=last.start_ms,
                raised_ms=w.time_ms,
                last_active_ms=w.time_ms,
                peak=max(last.peak, *(h.score for h in counting)),
                windows_above=last.windows_above + len(counting),
                contribution=_add(last.contribution, contribution),
                evidence=last.evidence | evidence,
            )
        else:
            self._active = _Active(
                alarm_id=alarm_id(self.turbine_id, start, self.context.model_version),
                start_ms=start,
                raised_ms=w.time_ms,
                last_active_ms=w.time_ms,
                peak=max(h.score for h in counting),
                windows_above=len(counting),
                contribution=contribution,
                evidence=evidence,
            )
        self._recent.clear()
        self.state = TurbineState.RAISED
        return self._event(AlarmState.RAISED, w.time_ms)

    def _update_raised(self, w: WindowScore, gate: Gate | None) -> AlarmEvent | None:
        """An active alarm: track it; clear after the off-delay without evidence."""
        active = self._active
        if active is None:  # pragma: no cover - RAISED always has an active alarm
            self.state = TurbineState.NORMAL
            return None
        # Hysteresis: evidence lasts while the score is above the (lower) clear level.
        bits = self._bits(w, self.levels.clear_level, strict=True)
        if self._holds(bits) and gate is not Gate.WARM:
            active.last_active_ms = w.time_ms
            active.peak = max(active.peak, w.score)
            above = self._bits(w, self.levels.threshold, strict=True)
            if gate is None and self._holds(above):
                active.windows_above += 1
                active.evidence |= above
                active.contribution = _add(active.contribution, self._excess(w))
            return None
        quiet = w.time_ms - active.last_active_ms >= self.off_delay_ms
        lasted = w.time_ms - active.start_ms >= self.min_duration_ms
        if not (quiet and lasted):
            return None
        event = self._event(AlarmState.CLEARED, w.time_ms)
        self._last, self._last_clear_ms = active, active.last_active_ms
        self._active = None
        self.state = TurbineState.NORMAL
        return event

    def _event(self, state: AlarmState, time_ms: int) -> AlarmEvent:
        active = self._active
        if active is None:  # pragma: no cover - only called with an active alarm
            msg = "no active alarm"
            raise RuntimeError(msg)
        return AlarmEvent(
            alarm_id=active.alarm_id,
            turbine_id=self.turbine_id,
            state=state,
            start_ms=active.start_ms,
            end_ms=active.last_active_ms if state is AlarmState.CLEARED else None,
            event_time_ms=time_ms,
            peak_score=active.peak,
            threshold=self.levels.threshold,
            model_name=self.context.model_name,
            model_version=self.context.model_version,
            severity=self.context.severity(active.peak, self.levels.threshold),
            top_channels=rank_channels(
                active.contribution, self.context.channels, self.settings.top_channels
            ),
            windows_above=active.windows_above,
            evidence=EVIDENCE_NAMES.get(active.evidence, "model"),
        )

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """The complete state as a JSON-ready dict (floats survive JSON exactly)."""
        return {
            "state": self.state.value,
            "recent": [
                [
                    h.time_ms,
                    h.counts,
                    h.bits,
                    h.score,
                    None if h.excess is None else encode_array(h.excess),
                ]
                for h in self._recent
            ],
            "active": _active_json(self._active),
            "last": _active_json(self._last),
            "last_clear_ms": self._last_clear_ms,
            "drift": [self._ew_windows, self._ew_above, self._ew_time_ms],
            "gated": dict(self.gated),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load a `snapshot()`."""
        self.state = TurbineState(data["state"])
        self._recent = deque(
            _Seen(
                int(t),
                bool(counts),
                int(bits),
                float(score),
                None if excess is None else decode_array(excess),
            )
            for t, counts, bits, score, excess in data["recent"]
        )
        self._active = _active_from(data["active"])
        self._last = _active_from(data["last"])
        self._last_clear_ms = data["last_clear_ms"]
        self._ew_windows, self._ew_above, self._ew_time_ms = data["drift"]
        self.gated = dict(data.get("gated", {}))

    def open_interval(self) -> tuple[int, int] | None:
        """(start, last active time) of the raised alarm, if any (for evaluation)."""
        if self._active is None:
            return None
        return (self._active.start_ms, self._active.last_active_ms)


def _add(
    a: NDArray[np.float64] | None, b: NDArray[np.float64] | None
) -> NDArray[np.float64] | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _active_json(a: _Active | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {
        "alarm_id": a.alarm_id,
        "start_ms": a.start_ms,
        "raised_ms": a.raised_ms,
        "last_active_ms": a.last_active_ms,
        "peak": a.peak,
        "windows_above": a.windows_above,
        "contribution": None if a.contribution is None else encode_array(a.contribution),
        "evidence": a.evidence,
    }


def _active_from(a: dict[str, Any] | None) -> _Active | None:
    if a is None:
        return None
    return _Active(
        alarm_id=a["alarm_id"],
        start_ms=int(a["start_ms"]),
        raised_ms=int(a["raised_ms"]),
        last_active_ms=int(a["last_active_ms"]),
        peak=float(a["peak"]),
        windows_above=int(a["windows_above"]),
        contribution=None if a["contribution"] is None else decode_array(a["contribution"]),
        evidence=int(a["evidence"]),
    )


def channel_excess(
    errors: NDArray[np.float64], reference: NDArray[np.float64] | None
) -> NDArray[np.float64]:
    """Per-channel error in excess of its median on normal validation windows (>= 0).

    Works on one window (C,) or many (n, C).
    """
    excess = errors if reference is None else errors - reference
    out: NDArray[np.float64] = np.clip(excess, 0.0, None)
    return out


def rank_channels(
    contribution: NDArray[np.float64] | None, channels: tuple[str, ...], k: int
) -> tuple[tuple[str, float], ...]:
    """The k channels with the largest share of an (excess) contribution, with their shares.

    The one channel ranking of the product: alarms, score points, `score`, the evaluation
    and the benchmark's hit rate all use it (on `channel_excess`).
    """
    if contribution is None:
        return ()
    total = float(contribution.sum())
    if total <= 0 or not np.isfinite(total):
        return ()
    order = np.argsort(-contribution, kind="stable")[:k]
    return tuple((channels[i], round(float(contribution[i] / total), 4)) for i in order)


def rank_many(
    errors: NDArray[np.float64], reference: NDArray[np.float64] | None, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """`rank_channels` for many windows (n, C): top-k channel indices and their shares.

    Indices are -1 where a window has no excess at all.
    """
    excess = channel_excess(errors, reference)
    n = excess.shape[0]
    index = np.full((n, k), -1, dtype=np.int64)
    share = np.zeros((n, k))
    if n == 0:
        return index, share
    order = np.argsort(-excess, axis=1, kind="stable")[:, :k]
    total = excess.sum(axis=1, keepdims=True)
    has = total[:, 0] > 0
    picked = np.take_along_axis(excess, order, axis=1)
    index[has] = order[has]
    share[has] = picked[has] / total[has]
    return index, share


def top_channels(
    errors: NDArray[np.float64], reference: NDArray[np.float64] | None
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The product's one channel attribution: the TOP_K channels of largest excess error.

    Score points, alarm events, `wtbi-monitor score` and the benchmark's hit rate all rank
    with this (excess over the normal reference, `channel_excess`).
    """
    return rank_many(errors, reference, TOP_K)


@dataclass(frozen=True)
class WindowInputs:
    """Per-window alarm inputs besides the score, as Python lists (fast element access)."""

    temperature: list[float | None]
    power: list[float | None]
    wind: list[float | None]
    flagged: list[bool]
    rule: list[bool]

    def at(self, i: int) -> dict[str, Any]:
        """Window i's inputs as `WindowScore` fields (the daemon and evaluation share them)."""
        return {
            "ambient_temp": self.temperature[i],
            "power": self.power[i],
            "wind_speed": self.wind[i],
            "rule": self.rule[i],
            "flagged": self.flagged[i],
        }


def window_inputs(
    channel_means: NDArray[np.float64],
    gate_index: tuple[int | None, int | None, int | None],
    flag_index: list[int],
    rule: NDArray[np.bool_] | None,
) -> WindowInputs:
    """Gate inputs (temperature, power, wind, flags) from window means, plus rule evidence.

    `gate_index`: columns of temperature, power and wind (None: absent, gate off).
    """
    n = channel_means.shape[0]
    none: list[float | None] = [None] * n

    def col(k: int | None) -> list[float | None]:
        return none if k is None else channel_means[:, k].tolist()

    flagged: list[bool] = [False] * n
    if flag_index:
        set_any: NDArray[np.bool_] = np.any(channel_means[:, flag_index] > 0.5, axis=1)
        flagged = [bool(v) for v in set_any]
    return WindowInputs(
        temperature=col(gate_index[0]),
        power=col(gate_index[1]),
        wind=col(gate_index[2]),
        flagged=flagged,
        rule=[False] * n if rule is None else rule.tolist(),
    )


def gates_open(
    channel_means: NDArray[np.float64],
    channels: tuple[str, ...],
    settings: AlarmSettings,
    max_power: float | None,
) -> NDArray[np.bool_]:
    """(n,) True for windows that no gate would stop from raising (vectorised `_gate`).

    Thresholds are calibrated on such windows: the tail that matters is the one an alarm
    can come from (a maintenance stop on a warm day is gated, a stop in the frost is not).
    """
    (t, p, w), flags = gate_columns(channels, settings)
    n = channel_means.shape[0]
    open_: NDArray[np.bool_] = np.ones(n, dtype=np.bool_)
    if settings.temperature_gate_c is not None and t is not None:
        open_ &= ~(channel_means[:, t] > settings.temperature_gate_c)
    if (
        settings.stopped_power_share is not None
        and max_power is not None
        and p is not None
        and w is not None
    ):
        calm = (channel_means[:, p] < settings.stopped_power_share * max_power) & (
            channel_means[:, w] < settings.stopped_wind_ms
        )
        open_ &= ~calm
    if flags:
        open_ &= ~np.any(channel_means[:, flags] > 0.5, axis=1)
    return open_


def gate_columns(
    channels: tuple[str, ...], settings: AlarmSettings
) -> tuple[tuple[int | None, int | None, int | None], list[int]]:
    """Columns of the gate inputs in `channels` (None where absent) and of flag channels."""

    def idx(name: str) -> int | None:
        return channels.index(name) if name in channels else None

    gates = (
        idx(settings.temperature_channel),
        idx(settings.power_channel),
        idx(settings.wind_channel),
    )
    return gates, [channels.index(c) for c in settings.flag_channels if c in channels]


def gates_off(channels: tuple[str, ...], settings: AlarmSettings) -> dict[str, list[str]]:
    """Configured gates that cannot work because their channels are absent (gate -> missing).

    Flag channels are optional by design (used where a SCADA export has them) and not listed.
    """
    out: dict[str, list[str]] = {}
    if settings.temperature_gate_c is not None and settings.temperature_channel not in channels:
        out["temperature"] = [settings.temperature_channel]
    if settings.stopped_power_share is not None:
        missing = [c for c in (settings.power_channel, settings.wind_channel) if c not in channels]
        if missing:
            out["stopped"] = missing
    return out


@dataclass
class AlarmBook:
    """Alarm machines of all turbines, created on first sight."""

    settings: AlarmSettings
    context: AlarmContext
    turbines: dict[str, TurbineAlarm] = field(default_factory=dict)

    def machine(self, turbine_id: str) -> TurbineAlarm:
        """The (possibly new) machine of a turbine."""
        m = self.turbines.get(turbine_id)
        if m is None:
            m = TurbineAlarm(turbine_id, self.settings, self.context)
            self.turbines[turbine_id] = m
        return m

    def update(self, w: WindowScore) -> AlarmEvent | None:
        """Route one window to its turbine's machine."""
        return self.machine(w.turbine_id).update(w)
