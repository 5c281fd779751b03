"""The alarm state machine: time-unit delays, clearing, re-arm, gates, fusion, attribution."""

from __future__ import annotations

import numpy as np
import pytest

from wtbi_monitor.alarms import (
    AlarmBook,
    AlarmContext,
    Levels,
    TurbineAlarm,
    TurbineState,
    alarm_id,
    clear_level_of,
    rank_channels,
    rank_many,
)
from wtbi_monitor.config import AlarmSettings
from wtbi_monitor.domain import AlarmState, Severity, WindowScore

CHANNELS = ("a", "b", "c")
STEP_S = 60.0  # one window a minute in most tests: times below are in minutes


def context(
    threshold: float = 1.0, clear: float = 0.5, interval_s: float = STEP_S, **kw
) -> AlarmContext:
    return AlarmContext(
        "m",
        kw.pop("version", "m@abc"),
        threshold=threshold,
        reference=0.0,
        channels=CHANNELS,
        channel_reference=np.array([0.1, 0.1, 0.1]),
        clear_level=clear,
        interval_s=interval_s,
        **kw,
    )


#: raise when 3 of the 5 windows of the last 5 minutes count; clear after 4 minutes
#: without evidence; no minimum duration, no re-arm, no gates (unless a test sets them)
SETTINGS = AlarmSettings(
    on_window_s=300.0,
    on_fraction=0.6,
    off_delay_s=240.0,
    min_duration_s=0.0,
    rearm_s=0.0,
    temperature_gate_c=None,
    stopped_power_share=None,
)


def window(minute: float, score: float, errors=None, **kw) -> WindowScore:
    return WindowScore(
        "T1",
        round(minute * STEP_S * 1000),
        score,
        1.0,
        0.5,
        channel_errors=None if errors is None else np.asarray(errors, float),
        **kw,
    )


def feed(machine, scores, errors=None, start=0, step=1.0, **kw):
    events = []
    for i, s in enumerate(scores):
        e = machine.update(window(start + i * step, s, errors, **kw))
        if e is not None:
            events.append((start + i * step, e))
    return events


def test_warming_up_until_the_first_window():
    m = TurbineAlarm("T1", SETTINGS, context())
    assert m.state is TurbineState.WARMING_UP
    m.update(window(0, 0.1))
    assert m.state is TurbineState.NORMAL


def test_raise_needs_the_share_of_the_on_window_and_starts_at_its_first_counting_window():
    m = TurbineAlarm("T1", SETTINGS, context())
    # two above in five minutes: nothing
    assert feed(m, [0.2, 1.5, 0.3, 1.2, 0.1]) == []
    # a third above within the last five minutes raises
    events = feed(m, [1.7], start=5)
    assert len(events) == 1
    _, e = events[0]
    assert e.state is AlarmState.RAISED
    assert e.start_ms == 1 * 60_000  # oldest counting window still in the 5-minute look-back
    assert e.event_time_ms == 5 * 60_000
    assert e.end_ms is None
    assert e.peak_score == 1.7
    assert e.alarm_id == alarm_id("T1", 1 * 60_000, "m@abc")
    assert e.evidence == "model"


def test_a_score_exactly_at_the_threshold_does_not_count():
    m = TurbineAlarm("T1", SETTINGS, context())
    assert feed(m, [1.0] * 10) == []
    assert len(feed(m, [1.0 + 1e-9] * 3, start=10)) == 1


def test_hysteresis_prevents_flapping_and_the_off_delay_clears():
    m = TurbineAlarm("T1", SETTINGS, context(clear=0.5))
    feed(m, [2, 2, 2])
    # hovering around the threshold but above the clear level (0.5): never clears
    hover = [0.9, 1.1, 0.8, 0.6, 1.0, 0.7] * 20
    assert feed(m, hover, start=3) == []
    assert m.state is TurbineState.RAISED
    # a dip of 3 minutes (shorter than the 4-minute off-delay) does not clear it
    assert feed(m, [0.4, 0.3, 0.2, 0.9], start=123) == []
    events = feed(m, [0.1, 0.1, 0.1, 0.1, 0.1], start=127)
    assert len(events) == 1
    t, e = events[0]
    assert e.state is AlarmState.CLEARED
    assert t == 130  # 4 minutes after the last window with evidence (minute 126)
    assert e.end_ms == 126 * 60_000  # last window above the clear level
    assert e.start_ms == 0


