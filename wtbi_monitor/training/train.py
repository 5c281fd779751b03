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
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from wtbi_monitor.alarms import gates_open
from wtbi_monitor.config import Settings, TrainingSettings
from wtbi_monitor.data.wtbi import TurbineFrame
from wtbi_monitor.domain import Label
from wtbi_monitor.errors import TrainingError
from wtbi_monitor.logs import get_logger
from wtbi_monitor.model import Bundle, FitConfig, build_detector, parse_member, resolve_device
from wtbi_monitor.model.bundle import build_manifest
from wtbi_monitor.model.classical import RULE_CHANNELS, PowerCurveRuleDetector
from wtbi_monitor.model.detector import Detector
from wtbi_monitor.model.manifest import (
    Coverage,
    TemperatureSummary,
    TrainingRecord,
    ValidationRecord,
    WindSummary,
)
from wtbi_monitor.model.trainer import ProgressCallback
from wtbi_monitor.preprocessing import DerivedChannels, MinMaxScaler
from wtbi_monitor.training.dataset import (
    LabelledWindows,
    build_windows,
    drop_out_of_range,
    fit_derived,
    scaled_windows,
    subsample,
)
from wtbi_monitor.training.splits import cut, farm_span, interleaved

log = get_logger(__name__)


@dataclass(frozen=True)
class TrainingData:
    """Normal windows for fitting and for validation/calibration.

    `derived`: the derived input channels fitted on the training readings (the windows
    already hold them, after the source channels).
    """

    train: LabelledWindows
    validation: LabelledWindows
    description: dict[str, Any]
    derived: DerivedChannels | None = None


def prepare_training_data(
    train_frames: list[TurbineFrame],
    validation_frames: list[TurbineFrame],
    settings: Settings,
    *,
    assume_normal: bool = False,
    derived: DerivedChannels | None = None,
) -> TrainingData:
    """Window both periods and keep their all-NORMAL windows.

    Args:
        train_frames: the training period of each turbine.
        validation_frames: the validation period (later in time) of each turbine.
        settings: the settings tree.
        assume_normal: treat UNKNOWN rows as NORMAL (for unlabelled history believed to be
            free of icing); icing rows are still excluded.
        derived: derived channels already fitted (e.g. shared by an evaluation); fitted on
            the training frames' normal readings when None.
    """
    pre = settings.preprocessing
    if assume_normal:
        train_frames = [_unknown_as_normal(f) for f in train_frames]
        validation_frames = [_unknown_as_normal(f) for f in validation_frames]
    if derived is None:
        derived = fit_derived(train_frames, pre)
    if set(derived.names) != set(pre.derived):
        skipped = [n for n in pre.derived if n not in derived.names]
        log.info("derived_channels_skipped", channels=skipped, reason="source channels absent")
    train = build_windows(train_frames, pre, derived=derived).normal_only()
    validation = build_windows(validation_frames, pre, derived=derived).normal_only()
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
    coverage = training_coverage([*train_frames, *validation_frames], settings, warn=True)
    description = {
        "turbines": [f.turbine_id for f in train_frames],
        "train_period": [start, end],
        "validation_period": [v_start, v_end],
        "train_windows_available": len(train),
        "validation_windows_available": len(validation),
        "assume_normal": assume_normal,
        "derived_channels": list(derived.names),
        "coverage": coverage,
    }
    return TrainingData(train, validation, description, derived)


#: A history with less normal operation below 0 C than this cannot show the model what
#: cold ice-free operation looks like (air density, stops of other causes in the cold).
MIN_COLD_NORMAL_HOURS = 24.0


def training_coverage(
    frames: list[TurbineFrame], settings: Settings, *, warn: bool = False
) -> Coverage:
    """What the NORMAL readings of a training history cover (recorded in the manifest).

    Turbines, period, readings, ambient temperature (range, quantiles, hours below 0 C) and
    wind speed (range). With `warn`, logs a warning when the history cannot represent cold
    ice-free operation; the warnings are also returned.
    """
    pre = settings.preprocessing
    frames, _ = drop_out_of_range(frames, pre)
    normal = [f.labels == Label.NORMAL for f in frames]
    rows = sum(int(m.sum()) for m in normal)
    starts = [int(f.times_ms[0]) for f in frames if len(f)]
    ends = [int(f.times_ms[-1]) for f in frames if len(f)]
    warnings: list[str] = []
    # summaries of the channels the data has (left out of the manifest otherwise)
    measured: dict[str, Any] = {}

    def column(name: str) -> NDArray[np.float64] | None:
        if name not in pre.channels or rows == 0:
            return None
        k = pre.channels.index(name)
        return np.concatenate([f.values[m, k] for f, m in zip(frames, normal, strict=True)])

    temp = column(settings.alarm.temperature_channel)
    if temp is not None:
        step_h = (
            float(np.median(np.diff(frames[0].times_ms))) / 3_600_000 if len(frames[0]) > 1 else 0
        )
        q = np.quantile(temp, [0.0, 0.01, 0.5, 0.99, 1.0])
        cold_hours = float((temp < 0.0).sum()) * step_h
        measured["temperature_c"] = TemperatureSummary(
            min=float(q[0]), p1=float(q[1]), median=float(q[2]), p99=float(q[3]), max=float(q[4])
        )
        measured["normal_hours_below_0c"] = round(cold_hours, 1)
        if cold_hours < MIN_COLD_NORMAL_HOURS:
            warnings.append(
                f"only {cold_hours:.1f} h of normal operation below 0 C (coldest normal "
                f"reading {q[0]:.2f} C): the data cannot represent cold ice-free operation, "
                "so every cold window will look anomalous; train on a history with a winter"
            )
    wind = column("wind_speed")
    if wind is not None:
        measured["wind_ms"] = WindSummary(
            min=float(wind.min()), p99=float(np.quantile(wind, 0.99)), max=float(wind.max())
        )
    if warn:
        for text in warnings:
            log.warning("training_coverage", detail=text)
    return Coverage(
        turbines=sorted({f.turbine_id for f in frames}),
        period=[format_iso(min(starts)), format_iso(max(ends))] if starts else None,
        normal_readings=rows,
        warnings=warnings,
        **measured,
    )


