"""The one detector contract every family member follows (PyOD style).

`fit(train, validation)` returns the detector; `score(windows)` gives one float per window
(higher = more anomalous); `calibrate(validation)` stores a threshold at a target false-
positive rate and the validation scores behind the tail probability; `predict` compares
with the stored `threshold_`. Fitted state ends in `_`; using an unfitted detector raises
`NotFittedError`. Everything a detector needs for inference is returned by
`state_tensors()` (weights, centre, radius, calibration scores) and `hyperparameters()`
(JSON), which is what a bundle saves: no pickling.

Windows given to a detector are already scaled: float32 arrays of shape (N, L, C).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import torch
from numpy.typing import NDArray

from wtbi_monitor.errors import NotFittedError
from wtbi_monitor.model.trainer import FitConfig, ProgressCallback

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
#: The fusion form, stored as the 6th fusion statistic (absent: the linear sum).
FUSION_ASINH = 1.0
#: Fewest gate-open validation windows a threshold is calibrated on (else all windows).
MIN_ELIGIBLE = 1000


@dataclass(frozen=True)
class ScoreOutput:
    """Scores of a batch of windows.

    Attributes:
        score: float64 (N,), higher is more anomalous.
        channel_error: float64 (N, C) per-channel reconstruction error, or None when the
            model has no decoder (or it was not asked for).
    """

    score: F64
    channel_error: F64 | None = None


def threshold_at_fpr(validation_scores: F64, target_fpr: float) -> float:
    """The (1 - target_fpr) quantile of validation normal scores (model-spec section 6)."""
    if validation_scores.size == 0:
        msg = "cannot calibrate a threshold without validation scores"
        raise NotFittedError(msg)
    return float(np.quantile(validation_scores, 1.0 - target_fpr))


def _robust(values: F64) -> tuple[float, float]:
    """(median, 1.4826 x median absolute deviation), the scale floored."""
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    return med, max(mad, 1e-12, 1e-9 * abs(med))


def tail_probability(sorted_scores: F64, scores: F64) -> F64:
    """Fraction of (sorted) validation normal scores >= each score: a calibrated p-value."""
    n = sorted_scores.shape[0]
    if n == 0:
        return np.full(scores.shape, np.nan)
    out: F64 = (n - np.searchsorted(sorted_scores, scores, side="left")) / n
    return out


class Detector(ABC):
    """Base class of all detectors."""

    #: family name as in model-spec section 7 (e.g. "iae_lstm_kl"), recorded in bundle
    #: manifests: each detector's constructor sets it (registry.build_detector passes the
    #: member's family).
    family: str = ""
    #: the detector class's name in bundle manifests (registry: kind -> class).
    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        self.threshold_: float = math.nan
        self.calibration_scores_: F64 = np.empty(0)
        #: group (turbine) index of each calibration score, aligned with the sorted scores.
        self.calibration_groups_: NDArray[np.int32] | None = None
        self.calibration_basis_: str = ""
        self.channel_reference_: F64 | None = None
        #: per-channel mean of validation windows (scaled): the baseline of gradient attribution.
        self.input_reference_: F64 | None = None
        self.target_fpr_: float = math.nan
        self.fitted_: bool = False
        #: physics fusion (`fit_fusion`): the power-residual column and, fixed on validation
        #: normal windows, the median and robust scale of the raw score and of the deficit,
        #: plus the physics weight. None: the score is the model's alone.
        self.fusion_index_: int | None = None
        self.fusion_stats_: F64 | None = None

    # -- to implement ---------------------------------------------------------------

    @abstractmethod
    def _fit(
        self,
        train: F32,
        validation: F32 | None,
        config: FitConfig,
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        """Fit on scaled normal windows; return a JSON-ready training summary."""

    @abstractmethod
    def _score(
        self, windows: F32, *, with_channels: bool, channels_at: float = -math.inf
    ) -> ScoreOutput:
        """Score scaled windows (the detector is known to be fitted).

        With `with_channels`, per-channel errors are needed only for windows scoring at
        least `channels_at`; rows below may be left at zero (saves the decoder's cost).
        """

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """JSON-ready description from which `from_hyperparameters` rebuilds the detector."""

    @classmethod
    @abstractmethod
    def from_hyperparameters(cls, hyper: dict[str, Any]) -> Self:
        """A fresh, unfitted detector with these hyperparameters."""

    @abstractmethod
    def _model_tensors(self) -> dict[str, torch.Tensor]:
        """Fitted model state as named CPU tensors."""

    @abstractmethod
    def _load_model_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `_model_tensors`."""

    # -- provided -------------------------------------------------------------------

    @property
    def has_decoder(self) -> bool:
        """Whether `score_details` can give per-channel reconstruction errors."""
        return False

    @property
    def attributes_channels(self) -> bool:
        """Whether `score_details` can give per-channel contributions to the score.

        Decoder models give per-channel reconstruction errors; others may override this
        with a gradient attribution (model/neural.py).
        """
        return self.has_decoder

    def bind_scaler(self, minimum: F64, maximum: F64, channels: tuple[str, ...]) -> None:
        """Called before `fit` with the scaler and channel names (rules need physical units)."""
        del minimum, maximum, channels

    @property
    def device(self) -> torch.device:
        """Where inference runs."""
        return torch.device("cpu")

    def to(self, device: torch.device) -> Self:
        """Move the model to `device` (no-op for CPU-only detectors)."""
        del device
        return self

    def fit(
        self,
        train: F32,
        validation: F32 | None = None,
        config: FitConfig | None = None,
        progress: ProgressCallback | None = None,
    ) -> Self:
        """Fit on scaled NORMAL windows; early stopping uses `validation` when given."""
        self.training_summary_ = self._fit(train, validation, config or FitConfig(), progress)
        self.fitted_ = True
        return self

    def _check_fitted(self) -> None:
        if not self.fitted_:
            msg = f"{type(self).__name__} is not fitted; call fit() or load a bundle"
            raise NotFittedError(msg)

    def score_details(
        self, windows: F32, *, with_channels: bool = True, channels_at: float = -math.inf
    ) -> ScoreOutput:
        """Scores (and per-channel errors where available) of scaled windows (N, L, C).

        `channels_at`: per-channel errors are computed for windows scoring at least this
        (the daemon passes the alarm's clear level); other rows may be zero.
        """
        self._check_fitted()
        if windows.shape[0] == 0:
            empty_channels = np.empty((0, windows.shape[-1])) if with_channels else None
            return ScoreOutput(np.empty(0), empty_channels if self.attributes_channels else None)
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        if self.fusion_stats_ is None:
            return self._score(windows, with_channels=with_channels, channels_at=channels_at)
        # `channels_at` is on the fused scale: score first, then attribute the hot windows.
        fused = self._fuse(self._score(windows, with_channels=False).score, windows)
        channels = None
        if with_channels and self.attributes_channels:
            channels = np.zeros((windows.shape[0], windows.shape[-1]))
            hot = fused >= channels_at
            if hot.any():
                part = self._score(windows[hot], with_channels=True).channel_error
                if part is not None:
                    channels[hot] = part
        return ScoreOutput(fused, channels)

    def score(self, windows: F32) -> F64:
        """One anomaly score per window, higher = more anomalous."""
        return self.score_details(windows, with_channels=False).score

    def fit_fusion(self, validation: F32, physics_index: int | None, weight: float) -> None:
        """Add physics evidence to the score: the product's fused score (docs/deviations).

        score = asinh((model - median) / scale) + weight x (deficit - median) / scale,
        where the deficit is minus the window mean of the (scaled) power-residual input:
        power below what the turbine's reference curve gives for the measured wind. Both
        medians and scales (1.4826 x MAD) are fixed here, on validation normal windows. A
        model cannot know from normal history alone that a stop at wind in frost is ice
        rather than maintenance, nor extrapolate to a winter colder than its history; the
        residual can, and the model sees what the residual does not (pitch, vibration,
        rotor). The asinh keeps the model's evidence linear near normal and logarithmic in
        its tail: a sensor fault or a maintenance stop may be far more anomalous than ice
        without being icing, and must not outrank a clear power deficit (on 10-minute data
        the linear sum ranked such windows first: docs/results-scada10.md).
        """
        self.fusion_index_, self.fusion_stats_ = None, None
        if physics_index is None or weight <= 0 or validation.shape[0] < 2:
            return
        raw = self.score_details(validation, with_channels=False).score
        deficit = -validation[:, :, physics_index].mean(axis=1, dtype=np.float64)
        stats = [*_robust(raw), *_robust(deficit), weight, FUSION_ASINH]
        self.fusion_stats_ = np.asarray(stats, dtype=np.float64)
        self.fusion_index_ = physics_index

    def _fuse(self, raw: F64, windows: F32) -> F64:
        if self.fusion_stats_ is None or self.fusion_index_ is None:
            return raw
        sm, ss, pm, ps, weight, *form = self.fusion_stats_.tolist()
        deficit = -windows[:, :, self.fusion_index_].mean(axis=1, dtype=np.float64)
        model = (raw - sm) / ss
        if form and form[0] == FUSION_ASINH:
            model = np.arcsinh(model)  # bundles before the asinh store 5 numbers: linear
        fused: F64 = model + weight * (deficit - pm) / ps
        return fused

    def calibrate(
        self,
        validation: F32,
        target_fpr: float,
        groups: NDArray[np.int32] | None = None,
        eligible: NDArray[np.bool_] | None = None,
    ) -> float:
        """Set `threshold_` at `target_fpr` on validation NORMAL windows; return it.

        Also stores the sorted validation scores (for tail probabilities and per-turbine
        levels: `groups` gives each window's turbine index), each channel's mean value (the
        baseline of gradient attribution) and, for models that attribute scores to
        channels, each channel's median contribution (the reference against which alarms
        attribute excess error to channels). With `eligible`, the threshold and the stored
        scores come from those windows only (the ones an alarm could be raised on), when
        there are at least MIN_ELIGIBLE of them.
        """
        if validation.shape[0]:
            self.input_reference_ = validation.mean(axis=(0, 1), dtype=np.float64)
        details = self.score_details(validation, with_channels=True)
        if details.channel_error is not None and details.channel_error.shape[0]:
            self.channel_reference_ = np.median(details.channel_error, axis=0)
        raw = details.score
        self.calibration_basis_ = "all validation windows"
        if eligible is not None and int(eligible.sum()) >= MIN_ELIGIBLE:
            raw = raw[eligible]
            groups = None if groups is None else groups[eligible]
            self.calibration_basis_ = f"{int(eligible.sum())} gate-open validation windows"
        order = np.argsort(raw, kind="stable")
        scores = raw[order]
        self.calibration_scores_ = scores
        self.calibration_groups_ = None if groups is None else groups[order].astype(np.int32)
        self.target_fpr_ = target_fpr
        self.threshold_ = self.cap_threshold(threshold_at_fpr(scores, target_fpr))
        return self.threshold_

    def cap_threshold(self, threshold: float) -> float:
        """A calibrated threshold as the detector can use it (a rule caps it: see there)."""
        return threshold

    def group_scores(self, group: int) -> F64:
        """Sorted calibration scores of one group (turbine)."""
        if self.calibration_groups_ is None:
            return np.empty(0)
        out: F64 = self.calibration_scores_[self.calibration_groups_ == group]
        return out

    def set_calibration(self, sorted_scores: F64, threshold: float, target_fpr: float) -> None:
        """Restore calibration from a bundle (the scores are saved sorted)."""
        self.calibration_scores_ = sorted_scores
        self.threshold_ = threshold
        self.target_fpr_ = target_fpr

    @property
    def median_normal_score_(self) -> float:
        """Median validation normal score (the hysteresis band's reference)."""
        if self.calibration_scores_.size == 0:
            return math.nan
        return float(np.median(self.calibration_scores_))

    def tail_probability(self, scores: F64) -> F64:
        """Fraction of validation normal scores >= each score."""
        return tail_probability(self.calibration_scores_, scores)

    def predict(self, windows: F32) -> NDArray[np.bool_]:
        """True where a window's score is above the calibrated threshold."""
        if math.isnan(self.threshold_):
            msg = "no threshold: call calibrate() or load a calibrated bundle"
            raise NotFittedError(msg)
        return self.score(windows) > self.threshold_

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything inference needs, as named CPU tensors (for safetensors)."""
        self._check_fitted()
        tensors = {f"model.{k}": v for k, v in self._model_tensors().items()}
        tensors["calibration.scores"] = torch.from_numpy(
            np.ascontiguousarray(self.calibration_scores_, dtype=np.float64)
        )
        if self.fusion_stats_ is not None and self.fusion_index_ is not None:
            tensors["fusion.stats"] = torch.from_numpy(self.fusion_stats_.copy())
            tensors["fusion.index"] = torch.tensor(self.fusion_index_, dtype=torch.int64)
        if self.calibration_groups_ is not None:
            tensors["calibration.groups"] = torch.from_numpy(
                np.ascontiguousarray(self.calibration_groups_, dtype=np.int32)
            )
        if self.input_reference_ is not None:
            tensors["calibration.input_reference"] = torch.from_numpy(
                np.ascontiguousarray(self.input_reference_, dtype=np.float64)
            )
        if self.channel_reference_ is not None:
            tensors["calibration.channel_reference"] = torch.from_numpy(
                np.ascontiguousarray(self.channel_reference_, dtype=np.float64)
            )
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from `state_tensors()` output (calibration threshold comes separately)."""
        model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        self._load_model_tensors(model)
        if "calibration.scores" in tensors:
            self.calibration_scores_ = tensors["calibration.scores"].numpy().astype(np.float64)
        if "fusion.stats" in tensors:
            self.fusion_stats_ = tensors["fusion.stats"].numpy().astype(np.float64)
            self.fusion_index_ = int(tensors["fusion.index"])
        if "calibration.groups" in tensors:
            self.calibration_groups_ = tensors["calibration.groups"].numpy().astype(np.int32)
        if "calibration.input_reference" in tensors:
            self.input_reference_ = (
                tensors["calibration.input_reference"].numpy().astype(np.float64)
            )
        if "calibration.channel_reference" in tensors:
            self.channel_reference_ = (
                tensors["calibration.channel_reference"].numpy().astype(np.float64)
            )
        self.fitted_ = True
