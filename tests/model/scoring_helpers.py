"""Helpers of the scoring-path tests (test_precision.py, test_gpu.py): copies of a fitted
detector on another device or with other inference options, and the bf16 tolerance."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from wtbi_monitor.config import ModelSettings
from wtbi_monitor.model import build_detector
from wtbi_monitor.model.neural import SVDDDetector

#: bf16 against fp32 scores of the same model: least Spearman rank correlation, and most
#: absolute difference as a share of the fp32 scores' standard deviation. Measured on the
#: tiny models of these tests: rho >= 0.9993, max |diff| <= 0.12 std (docs/models/
#: iae_lstm_kl.md); a path that scored garbage or mixed rows would be far outside.
BF16_MIN_RANK_CORRELATION = 0.995
BF16_MAX_DIFF_OF_STD = 0.3


def clone(detector: SVDDDetector, device: torch.device | None = None) -> SVDDDetector:
    """A fresh copy of a fitted detector (through its saved tensors, as a bundle loads)."""
    twin = SVDDDetector.from_hyperparameters(detector.hyperparameters())
    twin.to(device or torch.device("cpu"))
    twin.load_state_tensors(detector.state_tensors())
    twin.set_calibration(detector.calibration_scores_, detector.threshold_, detector.target_fpr_)
    return twin


def fitted_random(member: str, windows: np.ndarray, *, score: str = "product") -> SVDDDetector:
    """A small detector with random weights, BatchNorm statistics, centre and score
    statistics fitted on `windows` (finite scores without training)."""
    torch.manual_seed(0)
    detector = build_detector(
        member, ModelSettings(preset="small", score=score), window_length=26, n_channels=26
    )
    assert isinstance(detector, SVDDDetector)
    x = torch.from_numpy(windows)
    detector.module.train()
    with torch.no_grad():
        detector.net.embed(x)
    detector.prepare_joint(x, 256)
    detector.module.eval()
    detector.fit_score_stats(x)
    detector.fitted_ = True
    return detector


def assert_bf16_close(fp32: np.ndarray, bf16: np.ndarray) -> None:
    """bf16 scores are finite, rank like the fp32 ones and differ little from them."""
    assert np.isfinite(bf16).all()
    rho = spearmanr(fp32, bf16).statistic
    assert rho >= BF16_MIN_RANK_CORRELATION, rho
    worst = float(np.abs(bf16 - fp32).max()) / float(np.std(fp32))
    assert worst <= BF16_MAX_DIFF_OF_STD, worst
