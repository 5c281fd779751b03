"""Fitting one family member on historical data and calibrating its threshold.

Training uses only windows whose every raw row is NORMAL (icing and unlabelled rows are
excluded), from the training period; early stopping and the threshold use NORMAL windows
of the later validation period. Stride-1 windows overlap by 25 of 26 rows, so a random
subsample of at most `max_train_windows` carries almost all of their information at a
fraction of the cost (docs/deviations.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wtbi_monitor.config import Settings
from wtbi_monitor.data.wtbi import TurbineFrame
from wtbi_monitor.errors import TrainingError
from wtbi_monitor.logs import get_logger
from wtbi_monitor.model import Bundle, FitConfig, build_detector, parse_member, resolve_device
from wtbi_monitor.model.bundle import build_manifest
from wtbi_monitor.model.trainer import ProgressCallback
from wtbi_monitor.training.dataset import LabelledWindows, build_windows, scaled_windows, subsample
from wtbi_monitor.training.splits import cut, farm_span

log = get_logger(__name__)


@dataclass(frozen=True)
class TrainingData:
    """Normal windows for fitting and for validation/calibration."""

    train: LabelledWindows
    validation: LabelledWindows
    description: dict[str, Any]


def prepare_training_data(
    train_frames: list[TurbineFrame],
    validation_frames: list[TurbineFrame],
    settings: Settings,
    *,
    assume_normal: bool = False,
) -> TrainingData:
    """Window both periods and keep their all-NORMAL windows.

    Args:
        train_frames: the training period of each turbine.
        validation_frames: the validation period (later in time) of each turbine.
        settings: the settings tree.
        assume_normal: treat UNKNOWN rows as NORMAL (for unlabelled history believed to be
            free of icing); icing rows are still excluded.
    """
    pre = settings.preprocessing
    if assume_normal:
        train_frames = [_unknown_as_normal(f) for f in train_frames]
        validation_frames = [_unknown_as_normal(f) for f in validation_frames]
    train = build_windows(train_frames, pre).normal_only()
    validation = build_windows(validation_frames, pre).normal_only()
    if len(train) < settings.training.min_train_windows:
        msg = (
            f"only {len(train)} all-normal training windows (need "
            f"{settings.training.min_train_windows}); label normal periods (normalInfo or a "
            "label column), pass --assume-normal for unlabelled ice-free history, or give more data"
        )
        raise TrainingError(msg)
    if len(validation) < 2:
        msg = (
            "no all-normal validation windows in the validation period; "
            "lengthen the data or change training.validation_fraction"
        )
        raise TrainingError(msg)
    start, end = farm_span(train_frames)
    v_start, v_end = farm_span(validation_frames)
    description = {
        "turbines": [f.turbine_id for f in train_frames],
        "train_period": [start, end],
        "validation_period": [v_start, v_end],
        "train_windows_available": len(train),
        "validation_windows_available": len(validation),
        "assume_normal": assume_normal,
    }
    return TrainingData(train, validation, description)


def _unknown_as_normal(frame: TurbineFrame) -> TurbineFrame:
    labels = frame.labels.copy()
    labels[labels < 0] = 0
    return TurbineFrame(
        frame.turbine_id,
        frame.times_ms,
        frame.values,
        frame.groups,
        labels,
        frame.dropped_rows,
        frame.source,
        frame.channels,
    )


def fit_member(
    member: str,
    data: TrainingData,
    settings: Settings,
    *,
    name: str | None = None,
    progress: ProgressCallback | None = None,
    tuning: dict[str, Any] | None = None,
) -> Bundle:
    """Fit a family member on `data` and calibrate its threshold; return an unsaved bundle.

    `tuning`: the hyperparameter search that chose these settings (training/tuning.py),
    recorded in the manifest.
    """
    parsed = parse_member(member, settings.model.objective)
    pre, tr = settings.preprocessing, settings.training
    rng = np.random.default_rng(tr.seed)
    scaler = data.train.fit_scaler(tr.scale_margin)
    train_idx = subsample(len(data.train), tr.max_train_windows, rng)
    val_idx = subsample(len(data.validation), tr.max_validation_windows, rng)
    x_train = scaled_windows(data.train, scaler, train_idx)
    val_raw = data.validation.series.windows(val_idx)
    x_val, val_clipped = scaler.transform(val_raw)
    device = resolve_device(settings.model.device)
    # Networks draw their initial weights when built: seed first, or a member's weights
    # (and results) would depend on whatever ran before it in the process.
    torch.manual_seed(tr.seed)
    detector = build_detector(
        parsed, settings.model, window_length=pre.window_length, n_channels=len(pre.channels)
    ).to(device)
    detector.bind_scaler(scaler.minimum, scaler.maximum, pre.channels)
    log.info(
        "training",
        member=parsed.label,
        preset=settings.model.preset,
        device=str(device),
        train_windows=int(x_train.shape[0]),
        validation_windows=int(x_val.shape[0]),
    )
    t0 = time.perf_counter()
    detector.fit(x_train, x_val, FitConfig.from_settings(tr), progress)
    fit_seconds = time.perf_counter() - t0
    threshold = detector.calibrate(x_val, tr.target_fpr)
    val_scores = detector.calibration_scores_
    epochs = detector.training_summary_.get("epochs", [])
    last_val = next(
        (e["validation_loss"] for e in reversed(epochs) if e.get("validation_loss") is not None),
        None,
    )
    validation = {
        "windows": int(x_val.shape[0]),
        "loss": last_val,
        "threshold": threshold,
        "false_positive_rate_at_threshold": float(np.mean(val_scores > threshold)),
        "score_quantiles": {
            q: float(np.quantile(val_scores, float(q))) for q in ("0.5", "0.9", "0.99", "0.999")
        },
        "clip_fraction": val_clipped / max(val_raw.size, 1),  # outside the training range
    }
    training = {
        **data.description,
        **{k: v for k, v in detector.training_summary_.items() if k != "epochs"},
        "epochs": epochs,
        "fit_seconds": round(fit_seconds, 2),
        "seed": tr.seed,
        "settings": tr.model_dump(mode="json"),
        "device": str(device),
    }
    manifest = build_manifest(
        name=name or parsed.label.replace(":", "-").replace("+", "-"),
        member=parsed.label,
        detector=detector,
        scaler=scaler,
        preprocessing=pre,
        training=training,
        validation=validation,
    )
    manifest["model_settings"] = settings.model.model_dump(mode="json")
    if tuning is not None:
        manifest["tuning"] = tuning
    return Bundle(
        path=None,
        manifest=manifest,
        detector=detector,
        scaler=scaler,
        threshold_override=settings.model.threshold_override,
    )


def split_history(
    frames: list[TurbineFrame], validation_fraction: float
) -> tuple[list[TurbineFrame], list[TurbineFrame]]:
    """Cut history into an earlier training part and a later validation tail (farm-wide)."""
    start, end = farm_span(frames)
    cut_ms = start + round((end - start) * (1.0 - validation_fraction))
    return cut(frames, None, cut_ms), cut(frames, cut_ms, None)
