"""The invariants of the detectors (conventions #13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import TINY_FIT, fit_small
from wtbi_monitor.config import ModelSettings
from wtbi_monitor.errors import NotFittedError
from wtbi_monitor.model import build_detector
from wtbi_monitor.model.detector import FUSION_ASINH
from wtbi_monitor.model.neural import SVDDDetector, update_radius


def test_score_of_a_window_does_not_depend_on_its_batch(soft_iae, tiny_windows):
    _, held_out = tiny_windows
    batch = held_out[:64]
    together = soft_iae.score(batch)
    alone = np.array([soft_iae.score(batch[i : i + 1])[0] for i in range(0, 64, 9)])
    np.testing.assert_allclose(alone, together[::9], rtol=1e-4, atol=1e-6)
    order = np.random.default_rng(3).permutation(64)
    np.testing.assert_allclose(soft_iae.score(batch[order]), together[order], rtol=1e-4, atol=1e-6)
    mixed = np.concatenate([held_out[100:150], batch[:5]])
    np.testing.assert_allclose(soft_iae.score(mixed)[-5:], together[:5], rtol=1e-4, atol=1e-6)


def test_scores_are_not_constant_on_held_out_data(soft_iae, tiny_windows):
    _, held_out = tiny_windows
    scores = soft_iae.score(held_out)
    assert np.std(scores) > 1e-3 * (np.abs(np.mean(scores)) + 1e-3)
    assert np.unique(np.round(scores, 6)).size > held_out.shape[0] // 2


def test_centre_components_are_at_least_point_one(soft_iae):
    c = soft_iae.center_
    assert torch.isfinite(c).all()
    assert bool((c.abs() >= 0.1).all())


def test_soft_radius_is_the_one_minus_nu_quantile_after_an_epoch(tiny_windows):
    train, _ = tiny_windows
    detector = build_detector(
        "iae_lstm_kl:soft", ModelSettings(preset="small", nu=0.2), window_length=26, n_channels=26
    )
    assert isinstance(detector, SVDDDetector)
    seen: list[torch.Tensor] = []
    original = detector.end_epoch

    def spy(epoch: int, distances: torch.Tensor | None) -> None:
        assert distances is not None
        seen.append(distances.clone())
        original(epoch, distances)

    detector.end_epoch = spy  # type: ignore[method-assign]
    config = TINY_FIT.__class__(
        **{**TINY_FIT.__dict__, "epochs": 1, "warmup_epochs": 0, "pretrain_epochs": 1}
    )
    detector.fit(train[:300], None, config)
    expected = float(torch.quantile(seen[-1].sqrt(), 0.8))
    assert detector.radius_ == pytest.approx(expected, rel=1e-6)
    assert update_radius(seen[-1], 0.2) == pytest.approx(expected, rel=1e-6)
    inside = (seen[-1].sqrt() <= detector.radius_).float().mean().item()
    assert inside == pytest.approx(0.8, abs=0.01)


def test_hard_boundary_has_zero_radius(tiny_windows):
    train, held_out = tiny_windows
    detector = fit_small("deep_svdd:hard", train, held_out, score="paper")
    assert detector.radius_ == 0.0  # type: ignore[attr-defined]
    assert np.all(detector.score(held_out) >= 0)  # the paper score is ||z - c||^2


def test_product_score_is_centred_on_validation_normal_windows(tiny_windows):
    """Each term standardised on the validation windows: their median score is about 0
    per term (IAE-LSTM-KL: two terms), whatever the scale of the distance."""
    train, held_out = tiny_windows
    detector = fit_small("iae_lstm_kl:hard", train, held_out)
    assert isinstance(detector, SVDDDetector)
    stats = detector._module.score_stats
    assert torch.isfinite(stats).all()
    assert bool((stats[[1, 3]] > 0).all())
    assert abs(float(np.median(detector.score(held_out)))) < 1.0


def test_unfitted_detector_refuses_to_score(tiny_windows):
    detector = build_detector("cae", ModelSettings(preset="small"), window_length=26, n_channels=26)
    with pytest.raises(NotFittedError, match="not fitted"):
        detector.score(tiny_windows[1][:2])


def test_threshold_and_tail_probability(soft_iae, tiny_windows):
    _, held_out = tiny_windows
    scores = soft_iae.score(held_out)
    assert np.mean(scores > soft_iae.threshold_) <= 0.02  # calibrated at 1 % on these windows
    tail = soft_iae.tail_probability(
        np.array([soft_iae.threshold_, scores.max() + 1, scores.min()])
    )
    assert tail[1] == 0.0
    assert tail[2] == 1.0
    assert 0 < tail[0] <= 0.02
    assert soft_iae.predict(held_out).mean() == pytest.approx(np.mean(scores > soft_iae.threshold_))


@pytest.mark.parametrize("score", ["paper", "product"])
def test_channel_errors_only_where_needed_match_the_full_computation(score):
    """`channels_at` decodes a subset from the same z: identical rows, zeros elsewhere
    (the product score decodes every window anyway, so its rows below are exact too)."""
    rng = np.random.default_rng(3)
    windows = rng.random((64, 26, 26), dtype=np.float32)
    detector = fit_small("iae_lstm_kl:soft", windows, windows[:16], score=score)
    full = detector.score_details(windows)
    level = float(np.median(full.score))
    part = detector.score_details(windows, channels_at=level)
    assert np.array_equal(part.score, full.score)
    hot = full.score >= level
    assert 0 < hot.sum() < len(hot)
    assert part.channel_error is not None
    assert full.channel_error is not None
    np.testing.assert_allclose(part.channel_error[hot], full.channel_error[hot], rtol=1e-5)
    if score == "paper":
        assert not part.channel_error[~hot].any()
    else:
        np.testing.assert_allclose(part.channel_error, full.channel_error, rtol=1e-5)


def test_physics_fusion_adds_the_standardised_power_deficit(tiny_windows):
    """Fused score = asinh(standardised model score) + weight x standardised deficit of the
    power-residual input (here: channel 2 stands in for it), fixed on validation windows."""
    train, held_out = tiny_windows
    detector = fit_small("cae", train, held_out)
    raw = detector.score(held_out)
    detector.fit_fusion(held_out, physics_index=2, weight=2.0)
    assert detector.fusion_stats_ is not None
    sm, ss, pm, ps, w, form = detector.fusion_stats_
    assert form == FUSION_ASINH
    deficit = -held_out[:, :, 2].mean(axis=1, dtype=np.float64)
    expected = np.arcsinh((raw - sm) / ss) + w * (deficit - pm) / ps
    np.testing.assert_allclose(detector.score(held_out), expected, rtol=1e-9, atol=1e-9)
    assert abs(np.median(detector.score(held_out))) < 1.0
    # a window producing less than usual on that channel scores higher
    low = held_out[:20].copy()
    low[:, :, 2] -= 0.3
    assert np.all(detector.score(low) > detector.score(held_out[:20]))
    # bundles saved before the asinh (5 statistics) keep their linear sum
    detector.fusion_stats_ = detector.fusion_stats_[:5]
    linear = (raw - sm) / ss + w * (deficit - pm) / ps
    np.testing.assert_allclose(detector.score(held_out), linear, rtol=1e-9, atol=1e-9)
    # weight 0 switches it off
    detector.fit_fusion(held_out, physics_index=2, weight=0.0)
    np.testing.assert_array_equal(detector.score(held_out), raw)
