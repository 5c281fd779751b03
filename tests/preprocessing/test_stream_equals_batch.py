"""The streaming path gives exactly the batch path's windows and timestamps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wtbi_monitor.preprocessing import DerivedChannels, StreamState, window_series

S, L, C = 5, 4, 3  # small sizes keep examples short; the maths is size-independent
MAX_GAP = 3_000


@st.composite
def turbine_streams(draw: st.DrawFn) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Several turbines, each with segments of random length separated by gaps or group changes."""
    n_turbines = draw(st.integers(1, 3))
    out = {}
    for t in range(n_turbines):
        seg_lengths = draw(st.lists(st.integers(0, 20), min_size=1, max_size=5))
        times, groups = [], []
        now, group = draw(st.integers(0, 10_000)), 0
        for length in seg_lengths:
            for _ in range(length):
                times.append(now)
                groups.append(group)
                # within a segment: never above the limit, often exactly at it
                now += draw(st.one_of(st.just(MAX_GAP), st.integers(1, MAX_GAP)))
            if draw(st.booleans()):
                now += MAX_GAP + draw(st.one_of(st.just(1), st.integers(1, 50_000)))  # a gap
            else:
                group += 1  # a group change without a gap
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        values = rng.normal(size=(len(times), C)) * 10.0 ** rng.integers(-3, 4, size=C)
        out[f"T{t}"] = (np.array(times, dtype=np.int64), values, np.array(groups, dtype=np.int64))
    return out


@given(
    streams=turbine_streams(),
    stride=st.integers(1, 3),
    order_seed=st.integers(0, 2**32 - 1),
    max_chunk=st.integers(1, 9),
)
@settings(max_examples=150, deadline=None)
def test_stream_equals_batch(streams, stride, order_seed, max_chunk):
    expected = {
        tid: window_series(
            t, v, g, smoothing_length=S, window_length=L, max_gap_ms=MAX_GAP, stride=stride
        )
        for tid, (t, v, g) in streams.items()
    }
    # Interleave the turbines in a random order, in chunks of random size (micro-batches).
    rng = np.random.default_rng(order_seed)
    cursor = dict.fromkeys(streams, 0)
    states = {tid: StreamState(C, S, L, MAX_GAP, stride=stride) for tid in streams}
    got_times: dict[str, list[int]] = {tid: [] for tid in streams}
    got_values: dict[str, list[np.ndarray]] = {tid: [] for tid in streams}
    while any(cursor[tid] < len(streams[tid][0]) for tid in streams):
        live = [tid for tid in streams if cursor[tid] < len(streams[tid][0])]
        tid = live[int(rng.integers(len(live)))]
        t, v, g = streams[tid]
        a = cursor[tid]
        b = min(len(t), a + int(rng.integers(1, max_chunk + 1)))
        if b - a == 1 and rng.random() < 0.5:
            window = states[tid].push(int(t[a]), v[a], int(g[a]))
            if window is not None:
                got_times[tid].append(window.time_ms)
                got_values[tid].append(window.values[None])
        else:
            out = states[tid].push_many(t[a:b], v[a:b], g[a:b])
            got_times[tid].extend(out.time_ms.tolist())
            got_values[tid].append(out.values)
        cursor[tid] = b
    for tid, series in expected.items():
        assert got_times[tid] == series.time_ms.tolist()
        values = np.concatenate(got_values[tid]) if got_values[tid] else np.empty((0, L, C))
        np.testing.assert_array_equal(values, series.windows())  # exact, not approximate


SOURCE = ("wind_speed", "power", "pitch1_angle", "pitch2_angle", "pitch3_angle")


def _derived() -> DerivedChannels:
    """Both derived channels, the power curve fitted on a synthetic turbine 'T0'."""
    rng = np.random.default_rng(0)
    wind = rng.uniform(0, 20, 5000)
    power = np.clip(wind**3, 0, 1500) + rng.normal(0, 20, 5000)
    values = np.column_stack([wind, power, rng.normal(size=(5000, 3))])
    return DerivedChannels.fit(("power_residual", "pitch_asymmetry"), SOURCE, [("T0", values)])


@given(
    streams=turbine_streams(),
    order_seed=st.integers(0, 2**32 - 1),
    max_chunk=st.integers(1, 9),
)
@settings(max_examples=60, deadline=None)
def test_derived_channels_are_equal_in_stream_and_batch(streams, order_seed, max_chunk):
    """Derived channels are computed per reading, so chunked streaming == the whole series."""
    derived = _derived()
    rng = np.random.default_rng(order_seed)
    c = len(derived.channels)
    for tid, (t, v3, g) in streams.items():
        # five source channels: wind in m/s, power in kW, three pitch angles
        v = np.column_stack([np.abs(v3[:, 0]) % 25, v3[:, 1] * 100, v3])
        whole = derived.apply(tid, v)
        expected = window_series(
            t, whole, g, smoothing_length=S, window_length=L, max_gap_ms=MAX_GAP
        )
        state = StreamState(c, S, L, MAX_GAP)
        got: list[np.ndarray] = []
        a = 0
        while a < len(t):
            b = min(len(t), a + int(rng.integers(1, max_chunk + 1)))
            out = state.push_many(t[a:b], derived.apply(tid, v[a:b]), g[a:b])
            got.append(out.values)
            a = b
        values = np.concatenate(got) if got else np.empty((0, L, c))
        np.testing.assert_array_equal(values, expected.windows())  # exact, not approximate
        assert whole.shape[1] == 7
        np.testing.assert_array_equal(whole[:, 6], v[:, 2:5].max(axis=1) - v[:, 2:5].min(axis=1))


@pytest.mark.parametrize("smoothing", [1, 2, 3, 4])
@pytest.mark.parametrize("window", [2, 3])  # config minimum 2; 1 is mishandled (docs/mutation.md)
def test_stream_equals_batch_for_any_lengths_fed_one_reading_at_a_time(smoothing, window):
    """Also even smoothing lengths (the configuration allows odd ones only, the code any)."""
    times = np.arange(12, dtype=np.int64) * 1000
    values = np.arange(24.0).reshape(12, 2) ** 2
    expected = window_series(
        times, values, None, smoothing_length=smoothing, window_length=window, max_gap_ms=MAX_GAP
    )
    state = StreamState(2, smoothing, window, MAX_GAP)
    got = [state.push(int(t), v) for t, v in zip(times, values, strict=True)]
    windows = [w for w in got if w is not None]
    assert [w.time_ms for w in windows] == expected.time_ms.tolist()
    np.testing.assert_array_equal(np.array([w.values for w in windows]), expected.windows())
    assert state.buffered_readings == smoothing - 1
