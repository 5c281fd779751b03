"""The alarm state machine: time-unit delays, clearing, re-arm, gates, fusion, attribution."""

from __future__ import annotations

import itertools
import json

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
    gate_columns,
    gates_off,
    gates_open,
    rank_channels,
    rank_many,
    window_inputs,
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
        reference=kw.pop("reference", 0.0),
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


def test_between_the_clear_level_and_the_threshold_a_window_keeps_an_alarm_but_cannot_raise():
    """docs/alarms.md 'Clearing': the clear level (0.5) is below the threshold (1.0).

    Scores of 0.8 never raise; once raised, they keep the alarm alive for 10 minutes, much
    longer than the 4-minute off-delay. Judged at the threshold (no hysteresis) the alarm
    would clear 4 minutes after the last 2.0; judged at the clear level for raising, the
    0.8s would raise at minute 2.
    """
    m = TurbineAlarm("T1", SETTINGS, context(threshold=1.0, clear=0.5))
    scores = [0.8] * 10 + [2.0] * 3 + [0.8] * 10 + [0.5] * 6
    events = [(t, e.state, e.start_ms, e.end_ms) for t, e in feed(m, scores)]
    assert events == [
        (12, AlarmState.RAISED, 10 * 60_000, None),
        # last evidence: the 0.8 at minute 22; 0.5 (AT the clear level) is no evidence
        (26, AlarmState.CLEARED, 10 * 60_000, 22 * 60_000),
    ]
    assert m.state is TurbineState.NORMAL


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


@pytest.mark.parametrize(
    ("peak", "expected"),
    [
        # reference 0.5, threshold 1.0: ratio = (peak - 0.5) / 0.5, exact in binary
        (1.25 - 1e-9, Severity.LOW),
        (1.25, Severity.MEDIUM),  # ratio exactly 1.5: medium (docs: 1.5-3)
        (2.0 - 1e-9, Severity.MEDIUM),
        (2.0, Severity.HIGH),  # ratio exactly 3: high (docs: >= 3)
    ],
)
def test_severity_boundaries_are_inclusive(peak, expected):
    ctx = context(reference=0.5)
    assert ctx.severity(peak, 1.0) is expected


@pytest.mark.parametrize("threshold", [0.5, 0.2, float("nan"), float("inf")])
def test_severity_is_medium_when_the_threshold_is_not_above_the_reference(threshold):
    ctx = context(reference=0.5)
    assert ctx.severity(100.0, threshold) is Severity.MEDIUM
    assert ctx.severity(-100.0, threshold) is Severity.MEDIUM


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


# ---------------------------------------------------------------------- boundaries


def test_a_window_exactly_on_window_s_old_is_out_of_the_look_back():
    """docs/alarms.md 'Raising': the look-back holds windows NEWER than now - on_window_s."""
    m = TurbineAlarm("T1", SETTINGS, context())
    # at minute 5 the window of minute 0 is exactly 300 s old: 2 of 3 needed count, no raise
    assert feed(m, [2.0, 0.1, 2.0, 0.1, 0.1, 2.0]) == []
    events = feed(m, [2.0], start=6)
    assert [(t, e.state, e.start_ms) for t, e in events] == [(6, AlarmState.RAISED, 2 * 60_000)]


def test_one_window_raises_when_the_on_window_is_shorter_than_the_interval():
    """10-minute windows, a 5-minute look-back: at least one window is always needed."""
    m = TurbineAlarm("T1", SETTINGS, context(interval_s=600.0))
    assert m.required == 1
    events = feed(m, [0.1, 2.0, 0.1], step=10.0)
    assert [(t, e.state, e.start_ms) for t, e in events] == [
        (10, AlarmState.RAISED, 600_000),
        (20, AlarmState.CLEARED, 600_000),  # 10 minutes quiet > the 4-minute off-delay
    ]


@pytest.mark.parametrize(("interval_s", "required"), [(0.5, 360), (0.0, 180_000)])
def test_sub_second_and_zero_intervals(interval_s, required):
    """0.6 x 300 s / interval windows; an interval of 0 is taken as 1 ms (no division by 0)."""
    assert TurbineAlarm("T1", SETTINGS, context(interval_s=interval_s)).required == required


