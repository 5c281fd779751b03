"""Core domain types shared by every layer: channels, labels, windows, scores, alarm events.

Also the value records that cross the service's ports: input records, dead letters and
score points (ports.py speaks only these types).

Times are integers of milliseconds since the Unix epoch (UTC) everywhere inside the
package: they compare exactly, they survive JSON and Kafka headers unchanged, and the
InfluxDB-protocol database keeps millisecond precision. Naive times read from files are
taken as UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

#: The 26 WTBI measurement channels, in the order of the released data set (docs/domain).
DEFAULT_CHANNELS: tuple[str, ...] = (
    "wind_speed",
    "generator_speed",
    "power",
    "wind_direction",
    "wind_direction_mean",
    "yaw_position",
    "yaw_speed",
    "pitch1_angle",
    "pitch2_angle",
    "pitch3_angle",
    "pitch1_speed",
    "pitch2_speed",
    "pitch3_speed",
    "pitch1_moto_tmp",
    "pitch2_moto_tmp",
    "pitch3_moto_tmp",
    "acc_x",
    "acc_y",
    "environment_tmp",
    "int_tmp",
    "pitch1_ng5_tmp",
    "pitch2_ng5_tmp",
    "pitch3_ng5_tmp",
    "pitch1_ng5_DC",
    "pitch2_ng5_DC",
    "pitch3_ng5_DC",
)

MS_PER_DAY = 86_400_000


class Label(enum.IntEnum):
    """Ground truth of one reading or window."""

    UNKNOWN = -1  # inside neither a normal nor an icing interval (transition zones)
    NORMAL = 0
    ICING = 1


class AlarmState(enum.StrEnum):
    """The two transitions an alarm event reports."""

    RAISED = "raised"
    CLEARED = "cleared"


class Severity(enum.StrEnum):
    """Operator-facing severity of an alarm, from its peak score relative to the threshold."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class Reading:
    """One SCADA sample of one turbine.

    Attributes:
        turbine_id: the turbine's identifier.
        time_ms: sample time.
        values: float64 array of shape (C,), in the configured channel order.
        group: recording-block id from the source; a change starts a new segment.
    """

    turbine_id: str
    time_ms: int
    values: NDArray[np.float64]
    group: int | None = None


@dataclass(frozen=True, slots=True)
class ReadyWindow:
    """A window of smoothed, unscaled readings, ready to be scaled and scored.

    Attributes:
        turbine_id: the turbine's identifier.
        time_ms: time of the newest smoothed sample in the window (the window's timestamp).
        values: float64 array of shape (L, C): rows are time, columns are channels.
    """

    turbine_id: str
    time_ms: int
    values: NDArray[np.float64]


@dataclass(slots=True)  # not frozen: built once per window, and frozen init is 4x slower
class WindowScore:
    """The scorer's verdict on one window (a value: never changed after it is made).

    Attributes:
        turbine_id: the turbine's identifier.
        time_ms: the window's timestamp.
        score: anomaly score, higher is more anomalous.
        threshold: the decision threshold in force.
        tail_probability: fraction of validation normal scores >= score (calibrated p-value).
        channel_errors: per-channel reconstruction error, shape (C,), or None for models
            without a decoder.
        clip_fraction: fraction of the window's values clipped by the scaler (a drift signal).
        ambient_temp: mean of the ambient-temperature channel over the window, unscaled, or
            None when that channel is not configured (used by the alarm's temperature gate).
        power: mean active power over the window, unscaled, or None (used by the stop gate).
        wind_speed: mean wind speed over the window, unscaled, or None.
        rule: the IEA Task 19 rule's icing condition holds in most of the window's rows.
        flagged: a curtailment or stop flag channel is set over the window.
    """

    turbine_id: str
    time_ms: int
    score: float
    threshold: float
    tail_probability: float
    channel_errors: NDArray[np.float64] | None = None
    clip_fraction: float = 0.0
    ambient_temp: float | None = None
    power: float | None = None
    wind_speed: float | None = None
    rule: bool = False
    flagged: bool = False

    @property
    def above(self) -> bool:
        """Whether the window is above the threshold."""
        return self.score > self.threshold


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """A raise or clear transition of one icing alarm.

    The same input always gives the same `alarm_id` (derived from turbine, start time and
    model version), so a replay after a crash overwrites earlier outputs instead of
    duplicating them.
    """

    alarm_id: str
    turbine_id: str
    state: AlarmState
    start_ms: int
    end_ms: int | None
    event_time_ms: int
    peak_score: float
    threshold: float
    model_name: str
    model_version: str
    severity: Severity
    top_channels: tuple[tuple[str, float], ...] = field(default_factory=tuple)
    windows_above: int = 0
    evidence: str = "model"  # what raised it: "model", "rule" or "model+rule"

    @property
    def duration_ms(self) -> int:
        """Length of the alarm so far (raise) or in total (clear)."""
        end = self.end_ms if self.end_ms is not None else self.event_time_ms
        return max(0, end - self.start_ms)


#: Channels named per window in outputs and alarms (largest excess error first).
TOP_K = 3


@dataclass(slots=True)  # not frozen: built once per message, and frozen init is 4x slower
class InputRecord:
    """One consumed message (or one file row, for replay); a value, never changed.

    Attributes:
        partition, offset: where it came from (replay numbers the rows of partition 0).
        key, value: the message as it came; None for a missing key or a tombstone.
        timestamp_ms: the broker's timestamp (0 when unknown).
        topic: the source topic (or "replay").
    """

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0
    topic: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A rejected record and why (`reason` is one of `errors.Reason`)."""

    record: InputRecord
    reason: str
    detail: str


@dataclass
class ScorePoints:
    """One row per scored window (columnar), and the model that scored them.

    Attributes:
        turbine: turbine id per window.
        time_ms: int64 (n,), window timestamps.
        score, tail_probability, clip_fraction: float64 (n,).
        top_index: int64 (n, TOP_K), channel indices (in the model's channel order) of the
            largest excess errors, -1 when per-channel errors were not computed for that
            window or it had no excess.
        top_share: float64 (n, TOP_K), their shares of the window's excess error.
        threshold: float64 (n,), each window's turbine's threshold in force.
        model: the bundle's name; model_version: its version (name@hash).
    """

    turbine: list[str]
    time_ms: NDArray[np.int64]
    score: NDArray[np.float64]
    tail_probability: NDArray[np.float64]
    clip_fraction: NDArray[np.float64]
    top_index: NDArray[np.int64]
    top_share: NDArray[np.float64]
    threshold: NDArray[np.float64]
    model: str = ""
    model_version: str = ""

    def __len__(self) -> int:
        return len(self.turbine)

    @classmethod
    def empty(cls, model: str = "", model_version: str = "") -> ScorePoints:
        """No windows."""
        return cls(
            [],
            np.empty(0, np.int64),
            np.empty(0),
            np.empty(0),
            np.empty(0),
            np.empty((0, TOP_K), np.int64),
            np.empty((0, TOP_K)),
            np.empty(0),
            model,
            model_version,
        )