def test_a_score_exactly_at_the_clear_level_clears():
    """A bounded score whose floor IS the clear level must still clear (>= would not)."""
    m = TurbineAlarm("T1", SETTINGS, context(threshold=0.0, clear=0.0))
    assert len(feed(m, [0.5, 0.5, 0.5])) == 1
    events = feed(m, [0.0] * 6, start=3)
    assert [e.state for _, e in events] == [AlarmState.CLEARED]


def test_the_off_delay_is_measured_in_time_not_in_windows():
    m = TurbineAlarm("T1", SETTINGS, context())
    feed(m, [2, 2, 2])
    # sparse windows (one every 3 minutes): two quiet windows already span 6 > 4 minutes
    events = feed(m, [0.1, 0.1], start=5, step=3.0)
    assert [e.state for _, e in events] == [AlarmState.CLEARED]


def test_minimum_duration_keeps_a_short_alarm_raised():
    settings = SETTINGS.model_copy(update={"min_duration_s": 1800.0})
    m = TurbineAlarm("T1", settings, context())
    feed(m, [2, 2, 2])
    assert feed(m, [0.1] * 20, start=3) == []  # quiet for 20 minutes, but younger than 30
    events = feed(m, [0.1] * 10, start=23)
    assert [(t, e.state) for t, e in events] == [(30, AlarmState.CLEARED)]


def test_a_raise_within_the_rearm_time_continues_the_same_alarm():
    settings = SETTINGS.model_copy(update={"rearm_s": 1800.0})
    m = TurbineAlarm("T1", settings, context())
    first = feed(m, [2, 2, 2] + [0.1] * 6)
    assert [e.state for _, e in first] == [AlarmState.RAISED, AlarmState.CLEARED]
    again = feed(m, [2, 2, 2], start=20)  # 18 minutes after the clear
    assert len(again) == 1
    _, e = again[0]
    assert e.state is AlarmState.RAISED
    assert e.alarm_id == first[0][1].alarm_id  # the same alarm, the same start
    assert e.start_ms == 0
    # after the re-arm time a new raise is a new alarm
    feed(m, [0.1] * 6, start=23)
    late = feed(m, [2, 2, 2], start=80)
    assert late[0][1].alarm_id != e.alarm_id
    assert late[0][1].start_ms == 80 * 60_000


def test_the_same_settings_give_one_alarm_per_episode_at_7_s_and_at_10_minutes():
    """A 3-hour episode with a 20-minute dip in the middle, sampled at 7 s and at 10 min."""
    settings = AlarmSettings(temperature_gate_c=None, stopped_power_share=None)
    for interval in (7.0, 600.0):
        ctx = context(interval_s=interval)
        m = TurbineAlarm("T1", settings, ctx)
        times = np.arange(0, 12 * 3600, interval)
        icing = (times >= 3 * 3600) & (times < 6 * 3600)
        dip = (times >= 4.5 * 3600) & (times < 4.5 * 3600 + 1200)
        scores = np.where(icing & ~dip, 3.0, 0.1)
        events = []
        for t, s in zip(times, scores, strict=True):
            e = m.update(WindowScore("T1", round(t * 1000), float(s), 1.0, 0.5))
            if e is not None:
                events.append(e)
        assert [e.state for e in events] == [AlarmState.RAISED, AlarmState.CLEARED], interval
        raised, cleared = events
        assert raised.start_ms == round(times[icing][0] * 1000)
        # raised once half of the 30-minute look-back counts: 15 minutes in at 7 s, at the
        # second row (10 minutes) of 10-minute data
        assert 10 * 60 <= (raised.event_time_ms - raised.start_ms) / 1000 <= 16 * 60
        assert abs(cleared.end_ms - (6 * 3600 - interval) * 1000) <= interval * 1000
        # cleared an hour (the off-delay) after the last iced window
        assert (cleared.event_time_ms - cleared.end_ms) / 1000 == pytest.approx(3600, abs=interval)


