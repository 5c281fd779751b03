"""The icing alarm state machine: window scores in, alarm EVENTS out (pure, no I/O).

Per turbine: WARMING_UP until its first window, then NORMAL or RAISED.

* Raise (on-delay): when at least `on_k` of the last `on_n` windows are above the
  threshold. The alarm starts at the oldest above-threshold window of that run, so the
  start time does not depend on the delay.
* Clear (off-delay with hysteresis): after `off_n` consecutive windows below the clear
  level, which lies below the threshold:
  ``clear = threshold - hysteresis * (threshold - median normal score)``. A score hovering
  at the threshold therefore cannot flap. The alarm ends at its last window at or above
  the clear level.
* Gates (optional): windows are not counted towards raising while the ambient
  temperature is above `temperature_gate_c`, or while the turbine is stopped for lack of
  wind (power below `stopped_power_kw` and wind below `stopped_wind_ms`).
* Identity: alarm_id = UUID5(turbine | start ms | model version), so the same input always
  gives the same ids and a replay overwrites instead of duplicating.
* Attribution: each channel's reconstruction error in excess of its median on normal
  validation data, summed over the alarm's windows, as shares of the total.

The same machine runs in evaluation (event metrics), replay and the daemon.
"""

from __future__ import annotations

import enum
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wtbi_monitor.config import AlarmSettings
from wtbi_monitor.domain import AlarmEvent, AlarmState, Severity, WindowScore
from wtbi_monitor.preprocessing.stream import decode_array, encode_array

#: Namespace of alarm ids (a fixed random UUID; changing it changes every id).
ALARM_NAMESPACE = uuid.UUID("6f1c2b1e-4d0a-4c7e-9a55-0f3b9d2c7e11")


class TurbineState(enum.StrEnum):
    """Where one turbine's alarm machine stands."""

    WARMING_UP = "warming_up"
    NORMAL = "normal"
    RAISED = "raised"


def alarm_id(turbine_id: str, start_ms: int, model_version: str) -> str:
    """Deterministic alarm identity."""
    return str(uuid.uuid5(ALARM_NAMESPACE, f"{turbine_id}|{start_ms}|{model_version}"))


@dataclass(frozen=True)
class AlarmContext:
    """What the machine needs to know about the model.

    Attributes:
        model_name: bundle name.
        model_version: bundle version (name@hash), part of alarm ids.
        threshold: raise level.
        reference: median score of normal validation windows (hysteresis and severity).
        channels: channel names, in the order of `WindowScore.channel_errors`.
        channel_reference: per-channel median error on normal validation windows, or None.
    """

    model_name: str
    model_version: str
    threshold: float
    reference: float
    channels: tuple[str, ...]
    channel_reference: NDArray[np.float64] | None = None

    def clear_level(self, hysteresis: float) -> float:
        """The level a score must stay below for the off-delay to count."""
        ref = self.reference if np.isfinite(self.reference) else self.threshold
        return self.threshold - hysteresis * max(self.threshold - ref, 0.0)

    def severity(self, peak: float) -> Severity:
        """Peak distance above normal, in units of (threshold - normal)."""
        span = self.threshold - self.reference
        if not np.isfinite(span) or span <= 0:
            return Severity.MEDIUM
        ratio = (peak - self.reference) / span
        if ratio >= 3.0:
            return Severity.HIGH
        if ratio >= 1.5:
            return Severity.MEDIUM
        return Severity.LOW


@dataclass
class _Active:
    alarm_id: str
    start_ms: int
    raised_ms: int
    last_active_ms: int
    peak: float
    windows_above: int
    contribution: NDArray[np.float64] | None


@dataclass(frozen=True)
class _Seen:
    time_ms: int
    counts: bool  # above the threshold and not gated
    score: float
    excess: NDArray[np.float64] | None