@pytest.mark.parametrize(("after_s", "same"), [(1800.0, True), (1800.5, False)])
def test_rearm_includes_a_raise_exactly_rearm_s_after_the_end(after_s, same):
    settings = SETTINGS.model_copy(update={"rearm_s": 1800.0})
    m = TurbineAlarm("T1", settings, context())
    first = feed(m, [2, 2, 2] + [0.1] * 6)
    assert [e.state for _, e in first] == [AlarmState.RAISED, AlarmState.CLEARED]
    assert first[1][1].end_ms == 2 * 60_000
    start = 2 + after_s / 60  # the new raise starts after_s after the end (minute 2)
    again = feed(m, [2, 2, 2], start=start)
    assert len(again) == 1
    _, e = again[0]
    assert (e.alarm_id == first[0][1].alarm_id) is same
    assert e.start_ms == (0 if same else round(start * 60_000))


def test_the_temperature_gate_holds_only_above_its_limit():
    gated = SETTINGS.model_copy(update={"temperature_gate_c": 3.0})
    m = TurbineAlarm("T1", gated, context())
    assert len(feed(m, [2, 2, 2], ambient_temp=3.0)) == 1  # AT the limit: not gated
    assert m.gated == {}
    assert m.last_gate is None


@pytest.mark.parametrize(("power", "wind"), [(20.0, 1.5), (5.0, 3.5)])
def test_the_calm_gate_holds_only_below_both_limits(power, wind):
    """1 % of 2000 kW is 20 kW: power AT 20 kW or wind AT 3.5 m/s is not calm."""
    gated = SETTINGS.model_copy(update={"stopped_power_share": 0.01, "stopped_wind_ms": 3.5})
    m = TurbineAlarm("T1", gated, context(max_power=2000.0))
    assert len(feed(m, [2, 2, 2], power=power, wind_speed=wind)) == 1
    assert m.gated == {}


def _decayed(times_s, above, tau_s):
    """The drift signal's exponentially weighted window count and above-threshold count."""
    weights = np.exp(-(times_s[-1] - np.asarray(times_s)) / tau_s)
    return float(weights.sum()), float((weights * np.asarray(above)).sum())


def test_the_drift_rate_is_the_exponentially_weighted_share_above_the_threshold():
    settings = SETTINGS.model_copy(update={"drift_horizon_s": 3600.0, "drift_factor": 10.0})
    m = TurbineAlarm("T1", settings, context(target_fpr=0.001))
    scores = [2.0, 0.1, 0.1] * 20  # one in three above the threshold, never 3 of 5: no alarm
    first_rate = None
    for i, s in enumerate(scores):
        m.update(window(i, s))
        windows, _ = _decayed(np.arange(i + 1) * 60.0, np.zeros(i + 1), 3600.0)
        # the rate exists once the decayed count reaches half a horizon (30 windows)
        assert (m.drift_rate is not None) == (windows >= 30.0), i
        if first_rate is None and m.drift_rate is not None:
            first_rate = i
    assert first_rate == 41  # 1 - exp(-42 / 60) >= 30 x (1 - exp(-1 / 60))
    windows, above = _decayed(np.arange(60) * 60.0, [s > 1.0 for s in scores], 3600.0)
    assert m.drift_rate == pytest.approx(above / windows, rel=1e-12)
    assert m.state is TurbineState.NORMAL


def test_drifting_means_strictly_above_factor_times_target():
    """Rate exactly 1.0 (every window above, policy 'rule' so none raises) vs 10 x 0.1."""
    settings = SETTINGS.model_copy(
        update={"drift_horizon_s": 600.0, "drift_factor": 10.0, "policy": "rule"}
    )
    m = TurbineAlarm("T1", settings, context(target_fpr=0.1))
    feed(m, [2.0] * 30)
    assert m.state is TurbineState.NORMAL
    assert m.drift_rate == 1.0
    assert not m.drifting
    lower = TurbineAlarm("T1", settings, context(target_fpr=0.099))
    feed(lower, [2.0] * 30)
    assert lower.drifting


