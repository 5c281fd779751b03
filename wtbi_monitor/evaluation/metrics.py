"""Window metrics (AUROC, AUPRC) and event metrics (episodes detected, delays, false alarms).

Event metrics run the SAME alarm state machine as the daemon over each turbine's test
windows in time order. An episode is a run of ICING rows of one turbine. It is detected
when an alarm interval overlaps it; its delay is the alarm's raise time minus the
episode's start (negative: raised before the labelled start, during the build-up). An
alarm is false when every reading of its turbine inside the alarm's interval is NORMAL;
alarms touching unlabelled transition zones are counted as neither true nor false.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from wtbi_monitor.alarms import (
    AlarmBook,
    AlarmContext,
    WindowInputs,
    gate_columns,
    window_inputs,
)
from wtbi_monitor.config import AlarmSettings
from wtbi_monitor.data.wtbi import TurbineFrame, runs
from wtbi_monitor.domain import MS_PER_DAY, AlarmState, Label, WindowScore

F64 = NDArray[np.float64]


def window_metrics(
    labels: NDArray[np.int8], scores: F64, threshold: float | None = None
) -> dict[str, Any]:
    """AUROC and AUPRC of icing (1) vs normal (0) windows; rates at the threshold if given."""
    y = (labels == Label.ICING).astype(np.int8)
    out: dict[str, Any] = {
        "windows": int(y.size),
        "icing_windows": int(y.sum()),
        "auroc": None,
        "auprc": None,
    }
    if 0 < y.sum() < y.size:
        out["auroc"] = float(roc_auc_score(y, scores))
        out["auprc"] = float(average_precision_score(y, scores))
    if threshold is not None and y.size:
        flagged = scores > threshold
        out["recall_at_threshold"] = float(flagged[y == 1].mean()) if y.sum() else None
        out["fpr_at_threshold"] = float(flagged[y == 0].mean()) if (y == 0).any() else None
    return out


def roc_points(
    labels: NDArray[np.int8], scores: F64, max_points: int = 400
) -> dict[str, list[float]]:
    """A thinned ROC curve for plots and results.json."""
    y = labels == Label.ICING
    if not (0 < y.sum() < y.size):
        return {"fpr": [], "tpr": []}
    fpr, tpr, _ = roc_curve(y, scores)
    keep = np.unique(np.linspace(0, fpr.size - 1, min(max_points, fpr.size)).astype(int))
    return {"fpr": fpr[keep].round(5).tolist(), "tpr": tpr[keep].round(5).tolist()}


@dataclass
class AlarmInterval:
    """One alarm as seen by the evaluation."""

    turbine_id: str
    alarm_id: str
    start_ms: int
    raised_ms: int
    end_ms: int
    peak_score: float
    top_channels: tuple[tuple[str, float], ...]
    verdict: str = ""  # "true", "false" or "ambiguous"
    evidence: str = "model"
    raises: int = 1  # raised events of this alarm (more than 1: re-armed)


@dataclass
class EventResult:
    """Event metrics of one member on one test period."""

    episodes: int
    detected: int
    delays_min: list[float]
    false_alarms: int
    normal_turbine_days: float
    alarm_ms: int
    alarm_icing_ms: int
    alarms: list[AlarmInterval] = field(default_factory=list)
    episode_detail: list[dict[str, Any]] = field(default_factory=list)

    @property
    def alarms_per_detected_episode(self) -> float | None:
        """Distinct alarms overlapping each detected episode, averaged (1.0: no chatter)."""
        counts = [len(e["alarm_ids"]) for e in self.episode_detail if e.get("detected")]
        return float(np.mean(counts)) if counts else None

    def summary(self) -> dict[str, Any]:
        """The numbers a report shows."""
        days = self.normal_turbine_days
        return {
            "episodes": self.episodes,
            "episodes_detected": self.detected,
            "detected_fraction": self.detected / self.episodes if self.episodes else None,
            "median_delay_min": float(np.median(self.delays_min)) if self.delays_min else None,
            "alarms_per_detected_episode": self.alarms_per_detected_episode,
            "alarms": len(self.alarms),
            "false_alarms": self.false_alarms,
            "false_alarms_per_turbine_day": self.false_alarms / days if days > 0 else None,
            "false_alarms_per_turbine_30d": 30 * self.false_alarms / days if days > 0 else None,
            "alarm_time_icing_fraction": (
                self.alarm_icing_ms / self.alarm_ms if self.alarm_ms > 0 else None
            ),
            "normal_turbine_days": round(days, 3),
        }


def run_alarms(
    turbine_id: str,
    *,
    time_ms: NDArray[np.int64],
    scores: F64,
    channel_errors: F64 | None,
    channel_means: F64 | None,
    settings: AlarmSettings,
    context: AlarmContext,
    rule: NDArray[np.bool_] | None = None,
) -> list[AlarmInterval]:
    """Feed one turbine's time-ordered window scores through the alarm machine.

    One interval per alarm id: a re-armed alarm (raised again within `rearm_s` of its
    clear, with the same id) extends its interval instead of counting twice.
    """
    machine = AlarmBook(settings, context).machine(turbine_id)
    n = time_ms.shape[0]
    gates, flags = gate_columns(context.channels, settings)
    means = channel_means if channel_means is not None else np.zeros((n, len(context.channels)))
    inputs = window_inputs(means, gates, flags, rule)
    if channel_means is None:
        inputs = WindowInputs([None] * n, [None] * n, [None] * n, [False] * n, inputs.rule)
    intervals: dict[str, AlarmInterval] = {}
    times, values = time_ms.tolist(), scores.tolist()
    for i in range(n):
        w = WindowScore(
            turbine_id=turbine_id,
            time_ms=times[i],
            score=values[i],
            threshold=machine.levels.threshold,
            tail_probability=float("nan"),
            channel_errors=None if channel_errors is None else channel_errors[i],
            **inputs.at(i),
        )
        event = machine.update(w)
        if event is None:
            continue
        interval = intervals.get(event.alarm_id)
        if event.state is AlarmState.RAISED:
            if interval is None:
                intervals[event.alarm_id] = AlarmInterval(
                    turbine_id,
                    event.alarm_id,
                    event.start_ms,
                    event.event_time_ms,
                    event.event_time_ms,
                    event.peak_score,
                    event.top_channels,
                    evidence=event.evidence,
                )
            else:
                interval.raises += 1  # re-armed: the same alarm continues
            continue
        if interval is not None:
            interval.end_ms = event.end_ms or event.event_time_ms
            interval.peak_score = event.peak_score
            interval.top_channels = event.top_channels
            interval.evidence = event.evidence
    span = machine.open_interval()
    active = machine.active_alarm_id
    if span is not None and active in intervals:
        # Still raised at the end of the data: close it at its last active window.
        intervals[active].end_ms = span[1]
    return list(intervals.values())


def event_metrics(frames: list[TurbineFrame], alarms: list[AlarmInterval]) -> EventResult:
    """Compare alarms with the ICING runs of the test frames."""
    by_turbine: dict[str, list[AlarmInterval]] = {}
    for interval in alarms:
        by_turbine.setdefault(interval.turbine_id, []).append(interval)
    episodes = detected = false_alarms = 0
    delays: list[float] = []
    normal_days = 0.0
    alarm_ms = alarm_icing_ms = 0
    detail: list[dict[str, Any]] = []
    for frame in frames:
        if len(frame) < 2:
            continue
        t = frame.times_ms
        step = np.diff(t, append=t[-1])
        step = np.minimum(step, np.median(step) * 3)  # gaps do not count as operation time
        normal_days += float(step[frame.labels == Label.NORMAL].sum()) / MS_PER_DAY
        mine = by_turbine.get(frame.turbine_id, [])
        for a, b in runs(frame.labels == Label.ICING):
            start, end = int(t[a]), int(t[b])
            episodes += 1
            hits = [x for x in mine if x.start_ms <= end and x.end_ms >= start]
            record: dict[str, Any] = {
                "turbine_id": frame.turbine_id,
                "start_ms": start,
                "end_ms": end,
                "detected": bool(hits),
            }
            if hits:
                detected += 1
                first = min(hits, key=lambda x: x.raised_ms)
                delay = (first.raised_ms - start) / 60_000
                delays.append(delay)
                record["delay_min"] = round(delay, 2)
                record["alarm_ids"] = [x.alarm_id for x in hits]
            detail.append(record)
        for alarm in mine:
            inside = (t >= alarm.start_ms) & (t <= alarm.end_ms)
            labels = frame.labels[inside]
            duration = float(step[inside].sum())
            alarm_ms += int(duration)
            alarm_icing_ms += int(step[inside][labels == Label.ICING].sum())
            if (labels == Label.ICING).any():
                alarm.verdict = "true"
            elif (labels == Label.UNKNOWN).any():
                alarm.verdict = "ambiguous"
            else:
                alarm.verdict = "false"
                false_alarms += 1
    return EventResult(
        episodes=episodes,
        detected=detected,
        delays_min=delays,
        false_alarms=false_alarms,
        normal_turbine_days=normal_days,
        alarm_ms=alarm_ms,
        alarm_icing_ms=alarm_icing_ms,
        alarms=alarms,
        episode_detail=detail,
    )