@pytest.mark.parametrize(
    ("scores", "expect"),
    [
        ([0.0] * 10, 0),  # a constant detector never raises (nothing is above its threshold)
        ([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0] + [0.0] * 6, 4),  # two-valued
    ],
)
def test_every_alarm_can_clear_for_discrete_scores(scores, expect):
    # a two-valued detector calibrated at its floor: threshold 0, clear level 0
    sorted_normal = np.zeros(1000)
    clear = clear_level_of(sorted_normal, 0.0, 0.05)
    assert clear == 0.0
    m = TurbineAlarm("T1", SETTINGS, context(threshold=0.0, clear=clear))
    events = feed(m, scores)
    assert len(events) == expect
    assert m.state is TurbineState.NORMAL


def test_the_clear_level_is_never_above_the_threshold():
    normal = np.sort(np.random.default_rng(0).normal(size=1000))
    assert clear_level_of(normal, 3.0, 0.05) == pytest.approx(np.quantile(normal, 0.95))
    assert clear_level_of(normal, 1.0, 0.05) == 1.0  # capped
    assert clear_level_of(np.empty(0), 2.0, 0.05) == 2.0


def test_ids_are_deterministic_and_depend_on_model_version():
    runs = []
    for version in ("m@abc", "m@abc", "m@def"):
        m = TurbineAlarm("T1", SETTINGS, context(version=version))
        runs.append([e.alarm_id for _, e in feed(m, [2, 2, 2] + [0] * 5 + [2, 2, 2])])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert len(set(runs[0])) == 2  # two alarms, each with one id for raise and clear
    assert len(runs[0]) == 3


def test_temperature_gate_suppresses_raising_and_counts():
    gated = SETTINGS.model_copy(update={"temperature_gate_c": 3.0})
    m = TurbineAlarm("T1", gated, context())
    assert feed(m, [2, 2, 2, 2], ambient_temp=10.0) == []
    assert m.gated == {"warm": 4}
    assert len(feed(m, [2, 2, 2], start=10, ambient_temp=-2.0)) == 1


def test_stopped_gate_suppresses_raising_at_low_wind_only():
    gated = SETTINGS.model_copy(update={"stopped_power_share": 0.01, "stopped_wind_ms": 3.5})
    m = TurbineAlarm("T1", gated, context(max_power=2000.0))
    assert feed(m, [2, 2, 2, 2], power=5.0, wind_speed=1.5) == []
    assert m.gated == {"calm": 4}
    # stopped although the wind blows: that is what severe icing looks like
    assert len(feed(m, [2, 2, 2], start=10, power=5.0, wind_speed=8.0)) == 1


def test_flag_gate_suppresses_raising():
    m = TurbineAlarm("T1", SETTINGS, context())
    assert feed(m, [2, 2, 2, 2], flagged=True) == []
    assert m.gated == {"flag": 4}


@pytest.mark.parametrize(
    ("policy", "model", "rule", "raises", "evidence"),
    [
        ("model", 2.0, False, True, "model"),
        ("model", 0.1, True, False, None),
        ("rule", 0.1, True, True, "rule"),
        ("rule", 2.0, False, False, None),
        ("either", 0.1, True, True, "rule"),
        ("either", 2.0, True, True, "model+rule"),
        ("both", 2.0, False, False, None),
        ("both", 2.0, True, True, "model+rule"),
    ],
)
def test_fusion_policy_and_evidence(policy, model, rule, raises, evidence):
    settings = SETTINGS.model_copy(update={"policy": policy})
    m = TurbineAlarm("T1", settings, context())
    events = feed(m, [model] * 3, rule=rule)
    assert bool(events) == raises
    if raises:
        assert events[0][1].evidence == evidence