def test_restore_gives_back_every_part_of_the_state():
    """Drift, gate counters, the open alarm and the last alarm survive a JSON round trip."""
    settings = SETTINGS.model_copy(
        update={"rearm_s": 1800.0, "drift_horizon_s": 600.0, "temperature_gate_c": 3.0}
    )
    errors = [0.2, 0.5, 0.3]
    first = TurbineAlarm("T1", settings, context())
    feed(first, [0.1, 2.0, 0.1] * 4, errors=errors)  # drift history, no alarm
    feed(first, [2.0] * 2, start=12, ambient_temp=10.0)  # gated
    feed(first, [2, 2, 2] + [0.1] * 6, start=14, errors=errors)  # raised and cleared
    feed(first, [2, 2, 2, 0.7], start=23, errors=errors)  # raised again (re-arm), open
    assert first.state is TurbineState.RAISED
    assert first.gated == {"warm": 2}
    snap = json.loads(json.dumps(first.snapshot()))
    second = TurbineAlarm("T1", settings, context())
    second.restore(snap)
    assert second.snapshot() == first.snapshot()
    assert second.state is first.state
    assert second.active_alarm_id == first.active_alarm_id
    assert second.open_interval() == first.open_interval()
    assert (second.drift_rate, second.drifting) == (first.drift_rate, first.drifting)
    future = [0.1] * 6 + [2, 2, 2] + [0.1] * 6
    assert feed(second, future, start=27, errors=errors) == feed(
        first, future, start=27, errors=errors
    )
    assert second.snapshot() == first.snapshot()


def test_the_drift_rate_exists_from_exactly_half_a_horizon_of_windows():
    """'Once the decayed window count REACHES half a horizon's worth' (docs/alarms.md).

    A horizon so long that nothing decays (exp(-60 s / 1e20 s) is exactly 1.0) and a
    nominal interval that makes half a horizon exactly 5 windows.
    """
    settings = SETTINGS.model_copy(update={"drift_horizon_s": 1e20})
    m = TurbineAlarm("T1", settings, context(interval_s=1e19))
    rates = []
    for i in range(6):
        m.update(window(i, 0.1))
        rates.append(m.drift_rate)
    assert rates == [None, None, None, None, 0.0, 0.0]


def test_a_raised_alarm_counts_and_attributes_only_ungated_windows_above_the_threshold():
    m = TurbineAlarm("T1", SETTINGS.model_copy(update={"policy": "either"}), context())
    # channel reference 0.1: excess errors are the errors minus 0.1, never below 0
    assert [e.state for _, e in feed(m, [2.0] * 3, errors=[0.2, 0.1, 0.1])] == [AlarmState.RAISED]
    m.update(window(3, 2.0, [0.1, 0.5, 0.1]))  # counts: excess (0, 0.4, 0)
    m.update(window(4, 0.8, [0.1, 0.1, 2.0]))  # keeps it alive, below the threshold
    m.update(window(5, 2.5, [0.1, 0.1, 2.0], flagged=True))  # gated: alive, not counted
    m.update(window(6, 0.1, rule=True))  # the rule counts (no channel errors)
    assert m.open_interval() == (0, 6 * 60_000)
    events = feed(m, [0.1] * 4, start=7)
    assert [t for t, _ in events] == [10]  # 4 minutes after minute 6
    e = events[0][1]
    assert e.state is AlarmState.CLEARED
    assert (e.windows_above, e.evidence, e.peak_score) == (5, "model+rule", 2.5)
    assert e.end_ms == 6 * 60_000
    # contributions: 3 x (0.1, 0, 0) + (0, 0.4, 0) = (0.3, 0.4, 0)
    assert e.top_channels == (("b", 0.5714), ("a", 0.4286), ("c", 0.0))
    assert m.open_interval() is None


def test_minimum_duration_is_measured_from_the_alarms_start():
    settings = SETTINGS.model_copy(update={"min_duration_s": 1800.0})
    m = TurbineAlarm("T1", settings, context())
    feed(m, [0.1] * 100)
    events = feed(m, [2, 2, 2] + [0.1] * 30, start=100)
    assert [(t, e.state) for t, e in events] == [
        (102, AlarmState.RAISED),
        (130, AlarmState.CLEARED),  # 30 minutes after the start at minute 100
    ]


