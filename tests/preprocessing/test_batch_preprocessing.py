"""Segments, smoothing, windows and scaling on hand-checked inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wtbi_monitor.errors import ConfigurationError, DataFormatError, RecordError
from wtbi_monitor.preprocessing import (
    DerivedChannels,
    MinMaxScaler,
    StreamState,
    centred_moving_average,
    check_strictly_increasing,
    concat_series,
    segment_starts,
    window_series,
)
from wtbi_monitor.preprocessing.stream import decode_array, encode_array


def test_moving_average_is_centred_and_has_no_partial_edges():
    raw = np.arange(15, dtype=np.float64).reshape(-1, 1)  # 0..14
    out = centred_moving_average(raw, 11)
    assert out.shape == (5, 1)
    # row j is the mean of rows j..j+10, i.e. the smoothed value of centre row j+5
    np.testing.assert_allclose(out[:, 0], [5, 6, 7, 8, 9])
    assert centred_moving_average(raw[:10], 11).shape == (0, 1)


def test_segments_start_at_gaps_and_group_changes():
    times = np.array([0, 7, 14, 50, 57, 64, 71], dtype=np.int64) * 1000
    groups = np.array([1, 1, 1, 1, 1, 2, 2])
    starts = segment_starts(times, groups, max_gap_ms=21_000)
    assert starts.tolist() == [True, False, False, True, False, True, False]


def test_a_step_equal_to_the_max_gap_keeps_the_segment_one_above_splits_it():
    """docs/data-format.md: a segment starts where the time step EXCEEDS the gap limit."""
    times = np.array([0, 21_000, 42_001, 63_001, 84_002], dtype=np.int64)
    starts = segment_starts(times, None, max_gap_ms=21_000)
    assert starts.tolist() == [True, False, True, False, True]


@pytest.mark.parametrize("batched", [False, True])
def test_stream_splits_segments_only_above_the_max_gap(batched):
    """The streaming path applies the same rule, against the previous batch and within one."""
    state = StreamState(n_channels=1, smoothing_length=1, window_length=2, max_gap_ms=21_000)
    times = np.array([0, 21_000, 42_001, 63_001, 84_002], dtype=np.int64)
    values = np.arange(5, dtype=np.float64).reshape(-1, 1)
    if batched:
        out = state.push_many(times, values)
        emitted = out.time_ms.tolist()
    else:
        emitted = [w.time_ms for t, v in zip(times, values, strict=True) if (w := state.push(t, v))]
    # windows of 2 readings: (0, 21000) and (42001, 63001); 84002 starts a third segment
    assert emitted == [21_000, 63_001]
    assert state.segments_started == 3
    assert state.warming_up
    expected = window_series(
        times, values, None, smoothing_length=1, window_length=2, max_gap_ms=21_000
    )
    assert expected.time_ms.tolist() == emitted


def test_non_increasing_time_is_a_clear_error():
    times = np.array([0, 7000, 7000, 14000], dtype=np.int64)
    with pytest.raises(DataFormatError, match="duplicate timestamp at row 2"):
        window_series(
            times, np.zeros((4, 2)), None, smoothing_length=1, window_length=2, max_gap_ms=10**6
        )


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ([7000, 7000], "f.csv: duplicate timestamp at row 1 (7000 ms then 7000 ms)"),
        ([0, 7000, 3000], "f.csv: decreasing timestamp at row 2 (7000 ms then 3000 ms)"),
    ],
)
def test_the_time_order_error_names_the_row_and_both_times(times, message):
    with pytest.raises(DataFormatError) as err:
        check_strictly_increasing(np.array(times, dtype=np.int64), "f.csv")
    assert str(err.value) == f"{message}; times must be strictly increasing per turbine"
    check_strictly_increasing(np.array([5], dtype=np.int64))  # one reading: nothing to check


def test_windows_never_span_a_gap_and_carry_the_newest_time():
    s, ln = 11, 26
    seg = s + ln - 1 + 4  # 40 readings: exactly 5 windows per segment
    times = np.concatenate([np.arange(seg) * 7000, 10**9 + np.arange(seg) * 7000]).astype(np.int64)
    values = np.random.default_rng(0).normal(size=(2 * seg, 3))
    ws = window_series(times, values, None, smoothing_length=s, window_length=ln, max_gap_ms=21000)
    assert len(ws) == 10
    assert np.all(ws.last_raw_row - ws.first_raw_row == s + ln - 2)
    # no window mixes rows of the two segments
    assert np.all((ws.last_raw_row < seg) | (ws.first_raw_row >= seg))
    # timestamp = time of the newest smoothed value = raw row (last - s//2)
    np.testing.assert_array_equal(ws.time_ms, times[ws.last_raw_row - s // 2])
    # the first window is the mean of the first 11 rows ... in its first row
    np.testing.assert_allclose(ws.windows()[0, 0], values[:11].mean(axis=0))


def test_first_window_needs_smoothing_plus_window_minus_one_readings():
    state = StreamState(n_channels=2, smoothing_length=11, window_length=26, max_gap_ms=21000)
    emitted = [state.push(i * 7000, np.ones(2)) for i in range(40)]
    first = next(i for i, w in enumerate(emitted) if w is not None)
    assert first == 11 + 26 - 2  # the 36th reading (index 35) completes the first window
    assert all(w is not None for w in emitted[first:])


def test_stream_rejects_duplicate_and_out_of_order_times_without_consuming():
    state = StreamState(n_channels=1, smoothing_length=3, window_length=2, max_gap_ms=21000)
    state.push(7000, np.ones(1))
    with pytest.raises(RecordError) as dup:
        state.push(7000, np.ones(1))
    assert dup.value.reason == "duplicate_time"
    with pytest.raises(RecordError) as old:
        state.push(1000, np.ones(1))
    assert old.value.reason == "out_of_order"
    assert state.last_time_ms == 7000
    assert state.buffered_readings == 1


def test_scaler_keeps_out_of_range_values_within_its_margin_and_counts_them():
    scaler = MinMaxScaler.fit(np.array([[0.0, 5.0], [10.0, 5.0]]))  # margin 1: [-1, 2]
    scaled, outside = scaler.transform(np.array([[5.0, 5.0], [20.0, 4.0], [45.0, 50.0]]))
    assert scaled.dtype == np.float32
    # 20 -> 2.0 is kept (the paper's clip would pin it at 1); the constant channel maps
    # 4 -> -1; 45 -> 4.5 and 50 -> 45 are clipped at the margin
    np.testing.assert_allclose(scaled, [[0.5, 0.0], [2.0, -1.0], [2.0, 2.0]])
    assert outside == 4  # every value outside the training range is counted
    paper = MinMaxScaler.fit(np.array([[0.0, 5.0], [10.0, 5.0]]), margin=0.0)
    np.testing.assert_allclose(paper.transform(np.array([[20.0, 4.0]]))[0], [[1.0, 0.0]])
    assert MinMaxScaler.from_json({"minimum": [0.0], "maximum": [1.0]}).margin == 0.0
    again = MinMaxScaler.from_json(scaler.to_json())
    np.testing.assert_array_equal(again.minimum, scaler.minimum)
    assert again.margin == scaler.margin == 1.0


def test_power_residual_uses_each_turbines_curve_and_the_farm_curve_for_others():
    from wtbi_monitor.preprocessing.derived import PowerCurveReference

    rng = np.random.default_rng(1)
    wind = rng.uniform(3, 15, 20_000)
    # turbine B produces 10 % more than A at every wind speed
    series = [
        ("A", wind, 100.0 * wind),
        ("B", wind, 110.0 * wind),
    ]
    curve = PowerCurveReference.fit(series)
    at_8 = np.array([8.0])
    assert curve.expected("A", at_8)[0] == pytest.approx(800.0, rel=0.01)
    assert curve.expected("B", at_8)[0] == pytest.approx(880.0, rel=0.01)
    assert 800.0 < curve.expected("unknown", at_8)[0] < 880.0  # the pooled farm curve
    again = PowerCurveReference.from_json(curve.to_json())
    np.testing.assert_allclose(again.expected("B", wind[:50]), curve.expected("B", wind[:50]))
    derived = DerivedChannels.fit(
        ("power_residual",), ("wind_speed", "power"), [("A", np.column_stack([wind, 100 * wind]))]
    )
    iced = derived.apply("A", np.array([[8.0, 400.0], [8.0, 800.0]]))
    assert iced.shape == (2, 3)
    assert iced[0, 2] == pytest.approx(-400.0, rel=0.02)  # a deficit is negative
    assert abs(iced[1, 2]) < 10.0


def test_derived_channels_need_their_sources():
    with pytest.raises(ConfigurationError, match="power_residual needs power"):
        DerivedChannels.fit(("power_residual",), ("wind_speed", "pitch1_angle"), [])


def test_series_of_several_turbines_concatenate_with_shifted_indices():
    times = np.arange(6, dtype=np.int64) * 7000
    va = np.arange(12.0).reshape(6, 2)
    kw = {"smoothing_length": 3, "window_length": 2, "max_gap_ms": 21_000}
    a = window_series(times, va, None, **kw)
    b = window_series(times, va + 100.0, None, turbine_index=1, row_offset=6, **kw)
    # 6 readings: 4 smoothed values (centre rows 1..4), 3 windows per turbine
    both = concat_series([a, b])
    assert (len(both), both.n_channels) == (6, 2)
    assert both.window_turbine.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(both.windows(), np.concatenate([a.windows(), b.windows()]))
    assert both.newest_row.tolist() == [2, 3, 4, 8, 9, 10]
    assert both.first_raw_row.tolist() == [0, 1, 2, 6, 7, 8]
    assert both.last_raw_row.tolist() == [3, 4, 5, 9, 10, 11]
    assert both.time_ms.tolist() == [14_000, 21_000, 28_000] * 2
    np.testing.assert_allclose(b.windows()[0], [[102.0, 103.0], [104.0, 105.0]])
    picked = both.select(np.array([1, 4]))
    np.testing.assert_array_equal(picked.windows(), both.windows()[[1, 4]])
    assert picked.window_turbine.tolist() == [0, 1]
    assert picked.time_ms.tolist() == [21_000, 21_000]
    np.testing.assert_array_equal(both.windows(slice(3, 5)), b.windows()[:2])
    one = concat_series([b])
    np.testing.assert_array_equal(one.windows(), b.windows())
    assert one.newest_row.tolist() == b.newest_row.tolist() == [8, 9, 10]
    assert (one.window_length, one.smoothing_length) == (2, 3)
    # a third, shorter series: 5 readings, 3 smoothed values, 2 windows
    c = window_series(times[:5], va[:5] + 200.0, None, turbine_index=2, row_offset=12, **kw)
    three = concat_series([a, b, c])
    assert three.starts.tolist() == [0, 1, 2, 4, 5, 6, 8, 9]
    np.testing.assert_array_equal(three.windows()[6:], c.windows())
    assert three.newest_row.tolist()[6:] == [14, 15]
    assert three.window_turbine.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="at least one series"):
        concat_series([])


def test_segments_too_short_for_a_window_or_a_smoothed_value():
    kw = {"smoothing_length": 3, "window_length": 2, "max_gap_ms": 21_000}
    # segments of 2 readings (no smoothed value), 3 (one, no window) and 4 (one window)
    times = np.array([0, 7, 100, 107, 114, 200, 207, 214, 221], dtype=np.int64) * 1000
    ws = window_series(times, np.arange(9.0).reshape(-1, 1), None, **kw)
    assert ws.smoothed[:, 0].tolist() == [3.0, 6.0, 7.0]
    assert ws.smoothed_time_ms.tolist() == [107_000, 207_000, 214_000]
    assert ws.time_ms.tolist() == [214_000]
    np.testing.assert_array_equal(ws.windows(), [[[6.0], [7.0]]])
    empty = window_series(times[:2], np.zeros((2, 1)), None, **kw)
    assert (len(empty), empty.smoothed.shape, empty.time_ms.shape) == (0, (0, 1), (0,))
    assert (empty.smoothed_time_ms.shape, empty.centre_row.shape) == ((0,), (0,))


def _pushed(state: StreamState, times, groups=None):
    t = np.asarray(times, float)
    values = np.column_stack([t / 1000.0, np.sin(t), np.cos(t)])  # 3 channels
    g = None if groups is None else np.asarray(groups, dtype=np.int64)
    return state.push_many(np.asarray(times, dtype=np.int64), values, g)


def test_a_stream_state_survives_a_json_snapshot_exactly():
    times = np.arange(0, 9) * 7000
    state = StreamState(3, 3, 4, 21_000, stride=2)
    _pushed(state, times[:5], [1] * 5)
    _pushed(state, times[5:] + 100_000, [1] * 4)  # a gap: a second segment, warming up
    assert (state.segments_started, state.warming_up, state.buffered_readings) == (2, True, 2)
    again = StreamState(3, 3, 4, 21_000, stride=2)
    again.restore(json.loads(json.dumps(state.snapshot())))
    assert again.snapshot() == state.snapshot()
    assert (again.last_time_ms, again.last_group) == (state.last_time_ms, 1)
    assert (again.segments_started, again.warming_up) == (2, True)
    future = np.arange(9, 16) * 7000 + 100_000
    a, b = _pushed(state, future, [1] * 7), _pushed(again, future, [1] * 7)
    assert a.time_ms.tolist() == b.time_ms.tolist() != []
    np.testing.assert_array_equal(a.values, b.values)  # exact
    assert again.snapshot() == state.snapshot()


@pytest.mark.parametrize(
    ("smoothing", "window", "fits"), [(5, 4, True), (4, 4, False), (5, 3, False)]
)
def test_restore_refuses_a_snapshot_of_other_lengths(smoothing, window, fits):
    """A snapshot of S = 5, L = 4 holds S - 1 = 4 raw and L - 1 = 3 smoothed rows."""
    state = StreamState(1, 5, 4, 21_000)
    state.push_many(np.arange(20, dtype=np.int64) * 7000, np.ones((20, 1)))
    other = StreamState(1, smoothing, window, 21_000)
    if fits:
        other.restore(state.snapshot())
        assert other.snapshot() == state.snapshot()
    else:
        with pytest.raises(ValueError, match="does not fit"):
            other.restore(state.snapshot())


def test_push_many_rejects_times_that_do_not_increase_within_a_batch():
    state = StreamState(1, 1, 2, 21_000)
    assert len(state.push_many(np.empty(0, dtype=np.int64), np.empty((0, 1)))) == 0
    for times in ([0, 0], [7000, 0]):
        with pytest.raises(RecordError, match="strictly increasing") as err:
            state.push_many(np.array(times, dtype=np.int64), np.ones((2, 1)))
        assert err.value.reason == "out_of_order"
    assert (state.last_time_ms, state.buffered_readings, state.segments_started) == (None, 0, 0)
    out = state.push_many(np.array([0, 7000], dtype=np.int64), np.array([[1.0], [2.0]]))
    assert out.time_ms.tolist() == [7000]
    assert out.values.shape == (1, 2, 1)


def test_a_group_change_starts_a_segment_also_across_batches():
    state = StreamState(3, 1, 2, 21_000)
    assert _pushed(state, [0, 7000], [1, 1]).time_ms.tolist() == [7000]
    assert _pushed(state, [14_000], [2]).time_ms.tolist() == []  # new group: warming up
    assert _pushed(state, [21_000, 28_000], [2, 3]).time_ms.tolist() == [21_000]
    assert state.segments_started == 3
    assert state.last_group == 3


def test_arrays_are_encoded_exactly():
    values = np.array([0.1, -0.0, 1e-310, np.inf, 1 / 3])
    again = decode_array(encode_array(values))
    assert again.dtype == np.float64
    assert again.tobytes() == values.tobytes()
