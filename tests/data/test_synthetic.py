"""The generator: deterministic per seed, physically plausible, in the WTBI format."""

from __future__ import annotations

import json

import numpy as np

from wtbi_monitor.config import SimulationSettings
from wtbi_monitor.data.synthetic import FarmSimulator, power_curve
from wtbi_monitor.data.wtbi import read_farm
from wtbi_monitor.domain import DEFAULT_CHANNELS, Label

CH = DEFAULT_CHANNELS


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
    cfg = SimulationSettings(turbines=2, days=2.0, seed=3, icing_episodes_per_turbine_week=7)
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
    assert {"turbine_id", "kind", "start_ms", "affected_channels"} <= set(doc["episodes"][0])


def test_physics_is_plausible():
    frames, _ = FarmSimulator(SimulationSettings(turbines=1, days=3.0, seed=2)).generate()
    f = frames[0]
    v = dict(zip(CH, f.values.T, strict=True))
    normal = f.labels == Label.NORMAL
    assert 5000 < len(f) < 3 * 86400 / 7
    assert v["power"].max() < 1.06 * 1500  # pitch control holds rated power within a few %
    assert v["power"].min() > -20
    # above rated wind the turbine pitches; below it the pitch stays near zero
    producing = normal & (v["power"] > 50)
    high = producing & (v["wind_speed"] > 15)
    low = producing & (v["wind_speed"] < 9)
    if high.any():
        assert np.median(v["pitch1_angle"][high]) > 5
    assert np.median(v["pitch1_angle"][low]) < 2
    # normal power follows the curve of the measured wind (loosely: turbulence, curtailment)
    residual = v["power"][producing] - power_curve(v["wind_speed"][producing], 1500.0)
    assert abs(np.median(residual)) < 100
    # the nacelle is heated: never much colder than +5 C
    assert v["int_tmp"].min() > 4
    # gaps start new groups; sampling is mostly 7 s
    assert np.median(np.diff(f.times_ms)) == 7000
    assert f.groups is not None


def test_cold_days_without_ice_exist():
    frames, _ = FarmSimulator(SimulationSettings(turbines=2, days=14.0, seed=7)).generate()
    temp = np.concatenate([f.values[:, CH.index("environment_tmp")] for f in frames])
    labels = np.concatenate([f.labels for f in frames])
    cold = temp < 0
    assert np.mean(labels[cold] == Label.NORMAL) > 0.6  # most cold readings are ice-free