def test_a_rearmed_alarm_carries_its_counts_peak_and_evidence_on():
    settings = SETTINGS.model_copy(update={"rearm_s": 1800.0, "policy": "either"})
    m = TurbineAlarm("T1", settings, context())
    first = feed(m, [3.0, 2.0, 2.0] + [0.1] * 6)
    assert (first[1][1].windows_above, first[1][1].evidence) == (3, "model")
    again = feed(m, [0.1] * 3, start=20, rule=True)  # raised by the rule this time
    assert len(again) == 1
    e = again[0][1]
    assert e.alarm_id == first[0][1].alarm_id
    assert (e.windows_above, e.evidence, e.peak_score) == (6, "model+rule", 3.0)


def test_a_restored_look_back_keeps_each_windows_errors():
    """The windows before a raise carry their own errors (one without) through a snapshot."""
    steps = [(2.0, [0.9, 0.1, 0.1]), (2.0, None), (2.0, [0.1, 0.1, 0.5])]
    whole = TurbineAlarm("T1", SETTINGS, context())
    expected = [whole.update(window(i, s, e)) for i, (s, e) in enumerate(steps)]
    assert expected[2].top_channels == (("a", 0.6667), ("c", 0.3333), ("b", 0.0))
    first = TurbineAlarm("T1", SETTINGS, context())
    for i, (s, e) in enumerate(steps[:2]):
        first.update(window(i, s, e))
    second = TurbineAlarm("T1", SETTINGS, context())
    second.restore(json.loads(json.dumps(first.snapshot())))
    assert second.update(window(2, *steps[2])) == expected[2]


def test_rank_channels_names_nothing_without_a_positive_finite_total():
    assert rank_channels(None, CHANNELS, 3) == ()
    assert rank_channels(np.zeros(3), CHANNELS, 3) == ()
    assert rank_channels(np.array([np.nan, 1.0, 0.0]), CHANNELS, 3) == ()
    assert rank_channels(np.array([np.inf, 1.0, 0.0]), CHANNELS, 3) == ()
    # small totals count: shares rounded to 4 decimals, ties in channel order
    assert rank_channels(np.array([0.1, 0.2, 0.0]), CHANNELS, 2) == (("b", 0.6667), ("a", 0.3333))
    assert rank_channels(np.array([0.1, 0.1, 0.1]), CHANNELS, 3) == (
        ("a", 0.3333),
        ("b", 0.3333),
        ("c", 0.3333),
    )


def test_rank_many_for_one_window_small_errors_and_none():
    index, share = rank_many(np.array([[0.1, 0.3, 0.2]]), np.array([0.1, 0.1, 0.1]), 2)
    assert index.tolist() == [[1, 2]]  # excess (0, 0.2, 0.1): a total below 1 counts
    np.testing.assert_allclose(share, [[2 / 3, 1 / 3]])
    index, share = rank_many(np.empty((0, 3)), None, 2)
    assert (index.shape, share.shape) == ((0, 2), (0, 2))


# ---------------------------------------------------------------------- gate inputs

GATE_CHANNELS = ("environment_tmp", "power", "wind_speed", "stop_flag", "other")
GATE_SETTINGS = AlarmSettings(
    temperature_gate_c=3.0,
    stopped_power_share=0.01,
    stopped_wind_ms=3.5,
    flag_channels=("absent_flag", "stop_flag"),
)


def _gate_grid() -> np.ndarray:
    """Window means below, AT and above every limit: 3 C, 20 kW (1 % of 2000), 3.5 m/s, 0.5."""
    levels = ([2.0, 3.0, 4.0], [5.0, 20.0, 30.0], [1.0, 3.5, 8.0], [0.0, 0.5, 1.0], [7.0])
    return np.array(list(itertools.product(*levels)))


def test_gate_columns_and_window_inputs():
    gate_index, flag_index = gate_columns(GATE_CHANNELS, GATE_SETTINGS)
    assert (gate_index, flag_index) == ((0, 1, 2), [3])
    assert gate_columns(("other",), GATE_SETTINGS) == ((None, None, None), [])
    means = _gate_grid()
    inputs = window_inputs(means, gate_index, flag_index, np.arange(len(means)) % 2 == 0)
    assert inputs.temperature == means[:, 0].tolist()
    assert inputs.power == means[:, 1].tolist()
    assert inputs.wind == means[:, 2].tolist()
    assert inputs.flagged == (means[:, 3] > 0.5).tolist()  # 0.5 itself is not set
    assert inputs.rule == [i % 2 == 0 for i in range(len(means))]
    assert inputs.at(4) == {
        "ambient_temp": 2.0,
        "power": 5.0,
        "wind_speed": 3.5,
        "rule": True,
        "flagged": False,
    }
    off = window_inputs(means, (None, None, None), [], None)
    n = len(means)
    assert (off.temperature, off.power, off.wind) == ([None] * n, [None] * n, [None] * n)
    assert (off.flagged, off.rule) == ([False] * n, [False] * n)


