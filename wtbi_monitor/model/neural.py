"""Neural detectors: the SVDD family (IAE-LSTM-KL and its relatives) and the autoencoders.

`SVDDDetector` covers every row of model-spec section 7 whose score is an SVDD distance:
iae_lstm_kl, iae_kl, iae_lstm, dlsvdd, dlsvdd_kl, dsvdd_kl, deep_svdd, iaead, each with a
hard or soft boundary. They differ only in network switches (LSTM, decoder, gates) and in
loss weights (lambda_rec, lambda_kl). `ReconstructionDetector` covers cae, toll, ae and
deep_ae, scored by reconstruction error (plus Toll's latent-norm term).

Scoring options (`NeuralDetector.set_inference`, from `model.precision` and
`model.cuda_graphs`): the network forward of the SVDD family and of the autoencoders may run
under bf16 autocast, with the score statistics after it in float32/float64. On CUDA, the
SVDD family pads each inference chunk to a fixed batch-size bucket (`bucket_size`) and,
with CUDA graphs on, replays the forward captured once per bucket. Rows are independent in
eval mode (BatchNorm folded or in eval mode, a single-step LSTM per window), so padding
rows change no real row's score. The CPU path neither pads nor captures.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, NamedTuple, Self

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
#: Smallest batch-size bucket on CUDA; buckets are powers of two up to INFERENCE_BATCH.
BUCKET_MIN = 64
#: Eager runs of the forward on a side stream before a CUDA graph is captured (torch docs:
#: lazy initialisation, cuDNN workspaces and autotuning must happen outside the capture).
GRAPH_WARMUP = 3

#: Numerical precision of the scoring network forward (`model.precision`).
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")


def bucket_size(rows: int, *, smallest: int = BUCKET_MIN, largest: int = INFERENCE_BATCH) -> int:
    """The fixed batch size a chunk of `rows` windows is padded to on CUDA.

    The next power of two at or above `rows`, at least `smallest` and at most `largest`:
    a handful of shapes, each captured once as a CUDA graph.

    Raises:
        ValueError: `rows` is not in 1..largest.
    """
    if not 1 <= rows <= largest:
        msg = f"a chunk has 1 to {largest} rows, got {rows}"
        raise ValueError(msg)
    return min(largest, max(smallest, 1 << (rows - 1).bit_length()))


def pad_rows(batch: Tensor, size: int) -> Tensor:
    """`batch` (n, ...) with zero rows appended up to `size` rows (`batch` itself if n == size).

    Raises:
        ValueError: `batch` has more than `size` rows.
    """
    n = batch.shape[0]
    if n > size:
        msg = f"cannot pad {n} rows down to {size}"
        raise ValueError(msg)
    if n == size:
        return batch
    return torch.cat([batch, batch.new_zeros((size - n, *batch.shape[1:]))])


class NeuralDetector(Detector):
    """Shared parts: a torch module on a device, batched inference, tensors in and out."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        self._device = torch.device("cpu")
        self._precision: Precision = "fp32"
        self._cuda_graphs = True

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

    def set_inference(self, *, precision: Precision = "fp32", cuda_graphs: bool = True) -> Self:
        """Choose how scoring runs (`model.precision`, `model.cuda_graphs`); training is fp32.

        precision "bf16": the network forward of the SVDD family and the autoencoders runs
        under bf16 autocast, the distances and standardisation after it in float32/float64
        (other neural baselines score in fp32 whatever is set). cuda_graphs: on CUDA, the
        SVDD family replays its forward from a CUDA graph per batch-size bucket; without
        it, chunks are still padded to the buckets but run eagerly. Both leave the CPU
        path's shapes alone. Drops cached inference forms and graphs.
        """
        if precision not in PRECISIONS:
            msg = f"precision must be one of {PRECISIONS}, got {precision!r}"
            raise ConfigurationError(msg)
        self._invalidate()
        self._precision = precision
        self._cuda_graphs = cuda_graphs
        return self

    @property
    def precision(self) -> Precision:
        """Precision of the scoring network forward ("fp32" or "bf16")."""
        return self._precision

    @property
    def cuda_graphs(self) -> bool:
        """Whether scoring on CUDA replays captured graphs (SVDD family)."""
        return self._cuda_graphs

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        """bf16 autocast around a network forward when precision is bf16, else nothing.

        The autocast weight cache is off: it cannot be used inside a CUDA graph capture,
        and one forward casts each weight once anyway.
        """
        if self._precision == "bf16":
            return torch.autocast(self._device.type, dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def _model_tensors(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}

    def _load_model_tensors(self, tensors: dict[str, Tensor]) -> None:
        self._invalidate()
        self.module.load_state_dict(tensors, strict=True)
        self.to(self._device)
        self.module.eval()

    def _invalidate(self) -> None:
        """Drop caches derived from the weights (subclasses extend)."""

    def _host_tensor(self, windows: F32) -> Tensor:
        """The windows as a CPU tensor, page-locked when bound for a GPU (asynchronous copy)."""
        t = torch.from_numpy(windows)
        return t.pin_memory() if self._device.type == "cuda" else t

    def _as_tensor(self, windows: F32) -> Tensor:
        t = self._host_tensor(windows)
        if self._device.type == "cuda":
            return t.to(self._device, non_blocking=True)
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


class _Forward(NamedTuple):
    """The network's per-row outputs that the SVDD scores are computed from, float32.

    Attributes:
        z: z (B, rep_dim); for the decoder-less product score, the encoder features
            (B, feature_dim) instead.
        recon: the reconstruction (B, L, C) where the score uses it (product score with a
            decoder), else None.
    """

    z: Tensor
    recon: Tensor | None

    def rows(self, n: int) -> _Forward:
        """The first `n` rows (slices off the padding of a bucket)."""
        return _Forward(self.z[:n], None if self.recon is None else self.recon[:n])


@dataclass(frozen=True)
class _CapturedForward:
    """A CUDA graph of `SVDDDetector._network_forward` at one batch size.

    Replaying it reads `windows` and overwrites `out` in place; both belong to the graph.
    """

    graph: torch.cuda.CUDAGraph
    windows: Tensor
    out: _Forward


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
        #: CUDA graphs of the scoring forward by (bucket, precision), captured on first use.
        self._graphs: dict[tuple[int, Precision], _CapturedForward] = {}

    @property
    def module(self) -> nn.Module:
        """The IAENet plus centre and radius buffers."""
        return self._module

    def _invalidate(self) -> None:
        # The graphs hold the addresses of the embedder's and decoder's weights.
        self._embedder = None
        self._graphs = {}

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

    def _network_forward(self, batch: Tensor) -> _Forward:
        """The network part of the score (what bf16 and the CUDA graphs cover), float32.

        Everything after it (distances, Mahalanobis, standardisation) runs in float32 and
        float64 whatever the precision.
        """
        embedder = self._embedder_ready()
        decoder = self.net.decoder
        with self._autocast():
            if self.product and decoder is None:
                return _Forward(embedder.features(batch).float(), None)
            z = embedder(batch)
            recon = self.net.decode(z) if self.product and decoder is not None else None
        return _Forward(z.float(), None if recon is None else recon.float())

    def _forward_rows(self, batch: Tensor) -> _Forward:
        """`_network_forward` as scoring runs it: on CUDA padded to a bucket (a graph).

        A batch above the largest bucket (only a direct caller passes one: `_score` chunks
        by INFERENCE_BATCH) runs eagerly as it is.
        """
        if self._device.type != "cuda" or batch.shape[0] > INFERENCE_BATCH:
            return self._network_forward(batch)
        size = bucket_size(batch.shape[0])
        if self._cuda_graphs:
            return self._replay(batch, size)
        return self._padded_forward(batch, size)

    def _padded_forward(self, batch: Tensor, size: int) -> _Forward:
        """`_network_forward` on `batch` zero-padded to `size` rows, the padding sliced off."""
        return self._network_forward(pad_rows(batch, size)).rows(batch.shape[0])

    @torch.inference_mode()
    def _replay(self, batch: Tensor, size: int) -> _Forward:
        """`_padded_forward` by replaying the graph of bucket `size` (captured if new).

        The returned rows are views of the graph's outputs, valid until its next replay;
        `_score_batch` derives new tensors from them at once. Inference mode always: the
        static buffers are inference tensors, written in place.
        """
        key = (size, self._precision)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(size, batch)
        n = batch.shape[0]
        captured.windows[:n].copy_(batch)
        captured.windows[n:].zero_()  # the padding: finite, and the same at every replay
        captured.graph.replay()
        return captured.out.rows(n)

    def _capture(self, size: int, like: Tensor) -> _CapturedForward:
        """Capture `_network_forward` at `size` rows on `like`'s CUDA device.

        As torch.cuda.graphs requires: a static input allocated before the capture, and
        warm-up runs on a side stream first.
        """
        self._embedder_ready()  # built on the main stream, where it is used
        windows = like.new_zeros((size, *like.shape[1:]))
        stream = torch.cuda.current_stream(like.device)
        side = torch.cuda.Stream(like.device)  # type: ignore[no-untyped-call]  # torch: untyped
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                self._network_forward(windows)
        stream.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._network_forward(windows)
        return _CapturedForward(graph, windows, out)

    def _score_batch(
        self, batch: Tensor, *, with_channels: bool, channels_at: float = -math.inf
    ) -> tuple[Tensor, Tensor | None]:
        product = self.product
        out = self._forward_rows(batch)
        if product and self.net.decoder is None:
            stats = self._module.score_stats
            score = (self._mahalanobis(out.z) - stats[0]) / stats[1]
            # Gradient attribution runs eagerly in fp32, outside any graph.
            channels = self._gradient_channels(batch, score, channels_at) if with_channels else None
            return score, channels
        z, recon = out
        d = squared_distance(z, self._module.center)
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
                with self._autocast():
                    hot_recon = self.net.decode(z[hot])
                channels[hot] = channel_errors(batch[hot], hot_recon.float()).to(channels.dtype)
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
        self._invalidate()
        self._faulty = None
        self.warmup_epochs = config.warmup_epochs
        summary = super()._fit(train, validation, config, progress)
        if not torch.isfinite(self._module.center).all():
            msg = "the centre was not initialised; training did not run"
            raise TrainingError(msg)
        self._invalidate()  # the kept weights and BatchNorm statistics
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
        with self._autocast():
            z, recon = self._forward(batch)
        z, recon = z.float(), recon.float()  # the error terms in float32 (a no-op in fp32)
        score = reconstruction_error(batch, recon)
        if self.beta > 0:
            score = score + self.beta * z.pow(2).sum(dim=1)
        return score, channel_errors(batch, recon) if with_channels else None
