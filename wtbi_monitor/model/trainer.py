"""The optimisation loop shared by every neural detector (model-spec section 4).

Pretraining on the reconstruction loss, a hook to initialise the centre, joint training
with Adam (AMSGrad, weight decay, optional MultiStepLR), a once-per-epoch hook (the soft
boundary's radius), early stopping on a validation criterion, restoring the best state, and
recomputing the BatchNorm statistics of the kept weights.

Model selection (DEVIATION, docs/deviations.md): by default each epoch is judged by the
detector's own label-free `validation_criterion` (e.g. validation reconstruction error),
not by the joint loss. For IAE-LSTM-KL about 90 % of the joint loss is the KL term, whose
scale has nothing to do with detection: early stopping on it kept the worst epoch (the
SVDD AUROC fell from 0.77 after pretraining to 0.015 at joint epoch 0, the one kept).
`training.early_stopping = "loss"` restores the paper's behaviour.
The loop knows nothing about SVDD or autoencoders: the detector supplies the losses through
the `Trainable` protocol. Progress is reported through a callback so this module does no
I/O (the command line draws the progress bar).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Protocol

import torch
from torch import Tensor, nn

from wtbi_monitor.config import TrainingSettings
from wtbi_monitor.errors import TrainingError

#: The training settings' defaults, which `FitConfig` shares.
_DEFAULTS = TrainingSettings()


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings: a subset of `TrainingSettings`, same names, same defaults.

    Each field is a field of `TrainingSettings` and takes its default from there
    (tests/model/test_trainer.py checks both); `from_settings` copies the values over.
    """

    batch_size: int = _DEFAULTS.batch_size
    pretrain_epochs: int = _DEFAULTS.pretrain_epochs
    epochs: int = _DEFAULTS.epochs
    learning_rate: float = _DEFAULTS.learning_rate
    weight_decay: float = _DEFAULTS.weight_decay
    amsgrad: bool = _DEFAULTS.amsgrad
    lr_milestones: tuple[int, ...] = _DEFAULTS.lr_milestones
    lr_gamma: float = _DEFAULTS.lr_gamma
    warmup_epochs: int = _DEFAULTS.warmup_epochs
    patience: int = _DEFAULTS.patience
    seed: int = _DEFAULTS.seed
    #: "auto": the detector's own criterion; "loss": the joint loss.
    early_stopping: str = _DEFAULTS.early_stopping

    @classmethod
    def from_settings(cls, s: TrainingSettings) -> FitConfig:
        """Take the optimisation fields of the training settings."""
        return cls(**{f.name: getattr(s, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's numbers, for the progress bar, the manifest and the report."""

    phase: str  # "pretrain" or "train"
    epoch: int
    train_loss: float
    validation_loss: float | None
    parts: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    selection: float | None = None  # the early-stopping criterion (lower is better)


ProgressCallback = Callable[[EpochRecord], None]


@dataclass(frozen=True)
class LossParts:
    """A batch's total loss, its named parts, and per-window distances (or None)."""

    total: Tensor
    parts: dict[str, Tensor]
    distances: Tensor | None = None


class Trainable(Protocol):
    """What the loop needs from a detector."""

    @property
    def module(self) -> nn.Module:
        """Everything that is trained or saved (network plus fitted buffers)."""
        ...

    @property
    def monitor_from_epoch(self) -> int:
        """First joint epoch whose validation loss may be used for early stopping."""
        ...

    def pretrain_parameters(self) -> list[nn.Parameter] | None:
        """Parameters trained during pretraining, or None when there is no pretraining."""
        ...

    def pretrain_loss(self, batch: Tensor) -> Tensor:
        """Reconstruction loss for pretraining."""
        ...

    def prepare_joint(self, train: Tensor, batch_size: int) -> None:
        """Called once between pretraining and joint training (centre initialisation)."""
        ...

    def joint_loss(self, batch: Tensor) -> LossParts:
        """The joint objective on a batch (train or eval mode is set by the loop)."""
        ...

    def end_epoch(self, epoch: int, distances: Tensor | None) -> None:
        """Called after each joint epoch with that epoch's training distances."""
        ...

    def validation_criterion(self, windows: Tensor) -> float | None:
        """Label-free model-selection criterion on validation windows (lower is better).

        None selects on the joint loss instead.
        """
        ...


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[Tensor]:
    """Index batches, shuffled when a generator is given.

    A last batch of one window is dropped: batch statistics need two.
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if idx.numel() >= 2:
            yield idx


def _check_finite(value: float, phase: str, epoch: int) -> None:
    if not math.isfinite(value):
        msg = f"{phase} loss became {value} at epoch {epoch}; lower the learning rate"
        raise TrainingError(msg)


class Trainer:
    """Runs pretraining, joint training and early stopping for one `Trainable`."""

    def __init__(self, config: FitConfig, progress: ProgressCallback | None = None) -> None:
        self.config = config
        self.progress = progress

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        cfg = self.config
        return torch.optim.Adam(
            params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad
        )

    def _emit(self, record: EpochRecord, history: list[EpochRecord]) -> None:
        history.append(record)
        if self.progress is not None:
            self.progress(record)

    def fit(self, model: Trainable, train: Tensor, validation: Tensor | None) -> list[EpochRecord]:
        """Train `model` on `train` windows (B, L, C) already on the model's device.

        Returns:
            One record per epoch, pretraining first.
        """
        cfg = self.config
        if train.shape[0] < 2:
            msg = f"need at least 2 training windows, got {train.shape[0]}"
            raise TrainingError(msg)
        generator = torch.Generator().manual_seed(cfg.seed)
        module = model.module
        history: list[EpochRecord] = []

        params = model.pretrain_parameters()
        if params is not None and cfg.pretrain_epochs > 0:
            opt = self._optimizer(params)
            for epoch in range(cfg.pretrain_epochs):
                t0 = time.perf_counter()
                module.train()
                total, count = 0.0, 0
                for idx in _batches(train.shape[0], cfg.batch_size, generator):
                    batch = train[idx.to(train.device)]
                    loss = model.pretrain_loss(batch)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                    opt.step()
                    total += float(loss.detach()) * batch.shape[0]
                    count += batch.shape[0]
                mean = total / max(count, 1)
                _check_finite(mean, "pretraining", epoch)
                self._emit(
                    EpochRecord("pretrain", epoch, mean, None, {}, time.perf_counter() - t0),
                    history,
                )

        model.prepare_joint(train, cfg.batch_size)
        opt = self._optimizer([p for p in module.parameters() if p.requires_grad])
        scheduler = (
            torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.lr_milestones), cfg.lr_gamma)
            if cfg.lr_milestones
            else None
        )
        best_loss, best_state, stale = math.inf, copy.deepcopy(module.state_dict()), 0
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            module.train()
            total, count = 0.0, 0
            part_sums: dict[str, float] = {}
            distances: list[Tensor] = []
            for idx in _batches(train.shape[0], cfg.batch_size, generator):
                batch = train[idx.to(train.device)]
                out = model.joint_loss(batch)
                opt.zero_grad(set_to_none=True)
                out.total.backward()  # type: ignore[no-untyped-call]
                opt.step()
                n = batch.shape[0]
                total += float(out.total.detach()) * n
                count += n
                for key, value in out.parts.items():
                    part_sums[key] = part_sums.get(key, 0.0) + float(value.detach()) * n
                if out.distances is not None:
                    distances.append(out.distances.detach())
            model.end_epoch(epoch, torch.cat(distances) if distances else None)
            if scheduler is not None:
                scheduler.step()
            train_loss = total / max(count, 1)
            _check_finite(train_loss, "training", epoch)
            val_loss = self.evaluate(model, validation) if validation is not None else None
            criterion = None
            if validation is not None and cfg.early_stopping == "auto":
                criterion = self._criterion(model, validation)
            parts = {k: v / max(count, 1) for k, v in part_sums.items()}
            self._emit(
                EpochRecord(
                    "train",
                    epoch,
                    train_loss,
                    val_loss,
                    parts,
                    time.perf_counter() - t0,
                    criterion,
                ),
                history,
            )
            if criterion is None and epoch < model.monitor_from_epoch:
                best_state = copy.deepcopy(module.state_dict())
                continue
            monitored = criterion if criterion is not None else val_loss
            monitored = monitored if monitored is not None else train_loss
            if monitored < best_loss:
                best_loss, best_state, stale = monitored, copy.deepcopy(module.state_dict()), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        module.load_state_dict(best_state)
        refresh_batchnorm(model, train, cfg.batch_size)
        module.eval()
        return history

    @torch.no_grad()
    def _criterion(self, model: Trainable, windows: Tensor) -> float | None:
        module = model.module
        was_training = module.training
        module.eval()
        try:
            return model.validation_criterion(windows)
        finally:
            module.train(was_training)

    @torch.no_grad()
    def evaluate(self, model: Trainable, windows: Tensor) -> float:
        """Mean joint loss over `windows` in eval mode."""
        module = model.module
        was_training = module.training
        module.eval()
        total, count = 0.0, 0
        for idx in _batches(windows.shape[0], max(self.config.batch_size, 2), None):
            batch = windows[idx.to(windows.device)]
            total += float(model.joint_loss(batch).total) * batch.shape[0]
            count += batch.shape[0]
        module.train(was_training)
        return total / max(count, 1)


@torch.no_grad()
def refresh_batchnorm(model: Trainable, train: Tensor, batch_size: int) -> None:
    """Recompute every BatchNorm's running statistics for the current (kept) weights.

    The running averages of the kept epoch were accumulated while its weights were still
    changing, so eval-mode scoring used statistics that lag the weights it scores with. A
    pass over the training windows with cumulative averaging (momentum None) and no weight
    update gives the exact population statistics of the kept network.
    """
    module = model.module
    batch_norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    norms = [m for m in module.modules() if isinstance(m, batch_norms)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    size = max(batch_size, 256)
    for start in range(0, train.shape[0], size):
        batch = train[start : start + size]
        if batch.shape[0] >= 2:
            model.joint_loss(batch)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    module.eval()
