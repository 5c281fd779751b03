"""Segments, smoothing, windows and scaling on hand-checked inputs."""

from __future__ import annotations

import numpy as np
import pytest

from wtbi_monitor.errors import ConfigurationError, DataFormatError, RecordError
from wtbi_monitor.preprocessing import (
    DerivedChannels,
    MinMaxScaler,
    StreamState,
    centred_moving_average,
    segment_starts,
    window_series,
)


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


def test_non_increasing_time_is_a_clear_error():
    times = np.array([0, 7000, 7000, 14000], dtype=np.int64)
    with pytest.raises(DataFormatError, match="duplicate timestamp at row 2"):
        window_series(
            times, np.zeros((4, 2)), None, smoothing_length=1, window_length=2, max_gap_ms=10**6
        )


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
