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
    """Two turbines, two days, 7 s sampling (about 49k readings)."""
    frames, _ = FarmSimulator(SimulationSettings(turbines=2, days=2.0, seed=11)).generate()
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
