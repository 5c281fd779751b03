"""The generator: deterministic per seed, physically plausible, realistic, in the WTBI format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wtbi_monitor.config import PreprocessingSettings, SimulationSettings
from wtbi_monitor.data.synthetic import SCADA10_CHANNELS, FarmSimulator, power_curve
from wtbi_monitor.data.wtbi import read_farm
from wtbi_monitor.domain import DEFAULT_CHANNELS, Label
from wtbi_monitor.evaluation.realism import check_bands, farm_statistics, season_of
from wtbi_monitor.training.dataset import build_windows

CH = DEFAULT_CHANNELS
DECEMBER = {"start": "2015-12-10T00:00:00", "icing_frequency": 2.0}


def test_same_seed_same_farm_other_seed_other_farm():
    cfg = SimulationSettings(turbines=2, days=1.0, seed=5)
    a, ea = FarmSimulator(cfg).generate()
    b, eb = FarmSimulator(cfg).generate()
    c, _ = FarmSimulator(cfg.model_copy(update={"seed": 6})).generate()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.values, y.values)
        np.testing.assert_array_equal(x.times_ms, y.times_ms)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert ea == eb
    assert not np.array_equal(a[0].values[:100], c[0].values[:100])


def test_written_farm_reads_back_with_labels_and_episodes(tmp_path):
    cfg = SimulationSettings(turbines=2, days=2.0, seed=24, **DECEMBER)
    frames, episodes = FarmSimulator(cfg).write(tmp_path)
    back = read_farm(tmp_path, CH)
    assert [f.turbine_id for f in back] == ["01", "02"]
    for orig, read in zip(frames, back, strict=True):
        np.testing.assert_array_equal(orig.times_ms, read.times_ms)
        np.testing.assert_allclose(orig.values, read.values, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(orig.labels, read.labels)
        assert (read.labels == Label.ICING).any()
        assert (read.labels == Label.UNKNOWN).any()  # transition zones stay unlabelled
    doc = json.loads((tmp_path / "episodes.json").read_text())
    assert len(doc["episodes"]) == len(episodes) > 0
    assert doc["profile"] == "wtbi"
    assert {"turbine_id", "kind", "start_ms", "affected_channels"} <= set(doc["episodes"][0])


def test_physics_is_plausible():
    frames, _ = FarmSimulator(SimulationSettings(turbines=1, days=3.0, seed=2)).generate()
    f = frames[0]
    v = dict(zip(CH, f.values.T, strict=True))
    normal = f.labels == Label.NORMAL
    assert 5000 < len(f) < 3 * 86400 / 7
    assert v["power"].max() <= 1.02 * 1500  # pitch control holds rated power
    assert v["power"].min() > -20
    # above rated wind the turbine pitches; below it the pitch stays near zero
    producing = normal & (v["power"] > 50)
    high = producing & (v["wind_speed"] > 15)
    low = producing & (v["wind_speed"] < 9)
    if high.any():
        assert np.median(v["pitch1_angle"][high]) > 5
    assert np.median(v["pitch1_angle"][low]) < 2
    # normal power follows the curve of the measured wind (loosely: scatter, curtailment)
    curve = power_curve(v["wind_speed"][producing], 1500.0, rated_wind=11.5)
    assert abs(np.median(v["power"][producing] - curve)) < 100
    # the nacelle is heated: never much colder than +5 C
    assert v["int_tmp"].min() > 4
    # gaps start new groups; sampling is mostly 7 s
    assert np.median(np.diff(f.times_ms)) == 7000
    assert f.groups is not None


@pytest.fixture(scope="module")
def default_farms():
    """The default run of each profile (generated once for this module)."""
    return {p: FarmSimulator(SimulationSettings(profile=p)).generate() for p in ("wtbi", "scada10")}


def test_icing_mostly_stops_the_turbine_with_feathered_pitch(default_farms):
    frames, episodes = default_farms["wtbi"]
    ice = np.concatenate([f.labels == Label.ICING for f in frames])
    power = np.concatenate([f.values[:, CH.index("power")] for f in frames])
    pitch = np.concatenate([f.values[:, CH.index("pitch1_angle")] for f in frames])
    temp = np.concatenate([f.values[:, CH.index("environment_tmp")] for f in frames])
    assert ice.sum() > 1000
    stopped = ice & (power <= 15.0)
    assert stopped.sum() / ice.sum() > 0.3
    assert stopped.sum() / ice.sum() < 0.95
    assert np.median(pitch[stopped]) > 80  # feathered
    assert np.median(temp[ice]) < 0.0
    assert any(e.stops_turbine for e in episodes)
    assert any(not e.stops_turbine for e in episodes)


def test_cold_days_without_ice_exist():
    frames, _ = FarmSimulator(SimulationSettings(turbines=2, days=14.0, seed=7)).generate()
    temp = np.concatenate([f.values[:, CH.index("environment_tmp")] for f in frames])
    labels = np.concatenate([f.labels for f in frames])
    cold = (temp < 0) & (temp > -60)
    assert cold.mean() > 0.05
    assert np.mean(labels[cold] == Label.NORMAL) > 0.6  # most cold readings are ice-free


def test_scada10_profile_is_ten_minute_seven_channel_data(tmp_path):
    cfg = SimulationSettings(profile="scada10", turbines=2, days=120.0, seed=3)
    FarmSimulator(cfg).write(tmp_path)
    back = read_farm(tmp_path, SCADA10_CHANNELS)
    assert [f.channels for f in back] == [SCADA10_CHANNELS] * 2
    for f in back:
        assert np.median(np.diff(f.times_ms)) == 600_000
        assert 0.9 * 120 * 144 < len(f) <= 120 * 144
        power = f.values[:, SCADA10_CHANNELS.index("power")]
        assert 1800 < power.max() <= 2040  # a 2 MW class turbine
        direction = f.values[:, SCADA10_CHANNELS.index("wind_direction")]
        assert direction.min() >= 0  # absolute direction
        assert direction.max() < 360
    doc = json.loads((tmp_path / "episodes.json").read_text())
    assert doc["profile"] == "scada10"
    assert doc["interval_s"] == 600.0


def test_sensor_faults_are_present_and_dropped_before_windowing():
    frames, _ = FarmSimulator(SimulationSettings(turbines=1, days=3.0, seed=2)).generate()
    temp = frames[0].values[:, CH.index("environment_tmp")]
    assert (temp == -273.15).any()  # an impossible reading, finite: the reader keeps it
    pre = PreprocessingSettings()
    windows = build_windows(frames, pre)
    assert windows.rows_out_of_range >= int((temp == -273.15).sum())
    assert windows.series.smoothed[:, CH.index("environment_tmp")].min() > -60
    # without ranges nothing is dropped and the fault reaches the windows
    raw = build_windows(frames, pre.model_copy(update={"valid_ranges": {}}))
    assert raw.rows_out_of_range == 0
    assert raw.series.smoothed[:, CH.index("environment_tmp")].min() < -20


@pytest.mark.parametrize("profile", ["wtbi", "scada10"])
def test_default_runs_fall_inside_the_realism_bands(profile, default_farms):
    """docs/realism.md: every statistic of the default run of each profile in its band."""
    frames, _ = default_farms[profile]
    stats = farm_statistics(frames)
    season = season_of(frames)
    assert season == ("year" if profile == "scada10" else "winter")
    outside = [
        f"{b.key}={value} not in {b.bounds(season)}"
        for b, value, ok in check_bands(stats, season)
        if not ok
    ]
    assert not outside, outside
