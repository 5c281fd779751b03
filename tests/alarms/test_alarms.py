"""The alarm state machine: on-delay, off-delay with hysteresis, ids, gates, attribution."""

from __future__ import annotations

import numpy as np
import pytest

from wtbi_monitor.alarms import AlarmBook, AlarmContext, TurbineAlarm, TurbineState, alarm_id
from wtbi_monitor.config import AlarmSettings
from wtbi_monitor.domain import AlarmState, Severity, WindowScore

CHANNELS = ("a", "b", "c")
CTX = AlarmContext(
    "m",
    "m@abc",
    threshold=1.0,
    reference=0.0,
    channels=CHANNELS,
    channel_reference=np.array([0.1, 0.1, 0.1]),
)
SETTINGS = AlarmSettings(on_k=3, on_n=5, off_n=4, hysteresis=0.5)


def window(t: int, score: float, errors=None, **kw) -> WindowScore:
    return WindowScore(
        "T1",
        t * 7000,
        score,
        1.0,
        0.5,
        channel_errors=None if errors is None else np.asarray(errors, float),
        **kw,
    )


def feed(machine, scores, errors=None, start=0, **kw):
    events = []
    for i, s in enumerate(scores):
        e = machine.update(window(start + i, s, errors, **kw))
        if e is not None:
            events.append((start + i, e))
    return events


def test_warming_up_until_the_first_window():
    m = TurbineAlarm("T1", SETTINGS, CTX)
    assert m.state is TurbineState.WARMING_UP
    m.update(window(0, 0.1))
    assert m.state is TurbineState.NORMAL


def test_raise_needs_k_of_n_and_starts_at_the_first_window_above():
    m = TurbineAlarm("T1", SETTINGS, CTX)
    # two above in five: nothing
    assert feed(m, [0.2, 1.5, 0.3, 1.2, 0.1]) == []
    # third above within the last five windows raises
    events = feed(m, [1.7], start=5)
    assert len(events) == 1
    _, e = events[0]
    assert e.state is AlarmState.RAISED
    assert e.start_ms == 1 * 7000  # oldest above-threshold window still in the 5-window history
    assert e.event_time_ms == 5 * 7000
    assert e.end_ms is None
    assert e.peak_score == 1.7
    assert e.alarm_id == alarm_id("T1", 1 * 7000, "m@abc")


def test_hysteresis_prevents_flapping_and_off_delay_clears():
    m = TurbineAlarm("T1", SETTINGS, CTX)
    feed(m, [2, 2, 2])
    # hovering around the threshold but above the clear level (0.5): never clears
    hover = [0.9, 1.1, 0.8, 0.6, 1.0, 0.7] * 20
    assert feed(m, hover, start=3) == []
    assert m.state is TurbineState.RAISED
    # three windows below the clear level are not enough (off_n = 4), then a window above
    assert feed(m, [0.4, 0.3, 0.2, 0.9], start=200) == []
    events = feed(m, [0.1, 0.1, 0.1, 0.1], start=300)
    assert len(events) == 1
    t, e = events[0]
    assert e.state is AlarmState.CLEARED
    assert t == 303
    assert e.end_ms == 203 * 7000  # last window at or above the clear level
    assert e.start_ms == 0


def test_noisy_score_at_the_threshold_gives_few_events():
    rng = np.random.default_rng(0)
    m = TurbineAlarm("T1", AlarmSettings(on_k=8, on_n=12, off_n=26, hysteresis=0.5), CTX)
    events = feed(m, list(1.0 + rng.normal(0, 0.15, 5000)))
    assert len(events) <= 2  # one raise, at most one clear over ~10 hours of hovering


def test_ids_are_deterministic_and_depend_on_model_version():
    runs = []
    for version in ("m@abc", "m@abc", "m@def"):
        ctx = AlarmContext("m", version, 1.0, 0.0, CHANNELS)
        m = TurbineAlarm("T1", SETTINGS, ctx)
        runs.append([e.alarm_id for _, e in feed(m, [2, 2, 2, 0, 0, 0, 0, 2, 2, 2])])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert len(set(runs[0])) == 2  # two alarms, each with one id for raise and clear
    assert len(runs[0]) == 3


def test_temperature_gate_suppresses_raising():
    gated = AlarmSettings(on_k=3, on_n=5, off_n=4, temperature_gate_c=3.0)
    m = TurbineAlarm("T1", gated, CTX)
    assert feed(m, [2, 2, 2, 2], ambient_temp=10.0) == []
    assert len(feed(m, [2, 2, 2], start=10, ambient_temp=-2.0)) == 1


def test_stopped_gate_suppresses_raising_at_low_wind_only():
    gated = AlarmSettings(on_k=3, on_n=5, off_n=4, stopped_power_kw=10.0, stopped_wind_ms=3.0)
    m = TurbineAlarm("T1", gated, CTX)
    assert feed(m, [2, 2, 2, 2], power=0.0, wind_speed=1.5) == []
    # stopped although the wind blows: that is what severe icing looks like
    assert len(feed(m, [2, 2, 2], start=10, power=0.0, wind_speed=8.0)) == 1


def test_top_channels_rank_excess_error():
    m = TurbineAlarm("T1", SETTINGS, CTX)
    events = feed(m, [2, 2, 2], errors=[0.1, 0.9, 0.4])
    _, e = events[0]
    names = [n for n, _ in e.top_channels]
    assert names[:2] == ["b", "c"]
    shares = dict(e.top_channels)
    assert shares["b"] == pytest.approx(0.8 / 1.1, abs=1e-3)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)


def test_severity_from_peak_relative_to_threshold():
    assert CTX.severity(1.2) is Severity.LOW
    assert CTX.severity(2.0) is Severity.MEDIUM
    assert CTX.severity(5.0) is Severity.HIGH


def test_book_keeps_turbines_apart():
    book = AlarmBook(SETTINGS, CTX)
    for i in range(3):
        assert book.update(WindowScore("A", i, 2.0, 1.0, 0.0)) is None or i == 2
        book.update(WindowScore("B", i, 0.0, 1.0, 0.0))
    assert book.turbines["A"].state is TurbineState.RAISED
    assert book.turbines["B"].state is TurbineState.NORMAL
