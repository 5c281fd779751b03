"""The streaming processor: input records in, score points, alarm events and dead letters out.

The daemon and `wtbi-monitor replay` both run this class, so a replay of a file gives
exactly the daemon's outputs. It owns the per-turbine state (stream smoothing/windowing
plus the alarm machine) and works in three steps per micro-batch:

1. `prepare` (event loop): decode and validate every record, skip records a restored
   snapshot already contains, feed each turbine's readings to its `StreamState`;
2. `score` (worker thread): scale and score every ready window of the batch, across all
   turbines, in fixed-size chunks; per-channel errors only for windows that can matter to
   an alarm (score at or above the clear level);
3. `finish` (event loop): run each turbine's alarm machine over its windows in time order.

Outputs do not depend on how records are cut into batches: windows are identical to the
batch path (property-tested), scores do not depend on the batch (tested), and each
turbine's alarm machine sees its windows in order.

Recovery: `snapshot(turbine)` captures a turbine's whole state plus the input offset of the
last reading it contains; `restore` loads it, and records at or below that offset are then
skipped, so a snapshot written just before a crash is never applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from wtbi_monitor.alarms import (
    AlarmContext,
    TurbineAlarm,
    gate_columns,
    gates_off,
    lowest_clear_level,
    top_channels,
    window_inputs,
)
from wtbi_monitor.codec import RecordDecoder
from wtbi_monitor.config import AlarmSettings, PreprocessingSettings
from wtbi_monitor.domain import (
    TOP_K,
    AlarmEvent,
    DeadLetterRecord,
    InputRecord,
    ScorePoints,
    WindowScore,
)
from wtbi_monitor.errors import Reason
from wtbi_monitor.logs import get_logger
from wtbi_monitor.model import Bundle
from wtbi_monitor.model.bundle import score_chunked
from wtbi_monitor.preprocessing import StreamState

log = get_logger(__name__)

SNAPSHOT_VERSION = 2  # 2: time-unit alarm machine (re-arm, drift, evidence)


@dataclass
class Prepared:
    """Result of `prepare`: ready windows (grouped by turbine, time order within each)."""

    turbines: list[str]  # turbine of each window
    time_ms: NDArray[np.int64]
    windows: NDArray[np.float64]  # (n, L, C) smoothed, unscaled
    dead_letters: list[DeadLetterRecord]
    touched: set[str]
    last_offsets: dict[int, int]  # partition -> highest offset in the batch
    records: int
    readings: int
    skipped: int
    oldest_timestamp_ms: int | None


@dataclass
class Scored:
    """Result of `score` (computed off the event loop)."""

    score: NDArray[np.float64]
    tail_probability: NDArray[np.float64]
    clip_fraction: NDArray[np.float64]
    channel_means: NDArray[np.float64]
    channel_error: NDArray[np.float64]  # (n, C), zeros where not computed
    has_channels: NDArray[np.bool_]
    rule: NDArray[np.bool_]  # the Task 19 rule's condition per window


@dataclass
class BatchResult:
    """Everything a micro-batch produced."""

    points: ScorePoints
    events: list[AlarmEvent]
    dead_letters: list[DeadLetterRecord]
    touched: set[str]
    last_offsets: dict[int, int]
    records: int = 0
    readings: int = 0
    skipped: int = 0
    oldest_timestamp_ms: int | None = None
    gated: dict[str, int] = field(default_factory=dict)  # windows not counted, per gate
    drift: dict[str, bool] = field(default_factory=dict)  # turbines whose drift flag changed


@dataclass
class _Turbine:
    stream: StreamState
    alarm: TurbineAlarm
    partition: int
    offset: int = -1  # input offset of the last reading this state contains


@dataclass
class _Pending:
    """One turbine's accepted readings of a batch, as rows of the decoded batch."""

    rows: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    partition: int = 0
    last_time: int | None = None


