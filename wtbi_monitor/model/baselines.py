"""Neural baselines of paper Table III that are not SVDD relatives: VAE, MemAE, LSA, Gaussian AD.

All four reuse the convolutional encoder and decoder of `IAENet` (no LSTM), so they differ
from the CAE only in what sits between encoder and decoder and in their score:

* `vae`: a Gaussian posterior q(z|x) (Kingma & Welling 2014); score = negative ELBO at the
  posterior mean (reconstruction error + KL per window element).
* `memae`: the latent is replaced by a sparse combination of learnt memory items, with
  hard shrinkage of the addressing weights and an entropy loss (Gong et al. 2019); score =
  reconstruction error.
* `lsa`: latent space autoregression (Abati et al. 2019): a MADE-style autoregressive
  density of the (sigmoid-bounded) latent, quantised into bins; score = reconstruction
  error + surprisal, each standardised with VALIDATION normal statistics (the authors
  normalised over the test set, which leaks).
* `gaussian_ad`: Rippel et al. fit Gaussians to ImageNet features; with no pretrained
  network for SCADA windows, the features here are the global-average-pooled outputs of
  each block of a CAE encoder trained on normal windows; score = sum over blocks of the
  Mahalanobis distance with a Ledoit-Wolf shrunk covariance.

Deviations from the original papers are listed in docs/models/<name>.md.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sklearn.covariance import LedoitWolf
from torch import Tensor, nn

from wtbi_monitor.model.detector import F32
from wtbi_monitor.model.losses import channel_errors, reconstruction_error
from wtbi_monitor.model.networks import IAENet, NetworkSpec
from wtbi_monitor.model.neural import NeuralDetector
from wtbi_monitor.model.trainer import FitConfig, LossParts, ProgressCallback

LOG_VAR_LIMIT = 10.0
ENTROPY_EPS = 1e-12


def _conv_ae_spec(spec: NetworkSpec) -> NetworkSpec:
    """The CAE shape of `spec`: no LSTM, with a decoder."""
    return replace(spec, use_lstm=False, use_decoder=True, input_gate=True, output_gate=True)


class _BaselineDetector(NeuralDetector):
    """A conv autoencoder variant trained end to end on its own loss (no pretraining)."""

    kind: ClassVar[str] = ""

    _module: nn.Module

    def __init__(self, spec: NetworkSpec, family: str) -> None:
        super().__init__(_conv_ae_spec(spec))
        self.family = family

    @property
    def module(self) -> nn.Module:
        """The trained and saved module."""
        return self._module

    @property
    def has_decoder(self) -> bool:
        """Scored through a reconstruction: per-channel errors are available."""
        return True

    def _extra_hyperparameters(self) -> dict[str, Any]:
        """Constructor arguments beyond the spec and the family name."""
        return {}

    @classmethod
    def from_hyperparameters(cls, hyper: dict[str, Any]) -> Self:
        """Rebuild an unfitted detector (the keys are the constructor's arguments)."""
        args = {k: v for k, v in hyper.items() if k != "network"}
        return cls(NetworkSpec.from_json(hyper["network"]), **args)

    def hyperparameters(self) -> dict[str, Any]:
        """Everything needed to rebuild this detector."""
        return {
            "family": self.family,
            "network": self.spec.to_json(),
            **self._extra_hyperparameters(),
        }


# ---------------------------------------------------------------------------------- VAE


class _VAEModule(nn.Module):
    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.net = IAENet(spec)  # projection = posterior mean
        self.log_var = nn.Linear(spec.feature_dim, spec.rep_dim)
        nn.init.zeros_(self.log_var.weight)
        nn.init.constant_(self.log_var.bias, -4.0)  # start with a narrow posterior

    def posterior(self, windows: Tensor) -> tuple[Tensor, Tensor]:
        features = self.net.encoder(self.net.to_image(windows))
        log_var = self.log_var(features).clamp(-LOG_VAR_LIMIT, LOG_VAR_LIMIT)
        return self.net.projection(features), log_var


class VAEDetector(_BaselineDetector):
    """Variational autoencoder; score = -ELBO per window element at z = mu.

    Args:
        spec: network shape (the CAE's encoder and decoder).
        family: name recorded in bundles.
        beta: weight of the KL term (1 = the ELBO).
    """

    _module: _VAEModule
    kind = "vae"

    def __init__(self, spec: NetworkSpec, *, family: str = "vae", beta: float = 1.0) -> None:
        super().__init__(spec, family)
        self.beta = beta
        self._module = _VAEModule(self.spec)

    def _extra_hyperparameters(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def _elbo_parts(self, batch: Tensor, *, sample: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction error (B,), KL per window element (B,), reconstruction."""
        mu, log_var = self._module.posterior(batch)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var) if sample else mu
        recon = self._module.net.decode(z)
        kl = 0.5 * (mu.pow(2) + log_var.exp() - log_var - 1.0).sum(dim=1)
        elements = batch.shape[1] * batch.shape[2]
        return reconstruction_error(batch, recon), kl / elements, recon

    def joint_loss(self, batch: Tensor) -> LossParts:
        """Negative ELBO (Gaussian likelihood, per window element) with a sampled z."""
        rec, kl, _ = self._elbo_parts(batch, sample=self._module.training)
        return LossParts((rec + self.beta * kl).mean(), {"rec": rec.mean(), "kl": kl.mean()})

    def _score_batch(
        self, batch: Tensor, *, with_channels: bool, channels_at: float = -math.inf
    ) -> tuple[Tensor, Tensor | None]:
        del channels_at
        rec, kl, recon = self._elbo_parts(batch, sample=False)
        return rec + self.beta * kl, channel_errors(batch, recon) if with_channels else None


# -------------------------------------------------------------------------------- MemAE


class _MemAEModule(nn.Module):
    def __init__(self, spec: NetworkSpec, items: int) -> None:
        super().__init__()
        self.net = IAENet(spec)
        bound = 1.0 / math.sqrt(spec.rep_dim)
        self.memory = nn.Parameter(torch.empty(items, spec.rep_dim).uniform_(-bound, bound))


def hard_shrink_relu(weights: Tensor, threshold: float, eps: float = 1e-12) -> Tensor:
    """Gong et al.'s continuous hard shrinkage: max(w - t, 0) * w / (|w - t| + eps), L1-renormed."""
    shrunk = F.relu(weights - threshold) * weights / ((weights - threshold).abs() + eps)
    return shrunk / shrunk.sum(dim=1, keepdim=True).clamp_min(eps)


class MemAEDetector(_BaselineDetector):
    """Memory-augmented autoencoder (Gong et al. 2019).

    The encoder's z addresses `items` memory slots by softmax attention over dot products
    (as in the authors' implementation; the paper writes cosine similarity); addressing
    weights below `shrink` are zeroed by hard shrinkage so that an anomaly can only be
    rebuilt from a few normal prototypes. Loss = MSE + entropy_weight * entropy(weights).
    """

    _module: _MemAEModule
    kind = "memae"

    def __init__(
        self,
        spec: NetworkSpec,
        *,
        family: str = "memae",
        items: int = 100,
        shrink: float | None = None,
        entropy_weight: float = 0.0002,
    ) -> None:
        super().__init__(spec, family)
        self.items = items
        self.shrink = 1.0 / items if shrink is None else shrink
        self.entropy_weight = entropy_weight
        self._module = _MemAEModule(self.spec, items)

    def _extra_hyperparameters(self) -> dict[str, Any]:
        return {"items": self.items, "shrink": self.shrink, "entropy_weight": self.entropy_weight}

    def _forward(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction, addressing weights (B, items))."""
        z = self._module.net.embed(batch)
        weights = torch.softmax(z @ self._module.memory.t(), dim=1)
        if self.shrink > 0:
            weights = hard_shrink_relu(weights, self.shrink)
        return self._module.net.decode(weights @ self._module.memory), weights

    def joint_loss(self, batch: Tensor) -> LossParts:
        """MSE + entropy_weight * mean entropy of the addressing weights."""
        recon, weights = self._forward(batch)
        rec = reconstruction_error(batch, recon).mean()
        entropy = -(weights * torch.log(weights + ENTROPY_EPS)).sum(dim=1).mean()
        return LossParts(rec + self.entropy_weight * entropy, {"rec": rec, "entropy": entropy})

    def _score_batch(
        self, batch: Tensor, *, with_channels: bool, channels_at: float = -math.inf
    ) -> tuple[Tensor, Tensor | None]:
        del channels_at
        recon, _ = self._forward(batch)
        score = reconstruction_error(batch, recon)
        return score, channel_errors(batch, recon) if with_channels else None


# ---------------------------------------------------------------------------------- LSA


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (MADE)."""

    mask: Tensor

    def __init__(self, n_in: int, n_out: int, mask: Tensor) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.float())

    def forward(self, x: Tensor) -> Tensor:
        """Masked affine map."""
        return F.linear(x, self.weight * self.mask, self.bias)


class AutoregressiveDensity(nn.Module):
    """p(z) = prod_i p(z_i | z_<i), each a categorical over `bins` quantisation bins of [0, 1].

    A MADE network (Germain et al. 2015): hidden units get degrees 1..d-1 and only see
    inputs of lower or equal degree, output i only sees hidden units of degree < i, so
    p(z_1) is unconditional and p(z_i) depends on z_<i alone.
    """

    def __init__(self, dim: int, hidden: int, bins: int) -> None:
        super().__init__()
        self.dim, self.bins = dim, bins
        in_deg = torch.arange(1, dim + 1)
        hid_deg = torch.arange(hidden) % max(dim - 1, 1) + 1
        out_deg = in_deg.repeat_interleave(bins)
        self.layers = nn.ModuleList(
            [
                MaskedLinear(dim, hidden, hid_deg[:, None] >= in_deg[None, :]),
                MaskedLinear(hidden, hidden, hid_deg[:, None] >= hid_deg[None, :]),
                MaskedLinear(hidden, dim * bins, out_deg[:, None] > hid_deg[None, :]),
            ]
        )

    def surprisal(self, z: Tensor) -> Tensor:
        """-log p(z) per window (B,), for z in [0, 1]^dim."""
        h = z
        for k, layer in enumerate(self.layers):
            h = layer(h)
            if k < len(self.layers) - 1:
                h = F.leaky_relu(h, 0.01)
        log_p = F.log_softmax(h.view(-1, self.dim, self.bins), dim=2)
        target = (z.detach() * self.bins).long().clamp(0, self.bins - 1)
        return -log_p.gather(2, target.unsqueeze(2)).squeeze(2).sum(dim=1)


class _LSAModule(nn.Module):
    norm: Tensor

    def __init__(self, spec: NetworkSpec, hidden: int, bins: int) -> None:
        super().__init__()
        self.net = IAENet(spec)
        self.density = AutoregressiveDensity(spec.rep_dim, hidden, bins)
        # mean and std of reconstruction error and surprisal on validation normal windows
        self.register_buffer("norm", torch.tensor([0.0, 1.0, 0.0, 1.0]))


class LSADetector(_BaselineDetector):
    """Latent space autoregression (Abati et al. 2019).

    Loss = MSE + lambda_llk * surprisal / rep_dim. Score = standardised MSE + standardised
    surprisal, with means and deviations from validation normal windows (set by
    `calibrate`, saved with the weights).
    """

    _module: _LSAModule
    kind = "lsa"

    def __init__(
        self,
        spec: NetworkSpec,
        *,
        family: str = "lsa",
        lambda_llk: float = 0.1,
        bins: int = 100,
        hidden: int = 128,
    ) -> None:
        super().__init__(spec, family)
        self.lambda_llk = lambda_llk
        self.bins = bins
        self.hidden = hidden
        self._module = _LSAModule(self.spec, hidden, bins)

    def _extra_hyperparameters(self) -> dict[str, Any]:
        return {"lambda_llk": self.lambda_llk, "bins": self.bins, "hidden": self.hidden}

    def _parts(self, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction error (B,), surprisal (B,), reconstruction."""
        net = self._module.net
        z = torch.sigmoid(net.embed(batch))
        recon = net.decode(z)
        return reconstruction_error(batch, recon), self._module.density.surprisal(z), recon

    def joint_loss(self, batch: Tensor) -> LossParts:
        """MSE + lambda_llk * surprisal per latent dimension."""
        rec, surprisal, _ = self._parts(batch)
        per_dim = surprisal.mean() / self.spec.rep_dim
        return LossParts(
            rec.mean() + self.lambda_llk * per_dim, {"rec": rec.mean(), "surprisal": per_dim}
        )

    def _score_batch(
        self, batch: Tensor, *, with_channels: bool, channels_at: float = -math.inf
    ) -> tuple[Tensor, Tensor | None]:
        del channels_at
        rec, surprisal, recon = self._parts(batch)
        m = self._module.norm
        score = (rec - m[0]) / m[1] + (surprisal - m[2]) / m[3]
        return score, channel_errors(batch, recon) if with_channels else None

    @torch.no_grad()
    def _set_normalisation(self, validation: F32) -> None:
        self.module.eval()
        recs, surps = [], []
        for start in range(0, validation.shape[0], 1024):
            rec, surprisal, _ = self._parts(self._as_tensor(validation[start : start + 1024]))
            recs.append(rec)
            surps.append(surprisal)
        rec_all, surp_all = torch.cat(recs).double(), torch.cat(surps).double()
        stats = [rec_all.mean(), rec_all.std(), surp_all.mean(), surp_all.std()]
        norm = torch.tensor([float(v) for v in stats])
        norm[1::2] = norm[1::2].clamp_min(1e-12)
        self._module.norm.copy_(norm)

    def calibrate(
        self,
        validation: F32,
        target_fpr: float,
        groups: NDArray[np.int32] | None = None,
        eligible: NDArray[np.bool_] | None = None,
    ) -> float:
        """Standardise both score terms on validation normal windows, then calibrate."""
        self._check_fitted()
        self._set_normalisation(validation)
        return super().calibrate(validation, target_fpr, groups, eligible)


# -------------------------------------------------------------------------- Gaussian AD


class _GaussianModule(nn.Module):
    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.net = IAENet(spec)
        for k, width in enumerate(spec.conv_channels):
            self.register_buffer(f"mean{k}", torch.full((width,), math.nan))
            self.register_buffer(f"precision{k}", torch.full((width, width), math.nan))

    def level_features(self, windows: Tensor) -> list[Tensor]:
        """Global-average-pooled output of each encoder block."""
        h = self.net.to_image(windows)
        out = []
        for k, layer in enumerate(self.net.encoder.blocks):
            h = layer(h)
            if k % 4 == 3:  # after each block's max-pool
                out.append(h.mean(dim=(2, 3)))
        return out

    def mahalanobis(self, windows: Tensor) -> Tensor:
        total = windows.new_zeros(windows.shape[0])
        for k, f in enumerate(self.level_features(windows)):
            d = f - getattr(self, f"mean{k}")
            total = total + ((d @ getattr(self, f"precision{k}")) * d).sum(dim=1)
        return total


class GaussianADDetector(_BaselineDetector):
    """Gaussian AD (Rippel et al. 2020) on the encoder of a CAE trained on normal windows.

    The CAE is trained on reconstruction; then per encoder block a Gaussian (mean and
    Ledoit-Wolf shrunk covariance) is fitted to the pooled features of the training
    windows. Score = sum of the blocks' squared Mahalanobis distances. No decoder output
    is used for the score, so per-channel contributions come from gradients.
    """

    _module: _GaussianModule
    kind = "gaussian_ad"

    def __init__(self, spec: NetworkSpec, *, family: str = "gaussian_ad") -> None:
        super().__init__(spec, family)
        self._module = _GaussianModule(self.spec)

    @property
    def has_decoder(self) -> bool:
        """The score does not go through the decoder."""
        return False

    @property
    def attributes_channels(self) -> bool:
        """Gradient attribution of the Mahalanobis distance."""
        return True

    def joint_loss(self, batch: Tensor) -> LossParts:
        """The CAE's reconstruction MSE."""
        net = self._module.net
        rec = reconstruction_error(batch, net.decode(net.embed(batch))).mean()
        return LossParts(rec, {"rec": rec})

    def _fit(
        self,
        train: F32,
        validation: F32 | None,
        config: FitConfig,
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        summary = super()._fit(train, validation, config, progress)
        self._fit_gaussians(train)
        return summary

    @torch.no_grad()
    def _fit_gaussians(self, train: F32) -> None:
        self.module.eval()
        levels: list[list[Tensor]] = [[] for _ in self.spec.conv_channels]
        for start in range(0, train.shape[0], 1024):
            feats = self._module.level_features(self._as_tensor(train[start : start + 1024]))
            for k, f in enumerate(feats):
                levels[k].append(f.double().cpu())
        for k, parts in enumerate(levels):
            x = torch.cat(parts).numpy()
            lw = LedoitWolf().fit(x)
            getattr(self._module, f"mean{k}").copy_(torch.from_numpy(lw.location_))
            getattr(self._module, f"precision{k}").copy_(torch.from_numpy(lw.precision_))

    def differentiable_score(self, batch: Tensor) -> Tensor:
        """The score as a differentiable function of the windows (eval mode)."""
        return self._module.mahalanobis(batch)

    def _score_batch(
        self, batch: Tensor, *, with_channels: bool, channels_at: float = -math.inf
    ) -> tuple[Tensor, Tensor | None]:
        score = self._module.mahalanobis(batch)
        channels = None
        if with_channels:
            channels = self._gradient_channels(batch, score, channels_at)
        return score, channels