@dataclass
class TurbineAlarm:
    """The alarm machine of ONE turbine."""

    turbine_id: str
    settings: AlarmSettings
    context: AlarmContext
    state: TurbineState = TurbineState.WARMING_UP
    _history: deque[_Seen] = field(init=False)
    _active: _Active | None = field(init=False, default=None)
    _below: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._history = deque(maxlen=self.settings.on_n)

    @property
    def active_alarm_id(self) -> str | None:
        """Id of the raised alarm, if any."""
        return self._active.alarm_id if self._active else None

    def _gated(self, w: WindowScore) -> bool:
        s = self.settings
        warm = (
            s.temperature_gate_c is not None
            and w.ambient_temp is not None
            and w.ambient_temp > s.temperature_gate_c
        )
        calm = (
            s.stopped_power_kw is not None
            and w.power is not None
            and w.wind_speed is not None
            and w.power < s.stopped_power_kw
            and w.wind_speed < s.stopped_wind_ms
        )
        return warm or calm

    def _excess(self, w: WindowScore) -> NDArray[np.float64] | None:
        if w.channel_errors is None:
            return None
        ref = self.context.channel_reference
        excess = w.channel_errors if ref is None else w.channel_errors - ref
        return np.clip(excess, 0.0, None)

    def update(self, w: WindowScore) -> AlarmEvent | None:
        """Feed the next window of this turbine (time order); return a transition or None."""
        above = w.score > self.context.threshold
        if self.state is TurbineState.WARMING_UP:
            self.state = TurbineState.NORMAL
        if self.state is TurbineState.NORMAL:
            return self._update_normal(w, above=above)
        return self._update_raised(w, above=above)

    def _update_normal(self, w: WindowScore, *, above: bool) -> AlarmEvent | None:
        """No active alarm: raise when k of the last n windows count."""
        seen = _Seen(w.time_ms, above and not self._gated(w), w.score, self._excess(w))
        self._history.append(seen)
        if not seen.counts:  # the count did not grow, and it was below on_k before
            return None
        counting = [h for h in self._history if h.counts]
        if len(counting) < self.settings.on_k:
            return None
        contributions = [h.excess for h in counting if h.excess is not None]
        start = counting[0].time_ms
        self._active = _Active(
            alarm_id=alarm_id(self.turbine_id, start, self.context.model_version),
            start_ms=start,
            raised_ms=w.time_ms,
            last_active_ms=w.time_ms,
            peak=max(h.score for h in counting),
            windows_above=len(counting),
            contribution=np.sum(contributions, axis=0) if contributions else None,
        )
        self._history.clear()
        self._below = 0
        self.state = TurbineState.RAISED
        return self._event(AlarmState.RAISED, w.time_ms)

    def _update_raised(self, w: WindowScore, *, above: bool) -> AlarmEvent | None:
        """An active alarm: track it, clear after off_n windows below the clear level."""
        active = self._active
        if active is None:  # pragma: no cover - RAISED always has an active alarm
            self.state = TurbineState.NORMAL
            return None
        if w.score >= self.context.clear_level(self.settings.hysteresis):
            self._below = 0
            active.last_active_ms = w.time_ms
            active.peak = max(active.peak, w.score)
            if above:
                active.windows_above += 1
                excess = self._excess(w)
                if excess is not None:
                    active.contribution = (
                        excess if active.contribution is None else active.contribution + excess
                    )
            return None
        self._below += 1
        if self._below < self.settings.off_n:
            return None
        event = self._event(AlarmState.CLEARED, w.time_ms)
        self._active = None
        self._below = 0
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
            threshold=self.context.threshold,
            model_name=self.context.model_name,
            model_version=self.context.model_version,
            severity=self.context.severity(active.peak),
            top_channels=top_channels(
                active.contribution, self.context.channels, self.settings.top_channels
            ),
            windows_above=active.windows_above,
        )

    def snapshot(self) -> dict[str, Any]:
        """The complete state as a JSON-ready dict (floats survive JSON exactly)."""
        a = self._active
        return {
            "state": self.state.value,
            "below": self._below,
            "history": [
                [h.time_ms, h.counts, h.score, None if h.excess is None else encode_array(h.excess)]
                for h in self._history
            ],
            "active": None
            if a is None
            else {
                "alarm_id": a.alarm_id,
                "start_ms": a.start_ms,
                "raised_ms": a.raised_ms,
                "last_active_ms": a.last_active_ms,
                "peak": a.peak,
                "windows_above": a.windows_above,
                "contribution": None if a.contribution is None else encode_array(a.contribution),
            },
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load a `snapshot()`."""
        self.state = TurbineState(data["state"])
        self._below = int(data["below"])
        self._history.clear()
        for t, counts, score, excess in data["history"]:
            self._history.append(
                _Seen(
                    int(t),
                    bool(counts),
                    float(score),
                    None if excess is None else decode_array(excess),
                )
            )
        a = data["active"]
        self._active = (
            None
            if a is None
            else _Active(
                alarm_id=a["alarm_id"],
                start_ms=int(a["start_ms"]),
                raised_ms=int(a["raised_ms"]),
                last_active_ms=int(a["last_active_ms"]),
                peak=float(a["peak"]),
                windows_above=int(a["windows_above"]),
                contribution=None if a["contribution"] is None else decode_array(a["contribution"]),
            )
        )

    def open_interval(self) -> tuple[int, int] | None:
        """(start, last active time) of the raised alarm, if any (for evaluation)."""
        if self._active is None:
            return None
        return (self._active.start_ms, self._active.last_active_ms)


def top_channels(
    contribution: NDArray[np.float64] | None, channels: tuple[str, ...], k: int
) -> tuple[tuple[str, float], ...]:
    """The k channels with the largest share of the contribution, with their shares."""
    if contribution is None:
        return ()
    total = float(contribution.sum())
    if total <= 0 or not np.isfinite(total):
        return ()
    order = np.argsort(-contribution, kind="stable")[:k]
    return tuple((channels[i], round(float(contribution[i] / total), 4)) for i in order)


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
