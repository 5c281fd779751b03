"""Losses: the KL penalty and the SVDD objectives."""

from __future__ import annotations

import pytest
import torch

from wtbi_monitor.model.losses import kl_to_standard_normal, squared_distance, svdd_loss


def _standardised(n: int, d: int) -> torch.Tensor:
    z = torch.randn(n, d, dtype=torch.float64)
    return (z - z.mean(0)) / z.std(0, unbiased=False)


def test_kl_is_zero_for_a_standard_normal_batch():
    assert abs(float(kl_to_standard_normal(_standardised(256, 16)))) < 1e-9


def test_kl_is_positive_otherwise_and_grows_with_the_mismatch():
    torch.manual_seed(0)
    base = _standardised(256, 16)
    shifted = float(kl_to_standard_normal(base + 0.5))
    scaled = float(kl_to_standard_normal(base * 3.0))
    collapsed = float(kl_to_standard_normal(base * 1e-3))
    assert 0 < shifted < float(kl_to_standard_normal(base + 2.0))
    assert scaled > 0
    assert collapsed > scaled  # a collapsing feature is punished hardest


def test_kl_is_never_negative():
    torch.manual_seed(1)
    for _ in range(50):
        z = torch.randn(64, 8) * torch.rand(8) * 4 + torch.randn(8)
        assert float(kl_to_standard_normal(z)) >= 0.0


def test_svdd_losses():
    dist = torch.tensor([1.0, 4.0, 9.0])
    assert float(svdd_loss(dist, soft=False, radius=torch.tensor(0.0), nu=0.1)) == pytest.approx(
        14 / 3
    )
    # soft: R^2 + mean(max(0, d - R^2)) / nu with R = 2: 4 + (0 + 0 + 5) / 3 / 0.5
    soft = float(svdd_loss(dist, soft=True, radius=torch.tensor(2.0), nu=0.5))
    assert abs(soft - (4 + 5 / 3 / 0.5)) < 1e-6
    c = torch.zeros(2)
    assert squared_distance(torch.tensor([[3.0, 4.0]]), c).item() == 25.0
