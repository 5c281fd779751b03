"""Derived channels (power-curve binning), valid ranges and scaling at their boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from wtbi_monitor.errors import ConfigurationError, DataFormatError, NotFittedError
from wtbi_monitor.preprocessing import MinMaxScaler, ValidRanges
from wtbi_monitor.preprocessing.derived import (
    DerivedChannels,
    PowerCurveReference,
    available,
    missing_sources,
)


def _turbine(name: str, wind: float, power: float, n: int):
    return (name, np.full(n, wind), np.full(n, power))


def test_power_curve_bins_are_half_a_metre_per_second_up_to_40():
    """IEA Task 19 bins: 80 bins of 0.5 m/s; a reading at 8.1 m/s is in bin 16 [8.0, 8.5)."""
    curve = PowerCurveReference.fit([("A", np.full(30, 8.1), np.arange(30.0))])
    own = curve.curves["A"]
    assert own.size == 80
    assert np.flatnonzero(np.isfinite(own)).tolist() == [16]
    assert own[16] == 14.5  # the median of 0 .. 29
    # linear between bin centres, flat outside: one bin gives its value everywhere
    assert curve.expected("A", np.array([8.25, 0.0, 50.0])).tolist() == [14.5, 14.5, 14.5]


def test_winds_below_zero_and_above_40_fall_into_the_edge_bins():
    wind = np.concatenate([np.full(30, -1.0), np.full(30, 0.2), np.full(30, 55.0)])
    power = np.concatenate([np.full(30, 10.0), np.full(30, 20.0), np.full(30, 500.0)])
    own = PowerCurveReference.fit([("A", wind, power)]).curves["A"]
    assert np.flatnonzero(np.isfinite(own)).tolist() == [0, 79]
    assert own[0] == 15.0  # -1 and 0.2 m/s: both in [0, 0.5)
    assert own[79] == 500.0


def test_a_turbines_bin_needs_30_readings_of_its_own_else_takes_the_farm_value():
    # farm-wide bin 16: 30 x 100, 40 x 300, 29 x 400 -> median 300
    a, c = _turbine("A", 8.1, 100.0, 30), _turbine("C", 8.1, 300.0, 40)
    b = _turbine("B", 8.1, 400.0, 29)
    curve = PowerCurveReference.fit([a, b, c])
    assert curve.curves["*"][16] == 300.0
    assert curve.curves["A"][16] == 100.0  # exactly 30: its own
    assert curve.curves["B"][16] == 300.0  # 29: the farm's
    assert curve.curves["C"][16] == 300.0
    assert curve.expected("unknown", np.array([8.25]))[0] == 300.0


@pytest.mark.parametrize(("n", "fits"), [(5, True), (4, False)])
def test_the_farm_curve_needs_5_readings_in_a_bin(n, fits):
    series = [_turbine("A", 3.1, 50.0, n)]
    if fits:
        assert PowerCurveReference.fit(series).curves["*"][6] == 50.0
    else:
        with pytest.raises(ConfigurationError, match="no normal training readings"):
            PowerCurveReference.fit(series)


def test_no_training_readings_cannot_fit_a_curve():
    with pytest.raises(ConfigurationError, match="no normal training readings"):
        PowerCurveReference.fit([])


def test_the_curve_survives_json_with_its_empty_bins():
    curve = PowerCurveReference.fit([_turbine("A", 8.1, 100.0, 30)])
    data = curve.to_json()
    assert data["bin_width"] == 0.5
    assert data["curves"]["A"][16] == 100.0
    assert data["curves"]["A"][15] is None
    again = PowerCurveReference.from_json(data)
    np.testing.assert_array_equal(again.curves["A"], curve.curves["A"])  # NaN == NaN here


def test_available_and_missing_sources():
    names = ("power_residual", "pitch_asymmetry")
    channels = ("wind_speed", "power", "pitch1_angle")
    assert missing_sources(names, channels) == {"pitch_asymmetry": ["pitch2_angle", "pitch3_angle"]}
    assert available(names, channels) == ("power_residual",)
    assert available(names, (*channels, "pitch2_angle", "pitch3_angle")) == names
    with pytest.raises(ConfigurationError, match="unknown derived channel"):
        available(("ice_index",), channels)


def test_no_derived_channels_pass_the_values_through():
    source = ("wind_speed", "power")
    none = DerivedChannels.from_json(None, source)
    assert not none
    assert none.channels == source
    values = np.ones((3, 2))
    assert none.apply("A", values) is values
    broken = DerivedChannels(("power_residual",), source, None)
    assert broken
    with pytest.raises(ConfigurationError, match="no fitted reference curve"):
        broken.apply("A", values)


def test_derived_channels_survive_json():
    source = ("wind_speed", "power", "pitch1_angle", "pitch2_angle", "pitch3_angle")
    values = np.column_stack([np.full(30, 8.1), np.full(30, 100.0), np.zeros((30, 3))])
    derived = DerivedChannels.fit(("pitch_asymmetry", "power_residual"), source, [("A", values)])
    again = DerivedChannels.from_json(derived.to_json(), source)
    assert again.channels == (*source, "pitch_asymmetry", "power_residual")
    row = np.array([[8.1, 60.0, 1.0, 4.0, 2.5]])
    np.testing.assert_array_equal(again.apply("A", row), [[8.1, 60.0, 1.0, 4.0, 2.5, 3.0, -40.0]])
    np.testing.assert_array_equal(derived.apply("A", row), again.apply("A", row))


# ---------------------------------------------------------------------- valid ranges


def test_valid_ranges_include_their_bounds():
    ranges = ValidRanges.for_channels(("t", "p", "w"), {"t": (-50.0, 50.0), "x": (0.0, 1.0)})
    assert ranges.active
    np.testing.assert_array_equal(ranges.low, [-50.0, -np.inf, -np.inf])
    np.testing.assert_array_equal(ranges.high, [50.0, np.inf, np.inf])
    rows = np.array([[-50.0, 1e9, -1e9], [50.0, 0.0, 0.0], [-50.1, 0.0, 0.0], [50.1, 0.0, 0.0]])
    assert ranges.bad_rows(rows).tolist() == [False, False, True, True]
    assert ranges.bad_rows(np.empty((0, 3))).tolist() == []
    assert ranges.bad_rows(rows[2:3]).tolist() == [True]  # a single reading
    assert ranges.violation(rows[0]) is None
    assert ranges.violation(rows[1]) is None
    assert ranges.violation(rows[2]) == "t = -50.1 is outside its valid range [-50, 50]"
    assert ranges.violation(np.array([50.1, 0.0, 0.0])) == (
        "t = 50.1 is outside its valid range [-50, 50]"
    )


@pytest.mark.parametrize(("low", "high"), [(-np.inf, 10.0), (0.0, np.inf)])
def test_a_one_sided_range_is_active(low, high):
    ranges = ValidRanges.for_channels(("a", "b"), {"b": (low, high)})
    assert ranges.active
    assert ranges.bad_rows(np.array([[0.0, -1.0], [0.0, 11.0], [0.0, 5.0]])).tolist() == [
        low == 0.0,
        high == 10.0,
        False,
    ]
    assert (ranges.violation(np.array([0.0, -1.0])) is None) is (low != 0.0)


def test_no_ranges_check_nothing():
    ranges = ValidRanges.for_channels(("a",), {})
    assert not ranges.active
    assert ranges.bad_rows(np.array([[1e300], [-1e300]])).tolist() == [False, False]
    assert ranges.violation(np.array([1e300])) is None


# ---------------------------------------------------------------------- scaling


def test_the_scaler_counts_values_outside_its_training_range_only():
    scaler = MinMaxScaler.fit(np.array([[0.0], [10.0]]))
    scaled, outside = scaler.transform(np.array([[0.0], [10.0], [5.0]]))
    np.testing.assert_allclose(scaled[:, 0], [0.0, 1.0, 0.5])
    assert outside == 0  # the training minimum and maximum are inside
    assert scaler.transform(np.array([[-0.5], [10.5]]))[1] == 2
    np.testing.assert_allclose(scaler.span, [10.0])
    np.testing.assert_allclose(MinMaxScaler.fit(np.array([[3.0], [3.0]])).span, [1.0])
    np.testing.assert_allclose(MinMaxScaler.fit(np.array([[0.0], [0.5]])).span, [0.5])
    assert MinMaxScaler(np.zeros(1), np.ones(1)).margin == 0.0  # unset: the paper's clip


def test_the_scaler_refuses_empty_or_non_finite_training_data():
    with pytest.raises(NotFittedError, match="shape"):
        MinMaxScaler.fit(np.empty((0, 2)))
    with pytest.raises(NotFittedError, match="shape"):
        MinMaxScaler.fit(np.zeros(3))
    with pytest.raises(DataFormatError, match="non-finite"):
        MinMaxScaler.fit(np.array([[0.0], [np.nan]]))
