"""Model bundles: a folder per trained model with weights.safetensors and manifest.json.

The manifest (`Manifest`, model/manifest.py) holds everything inference needs besides the
tensors (family and hyperparameters, channel list and preprocessing parameters, scaler,
threshold, training summary, validation metrics, versions, creation time) and the SHA-256
of the weights file; `build_manifest` writes a fresh one.
Loading verifies that hash and refuses a bundle trained for other channels or other
preprocessing than configured, naming what differs. No pickle anywhere: safetensors holds
plain tensors, JSON holds the rest.

A loaded `Bundle` is also the scorer used by every path (score, evaluate, replay, serve):
raw smoothed windows in, scaled and scored windows out.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors.torch import load_file, save_file

from wtbi_monitor import __version__
from wtbi_monitor.alarms import AlarmContext, Levels, clear_level_of
from wtbi_monitor.config import AlarmSettings, PreprocessingSettings
from wtbi_monitor.errors import BundleError, BundleIntegrityError, BundleMismatchError
from wtbi_monitor.model.classical import PowerCurveRuleDetector, rule_from_json, rule_to_json
from wtbi_monitor.model.detector import Detector, threshold_at_fpr
from wtbi_monitor.model.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    Manifest,
    PreprocessingRecord,
    TrainingRecord,
    TuningRecord,
    ValidationRecord,
    read_manifest,
    write_manifest,
)
from wtbi_monitor.model.neural import NeuralDetector, Precision
from wtbi_monitor.model.registry import detector_from_manifest, detector_kind
from wtbi_monitor.preprocessing import DerivedChannels, MinMaxScaler
from wtbi_monitor.preprocessing.derived import missing_sources

WEIGHTS_FILE = "weights.safetensors"
#: Preprocessing fields that must match between a bundle and the configuration.
_CHECKED = ("channels", "smoothing_length", "window_length", "nominal_interval_s", "gap_factor")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ScoredWindows:
    """A bundle's verdict on a batch of windows.

    Attributes:
        score: float64 (n,).
        tail_probability: float64 (n,).
        channel_error: float64 (n, C) or None.
        clip_fraction: float64 (n,), share of each window's values outside the scaler's
            training range (a drift signal; the model sees them, clipped only far outside).
        channel_means: float64 (n, C), unscaled mean of each channel over each window
            (the alarm gates read temperature, power and wind from it).
        rule: bool (n,), the IEA Task 19 rule's icing condition holds in at least half of
            each window's rows (False everywhere without a fitted rule).
    """

    score: NDArray[np.float64]
    tail_probability: NDArray[np.float64]
    channel_error: NDArray[np.float64] | None
    clip_fraction: NDArray[np.float64]
    channel_means: NDArray[np.float64]
    rule: NDArray[np.bool_] | None = None


@dataclass
class Bundle:
    """A loaded (or freshly trained) model with its scaler and manifest."""

    path: Path | None
    manifest: Manifest
    detector: Detector
    scaler: MinMaxScaler
    threshold_override: float | None = None

    @property
    def name(self) -> str:
        """Bundle name (its folder name when saved)."""
        return self.manifest.name

    @property
    def version(self) -> str:
        """Name plus the first 12 hex digits of the weights hash: what alarm ids depend on."""
        return f"{self.name}@{(self.manifest.weights_sha256 or 'unsaved')[:12]}"

    @property
    def source_channels(self) -> tuple[str, ...]:
        """The channels the model reads from the data (readings, files), in order."""
        return tuple(self.manifest.preprocessing.channels)

    @cached_property
    def derived(self) -> DerivedChannels:
        """The derived input channels (fitted at training) appended to the source ones."""
        return DerivedChannels.from_json(self.manifest.preprocessing.derived, self.source_channels)

    @property
    def channels(self) -> tuple[str, ...]:
        """The model's input channels: the source channels, then the derived ones."""
        return self.derived.channels

    @property
    def threshold(self) -> float:
        """The threshold in force: configuration override, else the calibrated one."""
        if self.threshold_override is not None:
            return self.threshold_override
        return self.detector.threshold_

    @property
    def median_normal_score(self) -> float:
        """Median validation normal score (severity reference of alarms)."""
        return self.detector.median_normal_score_

    @property
    def interval_s(self) -> float:
        """The sampling interval the bundle was trained for (time between windows)."""
        return self.manifest.preprocessing.nominal_interval_s

    @cached_property
    def rule(self) -> PowerCurveRuleDetector | None:
        """The IEA Task 19 rule fitted beside the model (alarm evidence), if any."""
        doc = self.manifest.rule
        if not doc:
            return None
        return rule_from_json(doc)

    def alarm_context(self, settings: AlarmSettings, *, stride: int = 1) -> AlarmContext:
        """What the alarm state machine needs to know about this model.

        Levels per turbine come from its own validation windows (when it has at least
        `settings.min_turbine_windows` and no threshold override is configured); the clear
        level is the (1 - clear_tail) quantile of normal scores, capped at the threshold.
        `stride`: only every stride-th window is scored (evaluation shortcut).
        """
        det = self.detector
        threshold = self.threshold
        fleet_clear = clear_level_of(det.calibration_scores_, threshold, settings.clear_tail)
        per_turbine: dict[str, Levels] = {}
        names = self.manifest.calibration_turbines
        if settings.per_turbine_thresholds and self.threshold_override is None:
            for k, turbine in enumerate(names):
                own = det.group_scores(k)
                if own.size < settings.min_turbine_windows:
                    continue
                thr = det.cap_threshold(threshold_at_fpr(own, det.target_fpr_))
                per_turbine[str(turbine)] = Levels(
                    thr, clear_level_of(own, thr, settings.clear_tail)
                )
        power = settings.power_channel
        max_power = None
        if power in self.channels:
            max_power = float(self.scaler.maximum[self.channels.index(power)])
        return AlarmContext(
            model_name=self.name,
            model_version=self.version,
            threshold=threshold,
            reference=self.median_normal_score,
            channels=self.channels,
            channel_reference=det.channel_reference_,
            clear_level=fleet_clear,
            interval_s=self.interval_s * stride,
            per_turbine=per_turbine,
            target_fpr=det.target_fpr_ if math.isfinite(det.target_fpr_) else 0.001,
            max_power=max_power,
        )

    def check_preprocessing(self, expected: PreprocessingSettings) -> None:
        """Raise `BundleMismatchError` naming every preprocessing field that differs."""
        saved = self.manifest.preprocessing
        wanted = PreprocessingRecord.of(expected)
        diffs = []
        lacking = missing_sources(self.derived.names, expected.channels)
        if lacking:
            detail = "; ".join(f"{n} needs {', '.join(c)}" for n, c in lacking.items())
            where = self.path or self.name
            msg = (
                f"bundle {where} was trained with derived channels whose source channels the "
                f"configured data lacks: {detail}"
            )
            raise BundleMismatchError(msg)
        for key in _CHECKED:
            have, want = getattr(saved, key), getattr(wanted, key)
            if have != want:
                if key == "channels":
                    missing = [c for c in have if c not in want]
                    extra = [c for c in want if c not in have]
                    detail = (
                        f"missing {missing}, extra {extra}" if missing or extra else "order differs"
                    )
                    diffs.append(f"channels ({detail})")
                else:
                    diffs.append(f"{key} (bundle {have!r}, configured {want!r})")
        if diffs:
            where = self.path or self.name
            msg = f"bundle {where} does not match the configuration: " + "; ".join(diffs)
            raise BundleMismatchError(msg)

    def score_windows(
        self,
        raw_windows: NDArray[np.float64],
        *,
        with_channels: bool = True,
        channels_at: float = -math.inf,
    ) -> ScoredWindows:
        """Scale and score smoothed raw windows of shape (n, L, C).

        Per-channel errors are needed only for windows scoring at least `channels_at`.
        """
        n = raw_windows.shape[0]
        scaled = self.scaler.scale(raw_windows)
        outside = (raw_windows < self.scaler.minimum) | (raw_windows > self.scaler.maximum)
        clip = outside.reshape(n, -1).mean(axis=1) if n else np.empty(0)
        out = self.detector.score_details(
            scaled, with_channels=with_channels, channels_at=channels_at
        )
        rule = self.rule
        return ScoredWindows(
            score=out.score,
            tail_probability=self.detector.tail_probability(out.score),
            channel_error=out.channel_error,
            clip_fraction=clip.astype(np.float64),
            channel_means=raw_windows.mean(axis=1) if n else np.empty((0, raw_windows.shape[-1])),
            rule=np.zeros(n, dtype=np.bool_) if rule is None else rule.score(scaled) >= 0.5,
        )


