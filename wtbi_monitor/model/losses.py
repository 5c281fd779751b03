"""Losses of model-spec section 3 (pure functions of tensors)."""

from __future__ import annotations

import torch
from torch import Tensor

KL_EPS = 1e-6


def reconstruction_error(windows: Tensor, recon: Tensor) -> Tensor:
    """Per-window mean squared error over the L x C region, shape (B,)."""
    return (windows - recon).pow(2).flatten(1).mean(dim=1)


def channel_errors(windows: Tensor, recon: Tensor) -> Tensor:
    """Per-window, per-channel mean squared error over time, shape (B, C)."""
    return (windows - recon).pow(2).mean(dim=1)


def squared_distance(z: Tensor, center: Tensor) -> Tensor:
    """||z - c||^2 per window, shape (B,)."""
    return (z - center).pow(2).sum(dim=1)


def svdd_loss(dist: Tensor, *, soft: bool, radius: Tensor, nu: float) -> Tensor:
    """Hard: mean ||z - c||^2. Soft: R^2 + (1/nu) mean max(0, ||z - c||^2 - R^2).

    R is not trained by gradient (it is set once per epoch from a quantile), so it enters
    the soft loss as a constant.
    """
    if not soft:
        return dist.mean()
    r2 = radius.detach().pow(2)
    return r2 + torch.clamp(dist - r2, min=0.0).mean() / nu


def kl_to_standard_normal(z: Tensor) -> Tensor:
    """KL(N(mu, diag s^2) || N(0, I)) with mu, s^2 the mini-batch moments of z.

    0.5 * sum_d (mu_d^2 + s_d^2 - log s_d^2 - 1). It is >= 0 and equals 0 only when every
    dimension has batch mean 0 and batch variance 1 (the log is clamped at KL_EPS). The
    authors' KLDivLoss(z, softmax(randn)) is unbounded below and is not a divergence to
    N(0, I).
    """
    mu = z.mean(dim=0)
    var = z.var(dim=0, unbiased=False)
    # Clamping (rather than adding eps) keeps the value >= 0: x - log(x) - 1 >= 0 for x > 0,
    # and for var < eps the clamped log only makes the term larger.
    log_var = torch.log(var.clamp_min(KL_EPS))
    return 0.5 * (mu.pow(2) + var - log_var - 1.0).sum()