def test_gates_open_is_the_vectorised_gate_of_the_machine():
    means = _gate_grid()
    open_ = gates_open(means, GATE_CHANNELS, GATE_SETTINGS, max_power=2000.0)
    # by hand: open when not warm (<= 3 C), not calm (power < 20 and wind < 3.5), no flag
    manual = [t <= 3.0 and not (p < 20.0 and w < 3.5) and f <= 0.5 for t, p, w, f, _ in means]
    assert open_.tolist() == manual
    assert 0 < sum(manual) < len(manual)
    gate_index, flag_index = gate_columns(GATE_CHANNELS, GATE_SETTINGS)
    inputs = window_inputs(means, gate_index, flag_index, None)
    m = TurbineAlarm("T1", GATE_SETTINGS, context(max_power=2000.0))
    machine = [
        m._gate(WindowScore("T1", 0, 0.0, 1.0, 0.5, **inputs.at(i))) is None
        for i in range(len(means))
    ]
    assert machine == manual


@pytest.mark.parametrize(
    ("update", "channels", "max_power", "closed_by"),
    [
        ({}, GATE_CHANNELS, 2000.0, {"warm", "calm", "flag"}),
        ({"temperature_gate_c": None}, GATE_CHANNELS, 2000.0, {"calm", "flag"}),
        ({}, GATE_CHANNELS[1:], 2000.0, {"calm", "flag"}),  # no temperature channel
        ({"stopped_power_share": None}, GATE_CHANNELS, 2000.0, {"warm", "flag"}),
        ({}, GATE_CHANNELS, None, {"warm", "flag"}),  # no training power known
        ({}, ("environment_tmp", "power", "stop_flag"), 2000.0, {"warm", "flag"}),  # no wind
        ({}, ("environment_tmp", "wind_speed", "stop_flag"), 2000.0, {"warm", "flag"}),
        ({"flag_channels": ()}, GATE_CHANNELS, 2000.0, {"warm", "calm"}),
    ],
)
def test_a_gate_without_its_setting_or_channels_is_off(update, channels, max_power, closed_by):
    settings = GATE_SETTINGS.model_copy(update=update)
    names = ("environment_tmp", "power", "wind_speed", "stop_flag")
    warm, calm, flag = [30.0, 500.0, 8.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 500.0, 8.0, 1.0]
    rows = {"warm": warm, "calm": calm, "flag": flag}
    means = np.array(
        [[row[names.index(c)] if c in names else 0.0 for c in channels] for row in rows.values()]
    )
    open_ = gates_open(means, channels, settings, max_power)
    assert {g for g, o in zip(rows, open_, strict=True) if not o} == closed_by


def test_gates_off_names_the_missing_channels_of_configured_gates():
    assert gates_off(GATE_CHANNELS, GATE_SETTINGS) == {}
    assert gates_off(("power", "other"), GATE_SETTINGS) == {
        "temperature": ["environment_tmp"],
        "stopped": ["wind_speed"],
    }
    assert gates_off(("other",), GATE_SETTINGS) == {
        "temperature": ["environment_tmp"],
        "stopped": ["power", "wind_speed"],
    }
    off = GATE_SETTINGS.model_copy(update={"temperature_gate_c": None, "stopped_power_share": None})
    assert gates_off(("other",), off) == {}  # gates switched off, flags optional


def test_an_alarm_context_defaults_to_7_s_windows_and_the_fleet_levels():
    """The WTBI sampling interval, the training default target (0.1 %), clear = threshold."""
    ctx = AlarmContext("m", "m@abc", threshold=2.0, reference=0.0, channels=CHANNELS)
    assert (ctx.interval_s, ctx.target_fpr, ctx.max_power) == (7.0, 0.001, None)
    assert ctx.levels("any") == Levels(2.0, 2.0)
    # 7 s windows: 0.6 x 300 s / 7 s -> 26 windows needed
    assert TurbineAlarm("T1", SETTINGS, ctx).required == 26
