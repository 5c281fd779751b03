"""The database sink's format: score points and alarm events as InfluxDB line protocol.

docs/schemas.md documents it with examples. Everything a dashboard needs is a numeric
field or a tag (string fields are lost on some InfluxDB-protocol databases and are costly
on InfluxDB itself). Every point has a deterministic identity (measurement, tags,
timestamp), so writing it again after a restart overwrites it instead of duplicating it.
"""

from __future__ import annotations

import math

from wtbi_monitor.domain import TOP_K, AlarmEvent, AlarmState, ScorePoints

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "\\\\"})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\\": "\\\\"})


def tag(value: str) -> str:
    """Escape a tag key or value for line protocol."""
    return value.translate(_TAG_ESCAPES)


def measurement(value: str) -> str:
    """Escape a measurement name for line protocol."""
    return value.translate(_MEASUREMENT_ESCAPES)


def _float(value: float) -> str:
    return repr(float(value))  # shortest text that reads back as the same float


def score_lines(points: ScorePoints, name: str) -> list[str]:
    """One line per window: `<name>,model=..,model_version=..,turbine=.. score=..,... <ms>`.

    `model_version` (name@hash) keeps the series of two bundles with the same name apart;
    points without a version leave the tag out.

    Fields: score, threshold, tail_probability, clip_fraction, above (0/1) and, for windows
    whose per-channel errors were computed (score at or above the alarm's clear level),
    top1..top3 (channel index in the configured order) and top1_share..top3_share.
    """
    version = f",model_version={tag(points.model_version)}" if points.model_version else ""
    head = f"{measurement(name)},model={tag(points.model)}{version},turbine="
    lines = []
    heads: dict[str, str] = {}  # per turbine: the escaped series key, made once
    tops = points.top_index.tolist()
    shares = points.top_share.tolist()
    for turbine, time_ms, s, thr, tail, clip, top, share in zip(
        points.turbine,
        points.time_ms.tolist(),
        points.score.tolist(),
        points.threshold.tolist(),
        points.tail_probability.tolist(),
        points.clip_fraction.tolist(),
        tops,
        shares,
        strict=True,
    ):
        series = heads.get(turbine)
        if series is None:
            series = heads[turbine] = f"{head}{tag(turbine)} "
        fields = (
            f"score={s!r},threshold={thr!r},tail_probability={tail!r},"
            f"clip_fraction={clip!r},above={1 if s > thr else 0}i"
        )
        if top[0] >= 0:
            for k in range(TOP_K):
                if top[k] >= 0:
                    fields += f",top{k + 1}={top[k]}i,top{k + 1}_share={share[k]!r}"
        lines.append(f"{series}{fields} {time_ms}")
    return lines


def alarm_tags(event: AlarmEvent) -> dict[str, str]:
    """Tags of an alarm event point (sorted keys)."""
    tags = {
        "alarm_id": event.alarm_id,
        "evidence": event.evidence,
        "model": event.model_name,
        "model_version": event.model_version,
        "severity": event.severity.value,
        "state": event.state.value,
        "turbine": event.turbine_id,
    }
    for k, (channel, _share) in enumerate(event.top_channels[:TOP_K]):
        tags[f"top{k + 1}"] = channel
    return dict(sorted(tags.items()))


def alarm_fields(event: AlarmEvent) -> dict[str, float | int]:
    """Numeric fields of an alarm event point."""
    fields: dict[str, float | int] = {
        "active": 1 if event.state is AlarmState.RAISED else 0,
        "peak_score": event.peak_score,
        "threshold": event.threshold,
        "duration_s": event.duration_ms / 1000,
        "start_s": event.start_ms / 1000,
        "windows_above": event.windows_above,
    }
    for k, (_channel, share) in enumerate(event.top_channels[:TOP_K]):
        fields[f"top{k + 1}_share"] = share
    return fields


def alarm_line(event: AlarmEvent, name: str) -> str:
    """One line per alarm transition, at the transition's window time."""
    tags = ",".join(f"{k}={tag(v)}" for k, v in alarm_tags(event).items())
    fields = []
    for k, v in alarm_fields(event).items():
        if isinstance(v, int):
            fields.append(f"{k}={v}i")
        elif math.isfinite(v):
            fields.append(f"{k}={_float(v)}")
    return f"{measurement(name)},{tags} {','.join(fields)} {event.event_time_ms}"


def lines_of(
    points: ScorePoints, events: list[AlarmEvent], score_measurement: str, alarm_measurement: str
) -> list[str]:
    """Every line of one delivery: the score points, then the alarm transitions."""
    return score_lines(points, score_measurement) + [
        alarm_line(e, alarm_measurement) for e in events
    ]
