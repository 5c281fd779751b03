"""Shared fixtures: a tiny simulated farm and small trained detectors (session-scoped,
so the whole suite trains each of them once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wtbi_monitor.config import ModelSettings, Settings, SimulationSettings
from wtbi_monitor.data.synthetic import FarmSimulator
from wtbi_monitor.data.wtbi import TurbineFrame
from wtbi_monitor.model import FitConfig, build_detector
from wtbi_monitor.model.detector import Detector
from wtbi_monitor.training.dataset import build_windows

torch.set_num_threads(2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked `gpu` where no CUDA device is available."""
    del config
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TINY_FIT = FitConfig(
    batch_size=64,
    pretrain_epochs=2,
    epochs=3,
    warmup_epochs=1,
    patience=3,
    learning_rate=1e-3,
    seed=0,
)


@pytest.fixture(scope="session")
def tiny_farm() -> list[TurbineFrame]:
    """Two turbines, two mid-December days at 7 s (about 49k readings), with blade icing
    on both turbines in the first 70 % (the training part) and cold ice-free production."""
    frames, _ = FarmSimulator(
        SimulationSettings(
            turbines=2, days=2.0, seed=24, start="2015-12-10T00:00:00", icing_frequency=2.0
        )
    ).generate()
    return frames


@pytest.fixture(scope="session")
def tiny_windows(tiny_farm) -> tuple[np.ndarray, np.ndarray]:
    """Scaled all-normal windows of the tiny farm: (train, held-out), float32."""
    windows = build_windows(tiny_farm, Settings().preprocessing, stride=7).normal_only()
    scaler = windows.fit_scaler()
    x, _ = scaler.transform(windows.series.windows())
    rng = np.random.default_rng(0)
    order = rng.permutation(x.shape[0])
    return x[order[:600]], x[order[600:900]]


def fit_small(member: str, train: np.ndarray, held_out: np.ndarray, **model: object) -> Detector:
    """A small detector fitted for a few epochs."""
    settings = ModelSettings(preset="small", **model)  # type: ignore[arg-type]
    detector = build_detector(member, settings, window_length=26, n_channels=26)
    return detector.fit(train, held_out, TINY_FIT)


@pytest.fixture(scope="session")
def soft_iae(tiny_windows) -> Detector:
    """A calibrated small IAE-LSTM-KL with the soft boundary."""
    train, held_out = tiny_windows
    detector = fit_small("iae_lstm_kl:soft", train, held_out)
    detector.calibrate(held_out, 0.01)
    return detector


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A temporary folder."""
    return tmp_path


TINY_SETTINGS = {
    "model": {"preset": "small"},
    "training": {
        "epochs": 2,
        "pretrain_epochs": 1,
        "warmup_epochs": 1,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "max_train_windows": 500,
        "max_validation_windows": 500,
    },
    # a short on-delay so that even a tiny model gives a few alarm events to compare
    # (at 7 s: 3 of 5 windows raise, 6 without evidence clear)
    "alarm": {
        "on_window_s": 35.0,
        "on_fraction": 0.6,
        "off_delay_s": 42.0,
        "min_duration_s": 0.0,
        "rearm_s": 0.0,
        "clear_tail": 0.3,
        "per_turbine_thresholds": False,
    },
}


@pytest.fixture(scope="session")
def tiny_bundle(tiny_farm, tmp_path_factory):
    """A calibrated small IAE-LSTM-KL bundle, saved to disk (for the daemon)."""
    from wtbi_monitor.model import save_bundle
    from wtbi_monitor.training.train import fit_member, prepare_training_data, split_history

    settings = Settings(**TINY_SETTINGS)  # type: ignore[arg-type]
    train, val = split_history(tiny_farm, settings.training)
    bundle = fit_member(
        "iae_lstm_kl:soft", prepare_training_data(train, val, settings), settings, name="tiny"
    )
    save_bundle(tmp_path_factory.mktemp("bundle") / "tiny", bundle)
    return bundle