def build_manifest(
    *,
    name: str,
    member: str,
    detector: Detector,
    scaler: MinMaxScaler,
    preprocessing: PreprocessingSettings,
    training: TrainingRecord | dict[str, Any],
    validation: ValidationRecord | dict[str, Any],
    derived: DerivedChannels | None = None,
    rule: PowerCurveRuleDetector | None = None,
    calibration_turbines: tuple[str, ...] = (),
    model_settings: dict[str, Any] | None = None,
    tuning: TuningRecord | dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of a freshly trained bundle (the weights hash is added on save).

    `training` and `validation` may be given as JSON objects (checked against their
    records here). Optional parts given as None or empty are left out of the manifest.
    """
    record = PreprocessingRecord.of(preprocessing)
    if derived:
        record = record.model_copy(update={"derived": derived.to_json()})
    optional: dict[str, Any] = {}
    if rule is not None:
        optional["rule"] = rule_to_json(rule)
    if calibration_turbines:
        optional["calibration_turbines"] = list(calibration_turbines)
    center = getattr(detector, "center_", None)
    if isinstance(center, torch.Tensor):
        optional["center"] = [round(float(v), 6) for v in center.cpu()]
        optional["radius"] = float(getattr(detector, "radius_", math.nan))
    if model_settings is not None:
        optional["model_settings"] = model_settings
    if tuning is not None:
        optional["tuning"] = TuningRecord.model_validate(tuning)
    return Manifest(
        format_version=FORMAT_VERSION,
        name=name,
        member=member,
        family=detector.family,
        kind=detector_kind(detector),
        hyperparameters=detector.hyperparameters(),
        preprocessing=record,
        scaler=scaler.to_json(),
        threshold=detector.threshold_,
        target_fpr=detector.target_fpr_,
        median_normal_score=detector.median_normal_score_,
        training=TrainingRecord.model_validate(training),
        validation=ValidationRecord.model_validate(validation),
        package_version=__version__,
        torch_version=torch.__version__,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        **optional,
    )


def save_bundle(folder: Path, bundle: Bundle) -> Path:
    """Write weights.safetensors and manifest.json (with the weights' hash) to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    save_file(bundle.detector.state_tensors(), str(weights))
    bundle.manifest = bundle.manifest.model_copy(update={"weights_sha256": sha256_file(weights)})
    write_manifest(folder / MANIFEST_FILE, bundle.manifest)
    bundle.path = folder
    return folder


def load_bundle(
    folder: Path,
    *,
    device: torch.device | None = None,
    expected: PreprocessingSettings | None = None,
    threshold_override: float | None = None,
    precision: Precision = "fp32",
    cuda_graphs: bool = True,
) -> Bundle:
    """Load, verify and (optionally) check a bundle against the configured preprocessing.

    `precision` and `cuda_graphs` (`model.precision`, `model.cuda_graphs`) set how a
    neural detector scores (`NeuralDetector.set_inference`); other detectors ignore them.

    Raises:
        BundleError: files missing or unreadable, or the manifest is not one.
        BundleIntegrityError: the weights' hash differs from the manifest's.
        BundleMismatchError: channels or preprocessing differ from `expected`.
    """
    manifest_path, weights = folder / MANIFEST_FILE, folder / WEIGHTS_FILE
    if not manifest_path.is_file() or not weights.is_file():
        msg = f"{folder} is not a model bundle (needs {MANIFEST_FILE} and {WEIGHTS_FILE})"
        raise BundleError(msg)
    manifest = read_manifest(manifest_path)
    actual = sha256_file(weights)
    if actual != manifest.weights_sha256:
        msg = (
            f"{weights}: content hash {actual[:16]}... does not match the manifest's "
            f"{str(manifest.weights_sha256)[:16]}...; the bundle was modified or corrupted"
        )
        raise BundleIntegrityError(msg)
    detector = detector_from_manifest(manifest.kind, manifest.hyperparameters)
    detector.to(device or torch.device("cpu"))
    try:
        detector.load_state_tensors(load_file(str(weights)))
    except (RuntimeError, KeyError) as exc:
        msg = f"{weights}: tensors do not fit the manifest's network ({exc})"
        raise BundleError(msg) from exc
    detector.set_calibration(detector.calibration_scores_, manifest.threshold, manifest.target_fpr)
    if isinstance(detector, NeuralDetector):
        detector.set_inference(precision=precision, cuda_graphs=cuda_graphs)
    bundle = Bundle(
        path=folder,
        manifest=manifest,
        detector=detector,
        scaler=MinMaxScaler.from_json(manifest.scaler),
        threshold_override=threshold_override,
    )
    if expected is not None:
        bundle.check_preprocessing(expected)
    return bundle


def score_chunked(
    bundle: Bundle,
    gather: Callable[[NDArray[np.int64]], NDArray[np.float64]],
    n: int,
    *,
    chunk: int = 16_384,
    with_channels: bool = True,
    channels_at: float = -math.inf,
) -> ScoredWindows:
    """Score n windows in chunks (bounded memory): the one scoring loop of every path.

    `gather(index)` returns the smoothed raw windows (len(index), L, C) of those windows.
    Per-channel errors (for attribution) are computed where the model gives them, for
    windows scoring at least `channels_at`; other rows are zero.
    """
    c = len(bundle.channels)
    score, tail, clip = np.empty(n), np.empty(n), np.empty(n)
    means = np.empty((n, c))
    rule = np.zeros(n, dtype=np.bool_)
    attributes = with_channels and bundle.detector.attributes_channels
    errors = np.zeros((n, c)) if attributes else None
    for start in range(0, n, chunk):
        index = np.arange(start, min(n, start + chunk))
        out = bundle.score_windows(gather(index), with_channels=attributes, channels_at=channels_at)
        part = slice(start, start + index.size)
        score[part], tail[part], clip[part] = out.score, out.tail_probability, out.clip_fraction
        means[part] = out.channel_means
        if out.rule is not None:
            rule[part] = out.rule
        if errors is not None and out.channel_error is not None:
            errors[part] = out.channel_error
    return ScoredWindows(score, tail, errors, clip, means, rule)