class StreamProcessor:
    """Per-turbine streaming state plus the model: the product's processing core.

    Args:
        bundle: the loaded model bundle (on its device).
        preprocessing: must match the bundle (checked when the bundle was loaded).
        alarm: alarm settings.
        decoder: validates records against the bundle's channels.
        score_batch_size: windows per inference call (fixed-size buckets).
        max_turbines: turbines tracked at once; a reading of a further turbine id is
            dead-lettered (`too_many_turbines`) so that unbounded ids cannot exhaust
            memory (docs/operations.md measures the state per turbine).
    """

    def __init__(
        self,
        bundle: Bundle,
        preprocessing: PreprocessingSettings,
        alarm: AlarmSettings,
        decoder: RecordDecoder,
        score_batch_size: int = 512,
        *,
        max_turbines: int | None = None,
    ) -> None:
        self.bundle = bundle
        self.max_turbines = max_turbines
        self.pre = preprocessing
        self.alarm_settings = alarm
        self.decoder = decoder
        self.score_batch_size = score_batch_size
        self.context: AlarmContext = bundle.alarm_context(alarm)
        # Per-channel errors are computed for windows that can matter to an alarm: at or
        # above the lowest clear level of any turbine.
        self.clear_level = lowest_clear_level(self.context)
        self.turbines: dict[str, _Turbine] = {}
        # Readings carry the source channels; the model also sees the derived ones
        # (power residual, pitch asymmetry), appended per reading before windowing.
        self.derived = bundle.derived
        self.n_inputs = len(self.derived.channels)
        self._gate_index, self._flag_index = gate_columns(preprocessing.channels, alarm)
        for gate, missing in gates_off(preprocessing.channels, alarm).items():
            log.warning("alarm_gate_off", gate=gate, missing_channels=missing)

    # ------------------------------------------------------------------ state

    def _turbine(self, turbine_id: str, partition: int) -> _Turbine:
        t = self.turbines.get(turbine_id)
        if t is None:
            t = _Turbine(
                stream=StreamState(
                    n_channels=self.n_inputs,
                    smoothing_length=self.pre.smoothing_length,
                    window_length=self.pre.window_length,
                    max_gap_ms=self.pre.max_gap_ms,
                ),
                alarm=TurbineAlarm(turbine_id, self.alarm_settings, self.context),
                partition=partition,
            )
            self.turbines[turbine_id] = t
        t.partition = partition
        return t

    def snapshot(self, turbine_id: str) -> bytes:
        """A turbine's whole state (JSON) with the offset of its last reading."""
        t = self.turbines[turbine_id]
        return orjson.dumps(
            {
                "v": SNAPSHOT_VERSION,
                "turbine_id": turbine_id,
                "partition": t.partition,
                "offset": t.offset,
                "model_version": self.context.model_version,
                "stream": t.stream.snapshot(),
                "alarm": t.alarm.snapshot(),
            }
        )

    def restore(self, payload: bytes) -> str:
        """Load a snapshot; returns the turbine id.

        Alarm state from another model version is not restored: its alarm ids would not
        match this model's.
        """
        doc: dict[str, Any] = orjson.loads(payload)
        if doc.get("v") != SNAPSHOT_VERSION:
            msg = f"unknown snapshot version {doc.get('v')!r}"
            raise ValueError(msg)
        turbine_id = str(doc["turbine_id"])
        self.turbines.pop(turbine_id, None)
        t = self._turbine(turbine_id, int(doc["partition"]))
        try:
            t.offset = int(doc["offset"])
            t.stream.restore(doc["stream"])
            if doc.get("model_version") == self.context.model_version:
                t.alarm.restore(doc["alarm"])
        except Exception:
            # Half a restore is worse than none: the turbine would skip records up to the
            # snapshot's offset with state that does not contain them.
            del self.turbines[turbine_id]
            raise
        return turbine_id

    def drop_partitions(self, partitions: set[int]) -> list[str]:
        """Forget the turbines of revoked partitions; returns their ids."""
        gone = [tid for tid, t in self.turbines.items() if t.partition in partitions]
        for tid in gone:
            del self.turbines[tid]
        return gone

    # ------------------------------------------------------------------ steps

    def prepare(self, records: list[InputRecord]) -> Prepared:
        """Decode, validate and window a micro-batch (records in partition-offset order)."""
        dead: list[DeadLetterRecord] = []
        pending: dict[str, _Pending] = {}
        last_offsets: dict[int, int] = {}
        skipped = 0
        new_turbines = 0  # ids of this batch not tracked yet
        oldest: int | None = None
        batch = self.decoder.decode_batch([(r.value, r.key) for r in records])
        errors = batch.errors
        row_of = dict(zip(batch.record, range(len(batch.record)), strict=True))
        times_of = batch.time_ms.tolist()
        for i, rec in enumerate(records):
            last_offsets[rec.partition] = max(rec.offset, last_offsets.get(rec.partition, -1))
            row = row_of.get(i)
            if row is None:
                exc = errors[i]
                dead.append(DeadLetterRecord(rec, exc.reason, exc.detail))
                continue
            turbine_id = batch.turbine[row]
            time_ms = times_of[row]
            known = self.turbines.get(turbine_id)
            if (
                known is None
                and self.max_turbines is not None
                and turbine_id not in pending
                and len(self.turbines) + new_turbines >= self.max_turbines
            ):
                detail = f"already tracking {self.max_turbines} turbines (service.max_turbines)"
                dead.append(DeadLetterRecord(rec, Reason.TOO_MANY_TURBINES, detail))
                continue
            if (
                known is not None
                and rec.offset <= known.offset
                and rec.partition == known.partition
            ):
                skipped += 1  # already inside a restored snapshot
                continue
            p = pending.get(turbine_id)
            if p is None:
                p = _Pending(partition=rec.partition)
                pending[turbine_id] = p
                new_turbines += known is None
                p.last_time = known.stream.last_time_ms if known is not None else None
            if p.last_time is not None and time_ms <= p.last_time:
                reason = Reason.DUPLICATE_TIME if time_ms == p.last_time else Reason.OUT_OF_ORDER
                detail = f"time {time_ms} ms is not after the turbine's last {p.last_time} ms"
                dead.append(DeadLetterRecord(rec, reason, detail))
                continue
            p.last_time = time_ms
            p.rows.append(row)
            p.offsets.append(rec.offset)
            if rec.timestamp_ms and (oldest is None or rec.timestamp_ms < oldest):
                oldest = rec.timestamp_ms
        turbines: list[str] = []
        times: list[NDArray[np.int64]] = []
        windows: list[NDArray[np.float64]] = []
        readings = 0
        for tid, p in pending.items():
            if not p.rows:  # every reading of this turbine in the batch was rejected
                continue
            t = self._turbine(tid, p.partition)
            rows = np.asarray(p.rows, dtype=np.intp)
            out = t.stream.push_many(
                batch.time_ms[rows],
                self.derived.apply(tid, batch.values[rows]),
                batch.group[rows],
            )
            t.offset = p.offsets[-1]
            readings += len(p.rows)
            if len(out):
                turbines.extend([tid] * len(out))
                times.append(out.time_ms)
                windows.append(out.values)
        c, ln = self.n_inputs, self.pre.window_length
        return Prepared(
            turbines=turbines,
            time_ms=np.concatenate(times) if times else np.empty(0, np.int64),
            windows=np.concatenate(windows) if windows else np.empty((0, ln, c)),
            dead_letters=dead,
            touched={tid for tid, p in pending.items() if p.rows},
            last_offsets=last_offsets,
            records=len(records),
            readings=readings,
            skipped=skipped,
            oldest_timestamp_ms=oldest,
        )

    def prepare_readings(
        self,
        turbine_id: str,
        time_ms: NDArray[np.int64],
        values: NDArray[np.float64],
        groups: NDArray[np.int64],
        offsets: NDArray[np.int64],
        *,
        dead_letters: list[DeadLetterRecord] | None = None,
    ) -> Prepared:
        """`prepare` for one turbine's readings given as arrays (a file replay's fast path).

        The readings must be ones the decoder accepts (the caller sends the others to
        `dead_letters`), in the decoder's channel order, with their input offsets.
        `groups` holds -1 where a reading has none, as in a decoded batch. The records of
        the batch are the readings plus the dead letters.

        Raises:
            RecordError: a time is not strictly after the one before it or the turbine's
                last reading (`StreamState.push_many`; nothing is consumed).
        """
        dead = dead_letters or []
        k = int(time_ms.shape[0])
        c, ln = self.n_inputs, self.pre.window_length
        times, windows = np.empty(0, np.int64), np.empty((0, ln, c))
        if k:
            t = self._turbine(turbine_id, 0)
            out = t.stream.push_many(time_ms, self.derived.apply(turbine_id, values), groups)
            t.offset = int(offsets[-1])  # the last reading the state contains, as in prepare
            times, windows = out.time_ms, out.values
        seen = [*offsets[-1:].tolist(), *(d.record.offset for d in dead)]  # readings ascend
        return Prepared(
            turbines=[turbine_id] * int(times.shape[0]),
            time_ms=times,
            windows=windows,
            dead_letters=dead,
            touched={turbine_id} if k else set(),
            last_offsets={0: max(seen, default=-1)},
            records=k + len(dead),
            readings=k,
            skipped=0,
            oldest_timestamp_ms=None,
        )

    def score(self, prepared: Prepared) -> Scored:
        """Score every window of the batch (off the event loop: touches only the model).

        One call at a time: on CUDA the model replays graphs with static buffers.

        The one chunked scorer (`score_chunked`) in chunks of `score_batch_size`; windows
        at or above the clear level also get per-channel errors (for alarm attribution),
        decoded from the same forward pass.
        """
        windows = prepared.windows
        n = windows.shape[0]
        out = score_chunked(
            self.bundle,
            lambda index: windows[index[0] : index[-1] + 1],  # chunks are contiguous
            n,
            chunk=self.score_batch_size,
            channels_at=self.clear_level,
        )
        errors = out.channel_error
        if errors is None:
            errors = np.zeros((n, self.n_inputs))
            has = np.zeros(n, dtype=np.bool_)
        else:
            has = out.score >= self.clear_level
        rule = out.rule if out.rule is not None else np.zeros(n, dtype=np.bool_)
        return Scored(
            out.score, out.tail_probability, out.clip_fraction, out.channel_means, errors, has, rule
        )

    def finish(self, prepared: Prepared, scored: Scored) -> BatchResult:
        """Run the alarm machines over the scored windows; assemble the outputs."""
        events: list[AlarmEvent] = []
        n = len(prepared.turbines)
        top_index = np.full((n, TOP_K), -1, dtype=np.int64)
        top_share = np.zeros((n, TOP_K))
        hot = np.flatnonzero(scored.has_channels)
        if hot.size:
            top_index[hot], top_share[hot] = top_channels(
                scored.channel_error[hot], self.context.channel_reference
            )
        inputs = window_inputs(
            scored.channel_means, self._gate_index, self._flag_index, scored.rule
        )
        # Python lists: element access on numpy arrays costs far more per window.
        times = prepared.time_ms.tolist()
        scores = scored.score.tolist()
        tails = scored.tail_probability.tolist()
        clips = scored.clip_fraction.tolist()
        has = scored.has_channels.tolist()
        temperature, power, wind = inputs.temperature, inputs.power, inputs.wind
        rule, flagged = inputs.rule, inputs.flagged
        thresholds = np.empty(n)
        gated: dict[str, int] = {}
        drift: dict[str, bool] = {}
        for i, tid in enumerate(prepared.turbines):
            machine = self.turbines[tid].alarm
            threshold = machine.levels.threshold
            thresholds[i] = threshold
            before = machine.drifting
            w = WindowScore(  # the fields of `inputs.at(i)` spelled out: no dict per window
                turbine_id=tid,
                time_ms=times[i],
                score=scores[i],
                threshold=threshold,
                tail_probability=tails[i],
                channel_errors=scored.channel_error[i] if has[i] else None,
                clip_fraction=clips[i],
                ambient_temp=temperature[i],
                power=power[i],
                wind_speed=wind[i],
                rule=rule[i],
                flagged=flagged[i],
            )
            event = machine.update(w)
            if machine.last_gate is not None:
                gated[machine.last_gate] = gated.get(machine.last_gate, 0) + 1
            if machine.drifting != before:
                drift[tid] = machine.drifting
            if event is not None:
                events.append(event)
        points = ScorePoints(
            turbine=prepared.turbines,
            time_ms=prepared.time_ms,
            score=scored.score,
            tail_probability=scored.tail_probability,
            clip_fraction=scored.clip_fraction,
            top_index=top_index,
            top_share=top_share,
            threshold=thresholds,
            model=self.bundle.name,
            model_version=self.bundle.version,
        )
        return BatchResult(
            points=points,
            events=events,
            dead_letters=prepared.dead_letters,
            touched=prepared.touched,
            last_offsets=prepared.last_offsets,
            records=prepared.records,
            readings=prepared.readings,
            skipped=prepared.skipped,
            oldest_timestamp_ms=prepared.oldest_timestamp_ms,
            gated=gated,
            drift=drift,
        )

    def process(self, records: list[InputRecord]) -> BatchResult:
        """All three steps in the calling thread (replay, tests)."""
        prepared = self.prepare(records)
        return self.finish(prepared, self.score(prepared))