def format_iso(time_ms: int) -> str:
    """UTC ISO time of epoch milliseconds (second precision)."""
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).isoformat(timespec="seconds")


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
    derived = data.derived or DerivedChannels.none(pre.channels)
    channels = derived.channels
    detector = build_detector(
        parsed, settings.model, window_length=pre.window_length, n_channels=len(channels)
    ).to(device)
    detector.bind_scaler(scaler.minimum, scaler.maximum, channels)
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
    # Physics evidence beside the model's own (not for the rule: it IS the physics).
    physics = channels.index("power_residual") if "power_residual" in channels else None
    if not isinstance(detector, PowerCurveRuleDetector):
        detector.fit_fusion(x_val, physics, settings.model.physics_weight)
    groups = data.validation.series.window_turbine[val_idx].astype(np.int32)
    power = settings.alarm.power_channel
    max_power = float(scaler.maximum[channels.index(power)]) if power in channels else None
    eligible = gates_open(val_raw.mean(axis=1), channels, settings.alarm, max_power)
    threshold = detector.calibrate(x_val, tr.target_fpr, groups, eligible)
    val_scores = detector.calibration_scores_
    rule = fit_rule(detector, x_train, scaler, channels, pre.window_length)
    epochs = detector.training_summary_.get("epochs", [])
    last_val = next(
        (e["validation_loss"] for e in reversed(epochs) if e.get("validation_loss") is not None),
        None,
    )
    validation = ValidationRecord(
        windows=int(x_val.shape[0]),
        loss=last_val,
        threshold=threshold,
        false_positive_rate_at_threshold=float(np.mean(val_scores > threshold)),
        score_quantiles={
            q: float(np.quantile(val_scores, float(q))) for q in ("0.5", "0.9", "0.99", "0.999")
        },
        clip_fraction=val_clipped / max(val_raw.size, 1),  # outside the training range
        calibration_basis=detector.calibration_basis_,
    )
    # the data's description, the detector's own summary (its keys stay as they are), the fit
    training = TrainingRecord.model_validate(
        {
            **data.description,
            **{k: v for k, v in detector.training_summary_.items() if k != "epochs"},
            "epochs": epochs,
            "fit_seconds": round(fit_seconds, 2),
            "seed": tr.seed,
            "settings": tr.model_dump(mode="json"),
            "device": str(device),
        }
    )
    manifest = build_manifest(
        name=name or parsed.label.replace(":", "-").replace("+", "-"),
        member=parsed.label,
        detector=detector,
        scaler=scaler,
        preprocessing=pre,
        training=training,
        validation=validation,
        derived=derived,
        rule=rule,
        calibration_turbines=data.validation.turbine_ids,
        model_settings=settings.model.model_dump(mode="json"),
        tuning=tuning,
    )
    return Bundle(
        path=None,
        manifest=manifest,
        detector=detector,
        scaler=scaler,
        threshold_override=settings.model.threshold_override,
    )


def fit_rule(
    detector: Detector,
    x_train: NDArray[np.float32],
    scaler: MinMaxScaler,
    channels: tuple[str, ...],
    window_length: int,
) -> PowerCurveRuleDetector | None:
    """The IEA Task 19 rule fitted on the same training windows (alarm evidence).

    Kept beside the model for `alarm.policy`; None when the rule's channels are absent.
    """
    if isinstance(detector, PowerCurveRuleDetector):
        return detector
    if not all(c in channels for c in RULE_CHANNELS):
        return None
    rule = PowerCurveRuleDetector(window_length, len(channels))
    rule.bind_scaler(scaler.minimum, scaler.maximum, channels)
    try:
        rule.fit(x_train)
    except TrainingError as exc:
        log.warning("rule_not_fitted", detail=str(exc))
        return None
    return rule


def split_history(
    frames: list[TurbineFrame], training: TrainingSettings
) -> tuple[list[TurbineFrame], list[TurbineFrame]]:
    """Cut history into training and validation parts (farm-wide, `training.validation_*`).

    `blocks` (default): every k-th block of `validation_block_hours` validates, so the
    validation windows (early stopping, score statistics, the threshold) come from every
    season of the history; `tail`: the newest share validates.
    """
    if training.validation_split == "blocks":
        block_ms = round(training.validation_block_hours * 3_600_000)
        return interleaved(frames, training.validation_fraction, block_ms)
    start, end = farm_span(frames)
    cut_ms = start + round((end - start) * (1.0 - training.validation_fraction))
    return cut(frames, None, cut_ms), cut(frames, cut_ms, None)
