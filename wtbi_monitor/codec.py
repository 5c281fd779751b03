"""Wire formats: the reading input contract and the alarm-event output (docs/schemas.md).

Input, one JSON reading per Kafka message, keyed by turbine id:

    {"turbine_id": "T01", "time": "2015-11-01T00:00:07Z" | 1446336007000,
     "values": {"wind_speed": 5.1, ...}, "group": 3}

or the compact array form, values in the configured channel order:

    {"schema": 2, "turbine_id": "T01", "time": 1446336007000, "values": [5.1, ...]}

`RecordDecoder.decode` returns a `Reading` or raises `RecordError` with a machine-readable
reason (the dead-letter header); it never lets a bad record through and never crashes.
"""

from __future__ import annotations

import json
import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import orjson
from numpy.typing import NDArray

from wtbi_monitor.domain import AlarmEvent, Reading
from wtbi_monitor.errors import Reason, RecordError
from wtbi_monitor.preprocessing.validity import ValidRanges

MAX_TURBINE_ID = 64


def parse_time_ms(value: Any) -> int:
    """Epoch milliseconds from an int/float (ms) or an RFC 3339 string (naive = UTC)."""
    if isinstance(value, bool):
        msg = "time must be a number of ms or an RFC 3339 string, not a boolean"
        raise RecordError(Reason.BAD_TIME, msg)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise RecordError(Reason.BAD_TIME, f"time {value!r} is not finite")
        return round(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise RecordError(Reason.BAD_TIME, f"unparseable time {value[:40]!r}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return round(parsed.timestamp() * 1000)
    raise RecordError(Reason.BAD_TIME, f"time has type {type(value).__name__}")


_NUMBER_TYPES = frozenset({float, int})


class _ReadingMessage(msgspec.Struct):
    """The shape of a valid reading message (both schemas), for typed decoding."""

    turbine_id: str
    time: int | float | str
    values: dict[str, float] | list[float]
    schema: int = 1
    group: int | None = None


_READING = msgspec.json.Decoder(_ReadingMessage)


class RecordDecoder:
    """Decode and validate readings for one channel list.

    Args:
        channels: configured channel names, in model order.
        max_bytes: larger payloads are rejected before parsing.
        max_future_s: readings further than this ahead of the wall clock are rejected.
        valid_ranges: per-channel physical bounds; a reading outside is rejected
            (`out_of_range`), as the batch path drops such rows.
        clock: seconds since the epoch (injectable for tests).
    """

    def __init__(
        self,
        channels: tuple[str, ...],
        *,
        max_bytes: int = 16_384,
        max_future_s: float = 300.0,
        valid_ranges: dict[str, tuple[float, float]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.channels = channels
        self.valid = ValidRanges.for_channels(channels, valid_ranges or {})
        self._check_ranges = self.valid.active
        self._channel_set = frozenset(channels)
        self._n_channels = len(channels)
        # Values of an object-form message in channel order, as one C call (a tuple).
        self._ordered: Callable[[dict[str, float]], tuple[float, ...]] = (
            operator.itemgetter(*channels)
            if len(channels) > 1
            else lambda raw: tuple(raw[c] for c in channels)
        )
        self.max_bytes = max_bytes
        self.max_future_ms = round(max_future_s * 1000)
        self.clock = clock

    def decode(self, payload: bytes | None, key: bytes | None = None) -> Reading:
        """Validate one message; raise `RecordError` naming the first problem."""
        if payload is None:
            raise RecordError(Reason.MALFORMED_JSON, "empty message (tombstone)")
        if len(payload) > self.max_bytes:
            detail = f"payload of {len(payload)} bytes exceeds {self.max_bytes}"
            raise RecordError(Reason.TOO_LARGE, detail)
        doc = self._parse(payload)
        if not isinstance(doc, dict):
            raise RecordError(Reason.NOT_AN_OBJECT, f"top level is {type(doc).__name__}")
        for name in ("turbine_id", "time", "values"):
            if name not in doc:
                raise RecordError(Reason.MISSING_FIELD, f"missing field {name!r}")
        schema = doc.get("schema", 1)
        if schema not in (1, 2):
            raise RecordError(Reason.BAD_SCHEMA, f"unknown schema {schema!r} (1 or 2)")
        turbine = doc["turbine_id"]
        if (
            not isinstance(turbine, str)
            or not 0 < len(turbine) <= MAX_TURBINE_ID
            or not turbine.isprintable()
        ):
            detail = f"turbine_id must be 1..{MAX_TURBINE_ID} printable characters"
            raise RecordError(Reason.BAD_TURBINE_ID, detail)
        if key is not None and key.decode("utf-8", "replace") != turbine:
            detail = f"message key {key[:40]!r} differs from turbine_id {turbine!r}"
            raise RecordError(Reason.KEY_MISMATCH, detail)
        time_ms = parse_time_ms(doc["time"])
        horizon = self.clock() * 1000 + self.max_future_ms
        if time_ms > horizon:
            detail = f"time {time_ms} ms is more than {self.max_future_ms} ms ahead of now"
            raise RecordError(Reason.FUTURE_TIME, detail)
        values = self._values(doc["values"], schema)
        group = doc.get("group")
        if group is not None and (isinstance(group, bool) or not isinstance(group, int)):
            raise RecordError(Reason.BAD_GROUP, f"group must be an integer, got {group!r}")
        return Reading(turbine_id=turbine, time_ms=time_ms, values=values, group=group)

    def decode_batch(self, messages: list[tuple[bytes | None, bytes | None]]) -> DecodedBatch:
        """Validate (value, key) messages at once: the same verdicts as `decode`, faster.

        Each message takes a fast path with the fewest Python objects (values as one list
        per reading, one float64 array for the batch, the range check vectorised); a
        message the fast path does not accept goes through `decode`, so every rejection
        has exactly the reason and detail `decode` gives it.
        """
        horizon = self.clock() * 1000 + self.max_future_ms
        records: list[int] = []
        turbines: list[str] = []
        times: list[int] = []
        rows: list[Any] = []
        groups: list[int] = []
        errors: dict[int, RecordError] = {}
        for i, (payload, key) in enumerate(messages):
            try:
                fast = self._fast(payload, key, horizon)
            except Exception:  # noqa: BLE001 - anything unusual: the exact path says why
                fast = None
            if fast is None:
                try:
                    reading = self.decode(payload, key)
                except RecordError as exc:
                    errors[i] = exc
                    continue
                turbine, time_ms, ordered, group = (
                    reading.turbine_id,
                    reading.time_ms,
                    reading.values,
                    reading.group,
                )
            else:
                turbine, time_ms, ordered, group = fast
            records.append(i)
            turbines.append(turbine)
            times.append(time_ms)
            rows.append(ordered)
            groups.append(-1 if group is None else group)
        n_channels = len(self.channels)
        values = np.array(rows, dtype=np.float64).reshape(len(rows), n_channels)
        keep = np.ones(len(rows), dtype=np.bool_)
        for k in np.flatnonzero(~np.isfinite(values).all(axis=1)).tolist():
            # A huge literal the typed decoder read as infinity: `decode` says what it is.
            try:
                self.decode(*messages[records[k]])
            except RecordError as exc:
                errors[records[k]] = exc
                keep[k] = False
        if self._check_ranges:
            for k in np.flatnonzero(self.valid.bad_rows(values)).tolist():
                problem = self.valid.violation(values[k])
                errors[records[k]] = RecordError(Reason.OUT_OF_RANGE, problem or "out of range")
                keep[k] = False
        if not keep.all():
            kept = np.flatnonzero(keep).tolist()
            records = [records[k] for k in kept]
            turbines = [turbines[k] for k in kept]
            values = values[keep]
            times = [times[k] for k in kept]
            groups = [groups[k] for k in kept]
        return DecodedBatch(
            record=records,
            turbine=turbines,
            time_ms=np.array(times, dtype=np.int64),
            values=values,
            group=np.array(groups, dtype=np.int64),
            errors=errors,
        )

    def _fast(
        self, payload: bytes | None, key: bytes | None, horizon: float
    ) -> tuple[str, int, Any, int | None] | None:
        """(turbine, time, values in channel order, group) of a plainly valid message.

        Typed decoding in compiled code (msgspec) checks the structure and every value's
        type at once. None (or an exception) when anything is unusual: `decode` then gives
        the verdict. Ranges and finiteness are checked by decode_batch for the whole batch.
        """
        if payload is None or len(payload) > self.max_bytes:
            return None
        msg = _READING.decode(payload)
        turbine = msg.turbine_id
        if (
            not 0 < len(turbine) <= MAX_TURBINE_ID
            or not turbine.isprintable()
            or (key is not None and key != turbine.encode())
        ):
            return None
        time_value = msg.time
        time_ms = time_value if type(time_value) is int else parse_time_ms(time_value)
        raw = msg.values
        if time_ms > horizon or len(raw) != self._n_channels:
            return None
        if msg.schema == 1 and type(raw) is dict:
            return turbine, time_ms, self._ordered(raw), msg.group  # KeyError: `decode`
        if msg.schema == 2 and type(raw) is list:
            return turbine, time_ms, raw, msg.group
        return None

    @staticmethod
    def _parse(payload: bytes) -> Any:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            # orjson rejects NaN/Infinity; the standard parser accepts them, which lets us
            # name the real problem for producers that wrote them.
            try:
                json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                raise RecordError(Reason.MALFORMED_JSON, str(exc)[:200]) from exc
            raise RecordError(Reason.NON_FINITE, "NaN or Infinity in the message") from exc

    def _values(self, raw: Any, schema: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        if schema == 2:
            if not isinstance(raw, list):
                raise RecordError(Reason.BAD_VALUE_TYPE, "schema 2 values must be a list")
            if len(raw) != len(self.channels):
                detail = f"{len(raw)} values for {len(self.channels)} channels"
                raise RecordError(Reason.WRONG_LENGTH, detail)
            ordered = raw
        else:
            if not isinstance(raw, dict):
                raise RecordError(Reason.BAD_VALUE_TYPE, "values must be an object")
            try:
                ordered = [raw[c] for c in self.channels]
            except KeyError:
                missing = [c for c in self.channels if c not in raw]
                raise RecordError(Reason.MISSING_CHANNELS, f"missing {missing[:5]}") from None
            if len(raw) != len(self.channels):
                unknown = sorted(set(raw) - self._channel_set)
                raise RecordError(Reason.UNKNOWN_CHANNELS, f"unknown {unknown[:5]}")
        if not _NUMBER_TYPES.issuperset(map(type, ordered)):  # bool, str, None, list...
            name, v = next(
                (n, v)
                for n, v in zip(self.channels, ordered, strict=True)
                if type(v) not in _NUMBER_TYPES
            )
            detail = f"{name} is {type(v).__name__}, not a number"
            raise RecordError(Reason.BAD_VALUE_TYPE, detail)
        # One Python sum instead of an elementwise numpy test (numpy is slow on 26 numbers):
        # the sum is finite when every value is; the rare overflow of a sum of huge finite
        # values falls back to the exact test.
        try:
            finite = math.isfinite(sum(ordered)) or all(math.isfinite(v) for v in ordered)
        except OverflowError:  # an integer beyond the float range
            finite = False
        if not finite:
            raise RecordError(Reason.NON_FINITE, "non-finite channel value")
        values = np.array(ordered, dtype=np.float64)
        if self._check_ranges:
            problem = self.valid.violation(values)
            if problem is not None:
                raise RecordError(Reason.OUT_OF_RANGE, problem)
        return values


@dataclass
class DecodedBatch:
    """A micro-batch of messages decoded at once (`RecordDecoder.decode_batch`).

    Attributes:
        record: (n,) index into the batch of each decoded reading, in batch order.
        turbine: turbine id of each decoded reading.
        time_ms: int64 (n,).
        values: float64 (n, C), in the configured channel order.
        group: int64 (n,), -1 where the message has no group.
        errors: batch index -> why that record was rejected.
    """

    record: list[int]
    turbine: list[str]
    time_ms: NDArray[np.int64]
    values: NDArray[np.float64]
    group: NDArray[np.int64]
    errors: dict[int, RecordError]


def encode_reading(
    turbine_id: str,
    time_ms: int,
    values: np.ndarray[Any, np.dtype[np.float64]],
    channels: tuple[str, ...],
    *,
    group: int | None = None,
    compact: bool = False,
) -> bytes:
    """One reading as a message (schema 1 object form, or schema 2 array form)."""
    doc: dict[str, Any] = {"turbine_id": turbine_id, "time": int(time_ms)}
    if compact:
        doc["schema"] = 2
        doc["values"] = values.tolist()
    else:
        doc["values"] = dict(zip(channels, values.tolist(), strict=True))
    if group is not None:
        doc["group"] = int(group)
    return orjson.dumps(doc)


def format_rfc3339(time_ms: int | None) -> str | None:
    """RFC 3339 UTC with milliseconds, or None."""
    if time_ms is None:
        return None
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def alarm_event_to_dict(event: AlarmEvent) -> dict[str, Any]:
    """The alert-topic message for one alarm transition (docs/schemas.md)."""
    return {
        "schema": 1,
        "alarm_id": event.alarm_id,
        "turbine_id": event.turbine_id,
        "state": event.state.value,
        "start": format_rfc3339(event.start_ms),
        "end": format_rfc3339(event.end_ms),
        "event_time": format_rfc3339(event.event_time_ms),
        "start_ms": event.start_ms,
        "end_ms": event.end_ms,
        "event_time_ms": event.event_time_ms,
        "duration_s": event.duration_ms / 1000,
        "peak_score": event.peak_score,
        "threshold": event.threshold,
        "severity": event.severity.value,
        "model_name": event.model_name,
        "model_version": event.model_version,
        "top_channels": [{"channel": c, "share": s} for c, s in event.top_channels],
        "windows_above": event.windows_above,
        "evidence": event.evidence,
    }


def encode_alarm_event(event: AlarmEvent) -> bytes:
    """`alarm_event_to_dict` as JSON bytes."""
    return orjson.dumps(alarm_event_to_dict(event))
