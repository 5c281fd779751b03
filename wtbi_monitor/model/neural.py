"""Neural detectors: the SVDD family (IAE-LSTM-KL and its relatives) and the autoencoders.

`SVDDDetector` covers every row of model-spec section 7 whose score is an SVDD distance:
iae_lstm_kl, iae_kl, iae_lstm, dlsvdd, dlsvdd_kl, dsvdd_kl, deep_svdd, iaead, each with a
hard or soft boundary. They differ only in network switches (LSTM, decoder, gates) and in
loss weights (lambda_rec, lambda_kl). `ReconstructionDetector` covers cae, toll, ae and
deep_ae, scored by reconstruction error (plus Toll's latent-norm term).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar, Self

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import Tensor, nn

from wtbi_monitor.errors import ConfigurationError, NotFittedError, TrainingError
from wtbi_monitor.model.detector import F32, Detector, ScoreOutput
from wtbi_monitor.model.faults import separation_auroc, synthetic_faults
from wtbi_monitor.model.inference import InferenceEmbedder, build_embedder
from wtbi_monitor.model.losses import (
    channel_errors,
    kl_to_standard_normal,
    reconstruction_error,
    squared_distance,
    svdd_loss,
)
from wtbi_monitor.model.networks import ConvDecoder, DenseAENet, IAENet, NetworkSpec
from wtbi_monitor.model.trainer import FitConfig, LossParts, ProgressCallback, Trainer

#: |c_d| below this is pushed to +-CENTER_EPS (Deep SVDD: a near-zero centre component is
#: trivially matched by the zero map, which invites collapse).
CENTER_EPS = 0.1
INFERENCE_BATCH = 1024


class NeuralDetector(Detector):
    """Shared parts: a torch module on a device, batched inference, tensors in and out."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        self._device = torch.device("cpu")

    @property
    def module(self) -> nn.Module:
        """The trained and saved module (network plus fitted buffers)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the module lives."""
        return self._device

    def to(self, device: torch.device) -> Self:
        """Move the module (and its buffers) to `device` and keep it there.

        Conv weights use the channels-last layout: 1.3-1.6x faster training on CPU (oneDNN)
        and the layout tensor cores prefer on GPU; saved tensors are made contiguous again.
        """
        self._invalidate()
        self.module.to(device)
        # Module.to accepts memory_format at run time; torch's stubs do not list it.
        self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._device = device
        return self

    def _model_tensors(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}

    def _load_model_tensors(self, tensors: dict[str, Tensor]) -> None:
        self._invalidate()
        self.module.load_state_dict(tensors, strict=True)
        self.to(self._device)
        self.module.eval()

    def _invalidate(self) -> None:
        """Drop caches derived from the weights (subclasses extend)."""

    def _as_tensor(self, windows: F32) -> Tensor:
        t = torch.from_numpy(windows)
        if self._device.type == "cuda":
            return t.pin_memory().to(self._device, non_blocking=True)
        return t

    def _fit(
        self,
        train: F32,
        validation: F32 | None,
        config: FitConfig,
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        torch.manual_seed(config.seed)
        self.to(self._device)
        train_t = torch.from_numpy(np.ascontiguousarray(train)).to(self._device)
        val_t = (
            torch.from_numpy(np.ascontiguousarray(validation)).to(self._device)
            if validation is not None and validation.shape[0] >= 2
            else None
        )
        history = Trainer(config, progress).fit(self, train_t, val_t)  # type: ignore[arg-type]
        return {
            "epochs": [
                {
                    "phase": r.phase,
                    "epoch": r.epoch,
                    "train_loss": r.train_loss,
                    "validation_loss": r.validation_loss,
                    "parts": r.parts,
                    "selection": r.selection,
                    "seconds": round(r.seconds, 3),
                }
                for r in history
            ],
            "train_windows": int(train.shape[0]),
            "validation_windows": 0 if validation is None else int(validation.shape[0]),
        }

    @torch.inference_mode()
    def _score(
        self, windows: F32, *, with_channels: bool, channels_at: float = -math.inf
    ) -> ScoreOutput:
        self.module.eval()
        scores, channels = [], []
        for start in range(0, windows.shape[0], INFERENCE_BATCH):
            batch = self._as_tensor(windows[start : start + INFERENCE_BATCH])
            s, ch = self._score_batch(
                batch,
                with_channels=with_channels and self.attributes_channels,
                channels_at=channels_at,
            )
            scores.append(s.double().cpu())
            if ch is not None:
                channels.append(ch.double().cpu())
        return ScoreOutput(
            torch.cat(scores).numpy(),
            torch.cat(channels).numpy() if channels else None,
        )

    def _score_batch(
        self, batch: Tensor, *, with_channels: bool, channels_at: float = -math.inf
    ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def differentiable_score(self, batch: Tensor) -> Tensor:
        """The score as a differentiable function of the windows (models without a decoder)."""
        raise NotImplementedError

    def _gradient_channels(self, batch: Tensor, score: Tensor, channels_at: float) -> Tensor:
        """Per-channel attribution of the score by gradient x (input - baseline), (B, C).

        For window x with per-channel baseline b (the mean of validation normal windows),
        channel c gets sum_t ds/dx[t, c] * (x[t, c] - b[c]): the first-order Taylor share
        of s(x) - s(b) carried by that channel. Only positive shares (channels that push
        the score up) are kept. Computed only for rows scoring at least `channels_at`;
        other rows are zero.
        """
        channels = batch.new_zeros(batch.shape[0], batch.shape[-1])
        hot = score.double() >= channels_at
        if not bool(hot.any()):
            return channels
        reference = self.input_reference_
        base = (
            torch.zeros(batch.shape[-1], device=batch.device, dtype=batch.dtype)
            if reference is None
            else torch.as_tensor(reference, device=batch.device, dtype=batch.dtype)
        )
        with torch.inference_mode(mode=False), torch.enable_grad():
            x = batch[hot].clone().requires_grad_()
            (grad,) = torch.autograd.grad(self.differentiable_score(x).sum(), x)
            shares = (grad * (x.detach() - base.clone())).sum(dim=1)
        channels[hot] = shares.clamp_min(0.0).detach().to(channels.dtype)
        return channels

    # Trainable defaults -------------------------------------------------------------

    @property
    def monitor_from_epoch(self) -> int:
        """Early stopping may look at every epoch by default."""
        return 0

    def pretrain_parameters(self) -> list[nn.Parameter] | None:
        """No pretraining by default."""
        return None

    def pretrain_loss(self, batch: Tensor) -> Tensor:
        """Unused unless `pretrain_parameters` returns parameters."""
        raise NotImplementedError

    def prepare_joint(self, train: Tensor, batch_size: int) -> None:
        """Nothing to prepare by default."""
        del train, batch_size

    def end_epoch(self, epoch: int, distances: Tensor | None) -> None:
        """Nothing to do by default."""
        del epoch, distances

    def validation_criterion(self, windows: Tensor) -> float | None:
        """Select on the joint loss by default (it is the reconstruction loss of the AEs)."""
        del windows
        return None


SCORE_MODES = ("product", "paper")
#: Robust scales below this are floored (a constant validation term adds nothing).
MIN_SCALE = 1e-12


class _SVDDModule(nn.Module):
    """IAENet plus the SVDD buffers, so that one state dict holds everything."""

    center: Tensor
    radius: Tensor
    score_stats: Tensor
    feature_mean: Tensor
    feature_precision: Tensor

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.net = IAENet(spec)
        # NaN = not fitted yet (conventions #4).
        self.register_buffer("center", torch.full((spec.rep_dim,), math.nan))
        self.register_buffer("radius", torch.tensor(math.nan))
        # Product score: median and robust scale of its two terms (the distance term and
        # the reconstruction error) on validation normal windows, fixed at training time.
        self.register_buffer("score_stats", torch.full((4,), math.nan, dtype=torch.float64))
        if not spec.use_decoder:
            # Product score without a decoder: the Mahalanobis distance of the encoder
            # features from those of validation normal windows (shrunk covariance).
            f = spec.feature_dim
            self.register_buffer("feature_mean", torch.full((f,), math.nan, dtype=torch.float64))
            self.register_buffer(
                "feature_precision", torch.full((f, f), math.nan, dtype=torch.float64)
            )


class SVDDDetector(NeuralDetector):
    """IAE-LSTM-KL and every relative scored by the distance to a centre (model-spec 3-5).

    Two scores (`score`):

    * ``"paper"``: ||z - c||^2 (hard) or ||z - c||^2 - R^2 (soft), paper eq. 17;
    * ``"product"`` (default, a DEVIATION: docs/deviations.md): with a decoder, the
      distance ||z - c||^2 and the reconstruction error, each standardised by its median
      and robust scale (1.4826 x MAD) on validation normal windows, then added; without a
      decoder, the Mahalanobis distance of the member's own encoder features (before the
      LSTM) from those of validation normal windows (Ledoit-Wolf shrunk covariance),
      standardised alike. The statistics are fixed at training time and saved with the
      weights, so the score does not depend on the batch. With the KL term and the LSTM
      together the paper's distance can rank anomalies BELOW normal windows (they land
      inside the normal shell of z); the reconstruction error, and the encoder features
      before the saturating LSTM, are not fooled that way.

    Without a decoder, per-channel contributions come from gradient attribution.

    Args:
        spec: network shape and switches (LSTM, gates, decoder).
        family: name recorded in bundles.
        objective: "hard" (one-class) or "soft" (soft boundary with radius R).
        lambda_rec: weight of the reconstruction loss (needs a decoder).
        lambda_kl: weight of the KL penalty on z (0 = no KL).
        nu: soft boundary: fraction of training windows allowed outside the sphere.
        warmup_epochs: soft boundary: joint epochs before R is first set.
        score: "product" or "paper" (above).
    """

    kind: ClassVar[str] = "svdd"

    def __init__(
        self,
        spec: NetworkSpec,
        *,
        family: str = "iae_lstm_kl",
        objective: str = "soft",
        lambda_rec: float = 1.0,
        lambda_kl: float = 0.1,
        nu: float = 0.1,
        warmup_epochs: int = 10,
        score: str = "product",
    ) -> None:
        super().__init__(spec)
        if objective not in ("hard", "soft"):
            msg = f"objective must be 'hard' or 'soft', got {objective!r}"
            raise ConfigurationError(msg)
        if score not in SCORE_MODES:
            msg = f"score must be one of {SCORE_MODES}, got {score!r}"
            raise ConfigurationError(msg)
        self.score_mode = score
        self._faulty: tuple[int, Tensor] | None = None  # validation faults, built once
        self.family = family
        self.objective = objective
        self.lambda_rec = lambda_rec if spec.use_decoder else 0.0
        self.lambda_kl = lambda_kl
        self.nu = nu
        self.warmup_epochs = warmup_epochs
        self._module = _SVDDModule(spec)
        self._aux_decoder: ConvDecoder | None = None
        self._embedder: InferenceEmbedder | None = None  # built on first score

    @property
    def module(self) -> nn.Module:
        """The IAENet plus centre and radius buffers."""
        return self._module

    def _invalidate(self) -> None:
        self._embedder = None

    @property
    def net(self) -> IAENet:
        """The network."""
        return self._module.net

    @property
    def soft(self) -> bool:
        """Soft-boundary objective."""
        return self.objective == "soft"

    @property
    def has_decoder(self) -> bool:
        """Decoder present: per-channel errors are available."""
        return self.spec.use_decoder

    @property
    def attributes_channels(self) -> bool:
        """Always: reconstruction error with a decoder, gradient attribution without."""
        return True

    @property
    def product(self) -> bool:
        """The product score (standardised distance + reconstruction) is in use."""
        return self.score_mode == "product"

    def differentiable_score(self, batch: Tensor) -> Tensor:
        """The distance term through the (eval-mode) network, for gradient attribution."""
        if not self.product:
            return squared_distance(self.net.embed(batch), self._module.center)
        stats = self._module.score_stats
        features = self.net.encoder(self.net.to_image(batch))
        return ((self._mahalanobis(features) - stats[0]) / stats[1]).to(batch.dtype)

    def _mahalanobis(self, features: Tensor) -> Tensor:
        """Squared Mahalanobis distance of encoder features (decoder-less product score)."""
        diff = features.double() - self._module.feature_mean
        return ((diff @ self._module.feature_precision) * diff).sum(dim=1)

    @property
    def center_(self) -> Tensor:
        """The hypersphere centre c (rep_dim,)."""
        return self._module.center

    @property
    def radius_(self) -> float:
        """The soft-boundary radius R (0 for the hard objective)."""
        return float(self._module.radius)

    def hyperparameters(self) -> dict[str, Any]:
        """Everything needed to rebuild this detector."""
        return {
            "family": self.family,
            "objective": self.objective,
            "lambda_rec": self.lambda_rec,
            "lambda_kl": self.lambda_kl,
            "nu": self.nu,
            "warmup_epochs": self.warmup_epochs,
            "score": self.score_mode,
            "network": self.spec.to_json(),
        }

    @classmethod
    def from_hyperparameters(cls, hyper: dict[str, Any]) -> Self:
        """Rebuild an unfitted detector from `hyperparameters()` output."""
        return cls(
            NetworkSpec.from_json(hyper["network"]),
            family=hyper["family"],
            objective=hyper["objective"],
            lambda_rec=hyper["lambda_rec"],
            lambda_kl=hyper["lambda_kl"],
            nu=hyper["nu"],
            warmup_epochs=hyper["warmup_epochs"],
            # bundles written before the product score existed scored like the paper
            score=hyper.get("score", "paper"),
        )

    # -- training -------------------------------------------------------------------

    @property
    def monitor_from_epoch(self) -> int:
        """The soft loss changes scale when R starts moving: monitor after the warm-up."""
        return self.warmup_epochs if self.soft else 0

    def pretrain_parameters(self) -> list[nn.Parameter] | None:
        """Pretrain the whole network on reconstruction.

        A network without a decoder is pretrained with an auxiliary one that is discarded
        afterwards (Ruff et al.'s autoencoder pretraining).
        """
        params = list(self.net.parameters())
        if self.net.decoder is None:
            self._aux_decoder = ConvDecoder(self.spec).to(self._device)
            self._aux_decoder.train()
            params += list(self._aux_decoder.parameters())
        return params

    def pretrain_loss(self, batch: Tensor) -> Tensor:
        """Reconstruction MSE of the same network (encoder, LSTM, projection, decoder)."""
        if self._aux_decoder is not None:
            self._aux_decoder.train(self.module.training)
        z = self.net.embed(batch)
        recon = self.net.decode(z, self._aux_decoder)
        return reconstruction_error(batch, recon).mean()

    @torch.no_grad()
    def prepare_joint(self, train: Tensor, batch_size: int) -> None:
        """C = mean z over the training windows (eval mode); |c_d| < 0.1 -> +-0.1."""
        self._aux_decoder = None  # pretraining is over; the auxiliary decoder is not kept
        self.module.eval()
        total = torch.zeros(self.spec.rep_dim, device=train.device)
        for start in range(0, train.shape[0], max(batch_size, 256)):
            total += self.net.embed(train[start : start + max(batch_size, 256)]).sum(dim=0)
        c = total / train.shape[0]
        small = c.abs() < CENTER_EPS
        c[small & (c < 0)] = -CENTER_EPS
        c[small & (c >= 0)] = CENTER_EPS
        self._module.center.copy_(c)
        self._module.radius.fill_(0.0)

    def joint_loss(self, batch: Tensor) -> LossParts:
        """L = L_svdd + lambda_rec L_rec + lambda_kl L_kl (model-spec section 3)."""
        z = self.net.embed(batch)
        dist = squared_distance(z, self._module.center)
        l_svdd = svdd_loss(dist, soft=self.soft, radius=self._module.radius, nu=self.nu)
        parts = {"svdd": l_svdd}
        total = l_svdd
        if self.lambda_rec > 0 and self.net.decoder is not None:
            l_rec = reconstruction_error(batch, self.net.decode(z)).mean()
            parts["rec"] = l_rec
            total = total + self.lambda_rec * l_rec
        if self.lambda_kl > 0:
            l_kl = kl_to_standard_normal(z)
            parts["kl"] = l_kl
            total = total + self.lambda_kl * l_kl
        return LossParts(total, parts, dist)

    @torch.no_grad()
    def end_epoch(self, epoch: int, distances: Tensor | None) -> None:
        """Soft boundary: after the warm-up, R = (1 - nu) quantile of ||z - c|| this epoch."""
        if not self.soft or distances is None or epoch + 1 < self.warmup_epochs:
            return
        self._module.radius.fill_(update_radius(distances, self.nu))

    @torch.no_grad()
    def validation_criterion(self, windows: Tensor) -> float | None:
        """Label-free selection criterion (lower is better); the trainer sets eval mode.

        With a decoder: the validation reconstruction error. Without one: 1 - AUROC of the
        distance on validation windows vs copies with generic synthetic faults.
        """
        if self.net.decoder is not None:
            total = 0.0
            for start in range(0, windows.shape[0], INFERENCE_BATCH):
                batch = windows[start : start + INFERENCE_BATCH]
                z = self.net.embed(batch)
                total += float(reconstruction_error(batch, self.net.decode(z)).sum())
            return total / max(windows.shape[0], 1)
        faulty = self._validation_faults(windows)
        normal_d = self._distances(windows)
        faulty_d = self._distances(faulty)
        return 1.0 - separation_auroc(normal_d.cpu().numpy(), faulty_d.cpu().numpy())

    def _validation_faults(self, windows: Tensor) -> Tensor:
        if self._faulty is None or self._faulty[0] != windows.shape[0]:
            pick = windows[: min(windows.shape[0], 2000)]
            faulty = synthetic_faults(pick.cpu().numpy(), seed=0)
            self._faulty = (windows.shape[0], torch.from_numpy(faulty).to(windows.device))
        return self._faulty[1]

    def _distances(self, windows: Tensor) -> Tensor:
        parts = [
            squared_distance(self.net.embed(windows[a : a + INFERENCE_BATCH]), self.center_)
            for a in range(0, windows.shape[0], INFERENCE_BATCH)
        ]
        return torch.cat(parts).double()

    # -- scoring --------------------------------------------------------------------

    def _embedder_ready(self) -> InferenceEmbedder:
        if self._embedder is None:
            self._embedder = build_embedder(self.net)  # BN folded: see model/inference.py
        return self._embedder

    def _terms(self, batch: Tensor, *, decode_all: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """(z, ||z - c||^2, reconstruction or None) in eval mode, BatchNorm folded."""
        z = self._embedder_ready()(batch)
        d = squared_distance(z, self._module.center)
        recon = self.net.decode(z) if decode_all and self.net.decoder is not None else None
        return z, d, recon

    def _score_batch(
        self, batch: Tensor, *, with_channels: bool, channels_at: float = -math.inf
    ) -> tuple[Tensor, Tensor | None]:
        product = self.product
        if product and self.net.decoder is None:
            features = self._embedder_ready().features(batch)
            stats = self._module.score_stats
            score = (self._mahalanobis(features) - stats[0]) / stats[1]
            channels = self._gradient_channels(batch, score, channels_at) if with_channels else None
            return score, channels
        z, d, recon = self._terms(batch, decode_all=product)
        if product:
            stats = self._module.score_stats
            score = (d.double() - stats[0]) / stats[1]
            if recon is not None:
                r = reconstruction_error(batch, recon).double()
                score = score + (r - stats[2]) / stats[3]
        else:
            score = d - self._module.radius.pow(2) if self.soft else d
        channels = None
        if with_channels and self.net.decoder is None:
            channels = self._gradient_channels(batch, score, channels_at)
        elif with_channels and recon is not None:
            channels = channel_errors(batch, recon)
        elif with_channels and self.net.decoder is not None:
            # Decode only the windows that need attribution, from the z already computed
            # (eval-mode BatchNorm: rows are independent, so a subset decodes identically).
            hot = score.double() >= channels_at  # float64, as the caller compares
            channels = batch.new_zeros(batch.shape[0], batch.shape[-1])
            if bool(hot.any()):
                channels[hot] = channel_errors(batch[hot], self.net.decode(z[hot])).to(
                    channels.dtype
                )
        return score, channels

    @torch.no_grad()
    def fit_score_stats(self, windows: Tensor) -> None:
        """Median and robust scale of each product-score term on normal windows."""
        self.module.eval()
        chunks = range(0, windows.shape[0], INFERENCE_BATCH)
        if self.net.decoder is None:
            embedder = self._embedder_ready()
            features = torch.cat(
                [embedder.features(windows[a : a + INFERENCE_BATCH]).double() for a in chunks]
            )
            shrunk = LedoitWolf().fit(features.cpu().numpy())
            self._module.feature_mean.copy_(torch.from_numpy(shrunk.location_))
            self._module.feature_precision.copy_(torch.from_numpy(shrunk.precision_))
            stats = [*_robust(self._mahalanobis(features)), 0.0, 1.0]
        else:
            ds, rs = [], []
            for start in chunks:
                batch = windows[start : start + INFERENCE_BATCH]
                _, d, recon = self._terms(batch, decode_all=True)
                ds.append(d.double())
                if recon is not None:
                    rs.append(reconstruction_error(batch, recon).double())
            stats = [*_robust(torch.cat(ds)), *_robust(torch.cat(rs))]
        self._module.score_stats.copy_(torch.tensor(stats, dtype=torch.float64))

    def _fit(
        self,
        train: F32,
        validation: F32 | None,
        config: FitConfig,
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        self._embedder = None
        self._faulty = None
        self.warmup_epochs = config.warmup_epochs
        summary = super()._fit(train, validation, config, progress)
        if not torch.isfinite(self._module.center).all():
            msg = "the centre was not initialised; training did not run"
            raise TrainingError(msg)
        self._embedder = None  # the kept weights and BatchNorm statistics
        reference = validation if validation is not None and validation.shape[0] >= 2 else train
        self.fit_score_stats(torch.from_numpy(np.ascontiguousarray(reference)).to(self.device))
        self._faulty = None
        summary["radius"] = self.radius_
        summary["score"] = self.score_mode
        summary["score_stats"] = [float(v) for v in self._module.score_stats]
        return summary


def _robust(values: Tensor) -> tuple[float, float]:
    """(median, 1.4826 x median absolute deviation), the scale floored."""
    med = float(values.median())
    mad = float((values - med).abs().median()) * 1.4826
    return med, max(mad, MIN_SCALE, 1e-9 * abs(med))


def update_radius(distances: Tensor, nu: float) -> float:
    """R = the (1 - nu) quantile of ||z - c|| (distances are squared)."""
    return float(torch.quantile(distances.detach().float().sqrt().cpu(), 1.0 - nu))


class _AEModule(nn.Module):
    """Wraps a conv or dense autoencoder so state dict keys are stable."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net


class ReconstructionDetector(NeuralDetector):
    """Autoencoders scored by reconstruction error: cae, ae, deep_ae; toll with beta > 0.

    Args:
        spec: network shape; `dense` selects the fully connected autoencoder.
        family: name recorded in bundles.
        dense: dense autoencoder on the flattened window instead of the conv one.
        hidden: dense hidden widths (encoder side).
        beta: Toll's latent-norm weight: loss and score add beta * ||z||^2.
    """

    kind: ClassVar[str] = "reconstruction"

    def __init__(
        self,
        spec: NetworkSpec,
        *,
        family: str = "cae",
        dense: bool = False,
        hidden: tuple[int, ...] = (),
        beta: float = 0.0,
    ) -> None:
        conv_spec = replace(spec, use_lstm=False, use_decoder=True, dense_hidden=tuple(hidden))
        super().__init__(conv_spec)
        self.family = family
        self.dense = dense
        self.hidden = tuple(hidden)
        self.beta = beta
        net: nn.Module = DenseAENet(conv_spec, self.hidden) if dense else IAENet(conv_spec)
        self._module = _AEModule(net)

    @property
    def module(self) -> nn.Module:
        """The autoencoder."""
        return self._module

    @property
    def has_decoder(self) -> bool:
        """Always: these are autoencoders."""
        return True

    def hyperparameters(self) -> dict[str, Any]:
        """Everything needed to rebuild this detector."""
        return {
            "family": self.family,
            "dense": self.dense,
            "hidden": list(self.hidden),
            "beta": self.beta,
            "network": self.spec.to_json(),
        }

    @classmethod
    def from_hyperparameters(cls, hyper: dict[str, Any]) -> Self:
        """Rebuild an unfitted detector from `hyperparameters()` output."""
        return cls(
            NetworkSpec.from_json(hyper["network"]),
            family=hyper["family"],
            dense=hyper["dense"],
            hidden=tuple(hyper["hidden"]),
            beta=hyper["beta"],
        )

    def _forward(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        z, recon = self._module.net(batch)
        if recon is None:  # pragma: no cover - both nets always decode here
            msg = "autoencoder without a decoder"
            raise NotFittedError(msg)
        return z, recon

    def joint_loss(self, batch: Tensor) -> LossParts:
        """MSE (+ beta * mean ||z||^2 for Toll)."""
        z, recon = self._forward(batch)
        l_rec = reconstruction_error(batch, recon).mean()
        parts = {"rec": l_rec}
        total = l_rec
        if self.beta > 0:
            l_norm = z.pow(2).sum(dim=1).mean()
            parts["latent_norm"] = l_norm
            total = total + self.beta * l_norm
        return LossParts(total, parts)

    def _score_batch(
        self, batch: Tensor, *, with_channels: bool, channels_at: float = -math.inf
    ) -> tuple[Tensor, Tensor | None]:
        del channels_at  # the reconstruction is computed anyway: channels cost nothing more
        z, recon = self._forward(batch)
        score = reconstruction_error(batch, recon)
        if self.beta > 0:
            score = score + self.beta * z.pow(2).sum(dim=1)
        return score, channel_errors(batch, recon) if with_channels else None
