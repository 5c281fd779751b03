"""The bundle manifest (manifest.json) as typed records: the one place that reads and writes it.

docs/models/README.md lists the keys. `Manifest` and its records are frozen pydantic models;
`build_manifest` (model/bundle.py) is the one writer of a fresh manifest, `read_manifest`
and `write_manifest` the one reader and writer of the file; every other module uses
attributes.

Compatibility: a key is written exactly when it was given, so the file keeps the shape it
always had (optional keys such as `rule`, `tuning` or `coverage.wind_ms` are absent rather
than null when there is nothing to record), and a manifest read from disk is written back
with the keys it had. Unknown keys, from older or newer writers, are kept as they are
(`extra="allow"`); the detector-specific parts (`hyperparameters`, `scaler`, `rule`,
`preprocessing.derived`) stay JSON objects that their own classes read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wtbi_monitor.config import PreprocessingSettings
from wtbi_monitor.errors import BundleError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


class _Record(BaseModel):
    """Base of the manifest's records: immutable, unknown keys kept."""

    model_config = ConfigDict(frozen=True, extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The record as written: the keys that were given (or read), nothing else."""
        return self.model_dump(exclude_unset=True)


class PreprocessingRecord(_Record):
    """`preprocessing`: the preprocessing parameters a bundle depends on.

    `derived`: the derived channel names and their fitted power curves, when any
    (preprocessing/derived.py reads it).
    """

    channels: list[str]
    smoothing_length: int
    window_length: int
    nominal_interval_s: float
    gap_factor: float
    derived: dict[str, Any] | None = None

    @classmethod
    def of(cls, p: PreprocessingSettings) -> PreprocessingRecord:
        """The record of configured preprocessing settings (without derived channels)."""
        return cls(
            channels=list(p.channels),
            smoothing_length=p.smoothing_length,
            window_length=p.window_length,
            nominal_interval_s=p.nominal_interval_s,
            gap_factor=p.gap_factor,
        )


class TemperatureSummary(_Record):
    """`training.coverage.temperature_c`: quantiles of normal ambient temperature (C)."""

    min: float
    p1: float
    median: float
    p99: float
    max: float


class WindSummary(_Record):
    """`training.coverage.wind_ms`: range of normal wind speed (m/s)."""

    min: float
    p99: float
    max: float


class Coverage(_Record):
    """`training.coverage`: what the NORMAL readings of the training history cover.

    `temperature_c` and `normal_hours_below_0c` are there when the data has the
    temperature channel, `wind_ms` when it has wind speed.
    """

    turbines: list[str] = Field(default_factory=list)
    period: list[str] | None = None
    normal_readings: int = 0
    warnings: list[str] = Field(default_factory=list)
    temperature_c: TemperatureSummary | None = None
    normal_hours_below_0c: float | None = None
    wind_ms: WindSummary | None = None


class TrainingRecord(_Record):
    """`training`: the data, the fit and its settings.

    Every field is optional (a bundle built by hand may record nothing); the detector's
    own training summary (radius, score statistics, trees, ...) is kept as extra keys.
    """

    turbines: list[str] | None = None
    train_period: list[int] | None = None
    validation_period: list[int] | None = None
    train_windows_available: int | None = None
    validation_windows_available: int | None = None
    assume_normal: bool | None = None
    derived_channels: list[str] | None = None
    coverage: Coverage | None = None
    train_windows: int | None = None
    validation_windows: int | None = None
    epochs: list[dict[str, Any]] | None = None
    fit_seconds: float | None = None
    seed: int | None = None
    settings: dict[str, Any] | None = None
    device: str | None = None


class ValidationRecord(_Record):
    """`validation`: the calibration windows and what the threshold gives on them."""

    windows: int | None = None
    loss: float | None = None
    threshold: float | None = None
    false_positive_rate_at_threshold: float | None = None
    score_quantiles: dict[str, float] | None = None
    clip_fraction: float | None = None
    calibration_basis: str | None = None


class TuningRecord(_Record):
    """`tuning` (after `train --tune N`): the search space, every trial, the chosen values."""

    member: str
    best: dict[str, float]
    criterion: str
    space: dict[str, list[float]]
    trials: list[dict[str, Any]]


class Manifest(_Record):
    """manifest.json: everything inference needs besides the tensors, and provenance.

    Required are the keys loading reads; `weights_sha256` is added on save.
    """

    format_version: int
    name: str
    member: str = ""
    family: str = ""
    kind: str
    hyperparameters: dict[str, Any]
    preprocessing: PreprocessingRecord
    scaler: dict[str, Any]
    threshold: float
    target_fpr: float
    median_normal_score: float | None = None
    training: TrainingRecord = Field(default_factory=TrainingRecord)
    validation: ValidationRecord = Field(default_factory=ValidationRecord)
    package_version: str = ""
    torch_version: str = ""
    created_at: str = ""
    rule: dict[str, Any] | None = None
    calibration_turbines: list[str] = Field(default_factory=list)
    center: list[float] | None = None
    radius: float | None = None
    model_settings: dict[str, Any] | None = None
    tuning: TuningRecord | None = None
    weights_sha256: str | None = None


def read_manifest(path: Path) -> Manifest:
    """Read and check a manifest file.

    Raises:
        BundleError: not JSON, another format version, or keys missing or mistyped.
    """
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        msg = f"{path}: not valid JSON ({exc})"
        raise BundleError(msg) from exc
    version = doc.get("format_version") if isinstance(doc, dict) else None
    if version != FORMAT_VERSION:
        msg = f"{path.parent}: bundle format {version!r}, expected {FORMAT_VERSION}"
        raise BundleError(msg)
    try:
        return Manifest.model_validate(doc)
    except ValidationError as exc:
        msg = f"{path}: not a valid bundle manifest ({exc})"
        raise BundleError(msg) from exc


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Write a manifest file (indented JSON; numpy values as numbers)."""
    path.write_bytes(
        orjson.dumps(manifest.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