def test_a_rule_raised_alarm_clears_when_the_rule_condition_ends():
    settings = SETTINGS.model_copy(update={"policy": "rule"})
    m = TurbineAlarm("T1", settings, context())
    feed(m, [0.1] * 3, rule=True)
    events = feed(m, [0.1] * 5, start=3, rule=False)
    assert [e.state for _, e in events] == [AlarmState.CLEARED]


def test_top_channels_rank_excess_error():
    m = TurbineAlarm("T1", SETTINGS, context())
    events = feed(m, [2, 2, 2], errors=[0.1, 0.9, 0.4])
    _, e = events[0]
    names = [n for n, _ in e.top_channels]
    assert names[:2] == ["b", "c"]
    shares = dict(e.top_channels)
    assert shares["b"] == pytest.approx(0.8 / 1.1, abs=1e-3)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)


def test_one_ranking_for_one_window_and_for_many():
    reference = np.array([0.1, 0.1, 0.1, 0.1])
    errors = np.array([[0.1, 0.9, 0.4, 0.2], [0.05, 0.05, 0.05, 0.05]])
    index, share = rank_many(errors, reference, 3)
    single = rank_channels(np.clip(errors[0] - reference, 0, None), ("a", "b", "c", "d"), 3)
    assert [("a", "b", "c", "d")[i] for i in index[0]] == [n for n, _ in single]
    np.testing.assert_allclose(share[0], [s for _, s in single], atol=1e-4)
    assert (index[1] == -1).all()  # no excess: no channels named
    assert (share[1] == 0).all()


def test_severity_from_peak_relative_to_threshold():
    ctx = context()
    assert ctx.severity(1.2, 1.0) is Severity.LOW
    assert ctx.severity(2.0, 1.0) is Severity.MEDIUM
    assert ctx.severity(5.0, 1.0) is Severity.HIGH


def test_each_turbine_uses_its_own_levels():
    ctx = context(per_turbine={"A": Levels(3.0, 1.0)})
    book = AlarmBook(SETTINGS, ctx)
    for i in range(3):
        book.update(WindowScore("A", i * 60_000, 2.0, 1.0, 0.0))
        book.update(WindowScore("B", i * 60_000, 2.0, 1.0, 0.0))
    assert book.turbines["A"].state is TurbineState.NORMAL  # 2.0 is below A's own 3.0
    assert book.turbines["B"].state is TurbineState.RAISED  # the fleet's 1.0


def test_snapshot_mid_alarm_restores_the_same_future():
    settings = SETTINGS.model_copy(update={"rearm_s": 1800.0})
    scores = [2, 2, 2, 0.7, 0.2, 0.1, 0.1, 0.1, 0.1, 2, 2, 2, 0.1, 0.1, 0.1, 0.1, 0.1]
    errors = [0.2, 0.5, 0.3]
    whole = TurbineAlarm("T1", settings, context())
    expected = feed(whole, scores, errors=errors)
    for cut in range(1, len(scores)):
        first = TurbineAlarm("T1", settings, context())
        head = feed(first, scores[:cut], errors=errors)
        second = TurbineAlarm("T1", settings, context())
        second.restore(first.snapshot())
        tail = feed(second, scores[cut:], errors=errors, start=cut)
        assert head + tail == expected, cut


def test_drift_flag_when_a_turbine_exceeds_its_threshold_far_too_often():
    settings = SETTINGS.model_copy(update={"drift_horizon_s": 3600.0, "drift_factor": 10.0})
    m = TurbineAlarm("T1", settings, context(target_fpr=0.001))
    assert m.drift_rate is None  # not enough windows yet
    # alternate above/below: never 3 of 5 above, so no alarm, but 50 % above the threshold
    feed(m, [2.0, 0.1, 0.1] * 20)
    assert m.state is TurbineState.NORMAL
    assert m.drift_rate == pytest.approx(1 / 3, abs=0.05)
    assert m.drifting
    calm = TurbineAlarm("T1", settings, context(target_fpr=0.001))
    feed(calm, [0.1] * 60)
    assert calm.drift_rate == 0.0
    assert not calm.drifting
