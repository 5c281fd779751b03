"""The service's control flow (wtbi_monitor/service.py) with in-memory ports.

A real StreamProcessor on the tiny bundle; the source, the sinks and the state store are
in-memory fakes that record what they were asked and can be told to fail. Every wait is on
a condition (with a deadline), never on a sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from tests.conftest import TINY_SETTINGS
from wtbi_monitor import delivery as delivery_module
from wtbi_monitor import service as service_module
from wtbi_monitor.codec import RecordDecoder
from wtbi_monitor.config import ServiceSettings, Settings
from wtbi_monitor.domain import AlarmEvent, DeadLetterRecord, InputRecord, ScorePoints
from wtbi_monitor.errors import Reason, SinkError
from wtbi_monitor.replay import frames_to_messages
from wtbi_monitor.scoring import BatchResult, StreamProcessor
from wtbi_monitor.service import Service

SETTINGS = Settings(**TINY_SETTINGS)
STREAM_MINUTES = 45
GARBAGE_EVERY = 40  # one malformed record per 40 of a partition: every batch has dead letters
FAST = {
    "max_batch_records": 100,  # 50 records of each of the two partitions per batch
    "max_wait_ms": 5,
    "commit_interval_s": 0.05,
    "retry_initial_s": 0.02,
    "retry_max_s": 0.1,
    "watchdog_unready_s": 30.0,
    "watchdog_restart_s": 60.0,
    "shutdown_timeout_s": 1.0,
}


# ---------------------------------------------------------------------- in-memory ports


class FakeSource:
    """Partitions of InputRecords; positions, pause, commits, lag and rebalances in memory."""

    def __init__(self, partitions: dict[int, list[InputRecord]], journal: list) -> None:
        self.data = partitions
        self.journal = journal
        self.available = {p: len(r) for p, r in partitions.items()}  # highwater marks
        self.assigned = set(partitions)
        self.position = dict.fromkeys(partitions, 0)
        self.committed: dict[int, int] = {}
        self.commits: list[dict[int, int]] = []
        self.fetched: list[list[InputRecord]] = []
        self.handler: Any = None
        self.paused = False
        self.pauses = self.resumes = 0
        self.fetches_while_paused = 0
        self.stalled = False  # fetch returns nothing while lag() reports records
        self.broker_down = False  # check() raises
        self.checks = self.restarts = 0
        self.started = self.stopped = False

    def set_handler(self, handler: Any) -> None:
        self.handler = handler

    async def start(self) -> None:
        self.started = True
        await self.handler.on_assigned(set(self.assigned))

    async def stop(self) -> None:
        self.stopped = True

    async def restart(self) -> None:
        """A new consumer: it rejoins, resumes from the committed offsets and is assigned."""
        self.restarts += 1
        self.stalled = False
        for p in self.position:
            self.position[p] = self.committed.get(p, 0)
        await self.handler.on_assigned(set(self.assigned))

    async def recreate_topics(self) -> list[str]:
        return []

    @property
    def input_topic(self) -> str:
        return "readings"

    async def check(self) -> set[str]:
        self.checks += 1
        await asyncio.sleep(0)
        if self.broker_down:
            msg = "broker unreachable"
            raise ConnectionError(msg)
        return set()

    async def fetch(self, max_records: int, timeout_ms: int) -> list[InputRecord]:
        await asyncio.sleep(0)
        if self.paused:
            self.fetches_while_paused += 1
        batch = [] if self.paused or self.stalled else self._take(max_records)
        if not batch:
            await asyncio.sleep(timeout_ms / 1000)  # a real poll waits for data
            return []
        self.fetched.append(batch)
        return batch

    def _take(self, max_records: int) -> list[InputRecord]:
        parts = sorted(self.assigned)
        per = max(1, max_records // max(1, len(parts)))
        out: list[InputRecord] = []
        for p in parts:
            lo = self.position[p]
            hi = min(self.available[p], lo + per)
            out += self.data[p][lo:hi]
            self.position[p] = hi
        return out

    async def commit(self, offsets: dict[int, int]) -> None:
        await asyncio.sleep(0)
        self.commits.append(dict(offsets))
        self.committed.update(offsets)
        self.journal.append(("commit", dict(offsets)))

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        self.paused = False
        self.resumes += 1

    def assignment(self) -> set[int]:
        return set(self.assigned)

    def lag(self) -> dict[int, int]:
        return {p: self.available[p] - self.position[p] for p in self.assigned}

    # the test plays the group coordinator
    async def revoke(self, partitions: set[int]) -> None:
        await self.handler.on_revoked(set(partitions))
        self.assigned -= partitions
        for p in partitions:
            self.position.pop(p)

    async def assign(self, partitions: set[int]) -> None:
        self.assigned |= partitions
        for p in partitions:
            self.position[p] = self.committed.get(p, 0)
        await self.handler.on_assigned(set(partitions))


class FakeSink:
    """Records every call; fails the call that would be its `k`-th acknowledged one."""

    def __init__(self, name: str, journal: list) -> None:
        self.name = name
        self.journal = journal
        self.acked: list[list] = []
        self.calls: list[tuple[list, SinkError | None, Any]] = []  # payload, error, probe
        self.plan: dict[int, list[SinkError]] = {}
        self.broken_from: int | None = None  # fail every call from this acknowledged count on
        self.broken_kind: dict[str, Any] = {}
        self.probe: Callable[[], Any] | None = None

    def fail(
        self, at: int, times: int = 1, *, retryable: bool = True, retry_after_s: float | None = None
    ) -> None:
        self.plan[at] = [
            SinkError(f"{self.name} down", retryable=retryable, retry_after_s=retry_after_s)
            for _ in range(times)
        ]

    def fail_forever(self, at: int) -> None:
        self.broken_from = at

    @property
    def failures(self) -> list[tuple[list, SinkError, Any]]:
        return [c for c in self.calls if c[1] is not None]

    async def _call(self, payload: list) -> None:
        await asyncio.sleep(0)
        seen = self.probe() if self.probe else None
        k = len(self.acked)
        error = None
        if self.broken_from is not None and k >= self.broken_from:
            error = SinkError(f"{self.name} gone", retryable=True)
        elif self.plan.get(k):
            error = self.plan[k].pop(0)
        self.calls.append((list(payload), error, seen))
        if error is not None:
            raise error
        self.acked.append(list(payload))
        self.journal.append((self.name, list(payload)))


class FakeDatabase(FakeSink):
    """Acknowledges (kind, key..., value) rows: one per score point, one per alarm event."""

    async def write(self, points: ScorePoints, events: list[AlarmEvent]) -> int:
        rows: list[tuple] = [
            ("score", tid, int(t), float(v))
            for tid, t, v in zip(points.turbine, points.time_ms, points.score, strict=True)
        ]
        rows += [("alarm", e.alarm_id, e.state.value) for e in events]
        await self._call(rows)
        return 0


class FakeAlerts(FakeSink):
    async def publish(self, events: list[AlarmEvent]) -> None:
        await self._call(events)


class FakeDeadLetters(FakeSink):
    async def publish(self, letters: list[DeadLetterRecord]) -> None:
        await self._call(letters)


class FakeState:
    """Latest snapshot per turbine; `corrupt` partitions load as garbage bytes."""

    def __init__(self, journal: list) -> None:
        self.journal = journal
        self.latest: dict[str, bytes] = {}
        self.corrupt: set[int] = set()
        self.loads: list[set[int]] = []

    async def save(self, snapshots: list[tuple[str, bytes]]) -> None:
        await asyncio.sleep(0)
        self.latest.update(snapshots)
        self.journal.append(("save", {tid: orjson.loads(s) for tid, s in snapshots}))

    async def load(self, partitions: set[int]) -> list[bytes]:
        await asyncio.sleep(0)
        self.loads.append(set(partitions))
        out = []
        for snapshot in self.latest.values():
            p = orjson.loads(snapshot)["partition"]
            if p in partitions:
                out.append(b"\x00\xffnot a snapshot" if p in self.corrupt else snapshot)
        return out


class RecordingLog:
    """Stands in for service.py's structlog logger."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict]] = []

    def bind(self, **_: Any) -> RecordingLog:
        return self

    def __getattr__(self, level: str) -> Callable[..., None]:
        def emit(event: str, *_: Any, **kw: Any) -> None:
            self.records.append((level, event, kw))

        return emit

    def events(self, level: str | None = None) -> list[str]:
        return [e for lv, e, _ in self.records if level is None or lv == level]


@pytest.fixture(autouse=True)
def logs(monkeypatch) -> RecordingLog:
    recorder = RecordingLog()
    monkeypatch.setattr(service_module, "log", recorder)
    monkeypatch.setattr(delivery_module, "log", recorder)
    return recorder


# ---------------------------------------------------------------------- the stream


@pytest.fixture(scope="module")
def stream(tiny_farm) -> dict[int, list[InputRecord]]:
    """45 minutes of both turbines, one partition per turbine, with malformed records."""
    msgs = frames_to_messages(tiny_farm, SETTINGS.preprocessing.channels)
    end = msgs[0][0] + STREAM_MINUTES * 60_000
    turbines = sorted({t for _, t, _ in msgs})
    parts: dict[int, list[InputRecord]] = {p: [] for p in range(len(turbines))}
    for time_ms, tid, value in msgs:
        if time_ms >= end:
            break
        p = turbines.index(tid)
        if len(parts[p]) % GARBAGE_EVERY == GARBAGE_EVERY // 2:
            parts[p].append(InputRecord(p, len(parts[p]), tid.encode(), b"{oops"))
        parts[p].append(InputRecord(p, len(parts[p]), tid.encode(), value))
    return parts


def turbine_of(stream, partition: int) -> str:
    return stream[partition][0].key.decode()


def decoder(bundle) -> RecordDecoder:
    return RecordDecoder(
        bundle.source_channels, max_future_s=1e12, valid_ranges=SETTINGS.preprocessing.valid_ranges
    )


def new_processor(bundle, threshold: float | None = None) -> StreamProcessor:
    if threshold is not None:
        bundle = dataclasses.replace(bundle, threshold_override=threshold)
    return StreamProcessor(bundle, SETTINGS.preprocessing, SETTINGS.alarm, decoder(bundle), 256)


def all_records(stream) -> list[InputRecord]:
    return [r for p in sorted(stream) for r in stream[p]]


@pytest.fixture(scope="module")
def threshold(tiny_bundle, stream) -> float:
    """A threshold at a quantile of the stream's own scores: alarms are raised and cleared."""
    scores = new_processor(tiny_bundle).process(all_records(stream)).points.score
    return float(np.quantile(scores, 0.8))


@dataclasses.dataclass
class Outputs:
    points: dict[tuple[str, int], float]
    point_keys: list[tuple[str, int]]
    alarm_keys: list[tuple[str, str]]
    alerts: list[tuple[str, str, int, int]]
    dead: list[tuple[int, int, str]]


def event_key(e: dict | Any) -> tuple[str, str, int, int]:
    if isinstance(e, dict):
        return (e["alarm_id"], e["state"], e["start_ms"], e["end_ms"])
    return (e.alarm_id, e.state.value, e.start_ms, e.end_ms)


def outputs_of(results: list[BatchResult]) -> Outputs:
    keys = [
        (tid, int(t))
        for r in results
        for tid, t in zip(r.points.turbine, r.points.time_ms, strict=True)
    ]
    scores = [float(s) for r in results for s in r.points.score]
    events = [event_key(e) for r in results for e in r.events]
    dead = [
        (d.record.partition, d.record.offset, d.reason) for r in results for d in r.dead_letters
    ]
    return Outputs(
        dict(zip(keys, scores, strict=True)), keys, [e[:2] for e in events], events, dead
    )


@pytest.fixture(scope="module")
def reference(tiny_bundle, stream, threshold) -> Outputs:
    """An uninterrupted run of a fresh processor over the whole stream."""
    ref = outputs_of([new_processor(tiny_bundle, threshold).process(all_records(stream))])
    states = {s for _, s in ref.alarm_keys}
    assert states >= {"raised", "cleared"}, "the stream should raise and clear alarms"
    assert {r for *_, r in ref.dead} == {Reason.MALFORMED_JSON}
    return ref


def delivered(h: Harness) -> Outputs:
    """What the fake sinks acknowledged, in order (duplicates kept)."""
    points: dict[tuple[str, int], float] = {}
    point_keys, alarm_keys = [], []
    for batch in h.database.acked:
        for kind, *row in batch:
            if kind == "score":
                tid, ts, score = row
                point_keys.append((tid, ts))
                points[tid, ts] = score
            else:
                alarm_keys.append(tuple(row))
    alerts = [event_key(e) for batch in h.alerts.acked for e in batch]
    dead = [(d.record.partition, d.record.offset, d.reason) for b in h.dead.acked for d in b]
    return Outputs(points, point_keys, alarm_keys, alerts, dead)


def assert_same_outputs(got: Outputs, want: Outputs, *, missing: set | None = None) -> None:
    """No duplicates, nothing lost (except `missing` score points), the same scores."""
    assert len(got.point_keys) == len(set(got.point_keys)), "duplicate score points"
    assert set(got.point_keys) == set(want.points) - (missing or set())
    keys = sorted(got.points)
    np.testing.assert_allclose(
        [got.points[k] for k in keys], [want.points[k] for k in keys], rtol=1e-6, atol=1e-9
    )
    assert len(got.alerts) == len(set(got.alerts)), "duplicate alert messages"
    assert sorted(got.alerts) == sorted(want.alerts)
    assert sorted(got.alarm_keys) == sorted(want.alarm_keys)
    assert len(got.dead) == len(set(got.dead)), "duplicate dead letters"
    assert sorted(got.dead) == sorted(want.dead)


# ---------------------------------------------------------------------- the harness


@dataclasses.dataclass
class Harness:
    source: FakeSource
    database: FakeDatabase
    alerts: FakeAlerts
    dead: FakeDeadLetters
    state: FakeState
    service: Service
    journal: list
    stop: asyncio.Event
    task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.service.run(self.stop))

    async def until(self, check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.task is not None and self.task.done():
                self.task.result()  # raises the service's exception, if any
                pytest.fail(f"the service stopped while waiting for {what}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.005)

    async def finish(self, timeout: float = 10.0) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout)
        assert self.source.stopped

    def end(self) -> dict[int, int]:
        return {p: len(r) for p, r in self.source.data.items()}

    def delivered_next(self) -> dict[int, int]:
        """Per partition: the offset after the last batch the service reported delivered."""
        out: dict[int, int] = {}
        for kind, item in self.journal:
            if kind == "delivered":
                for p, o in item.items():
                    out[p] = max(out.get(p, 0), o + 1)
        return out

    async def run_to_end(self) -> None:
        """Deliver the whole stream, stop, and check that the final commit covers it."""
        await self.until(lambda: self.delivered_next() == self.end(), "the whole stream delivered")
        await self.finish()
        assert self.source.committed == self.end()

    def gauge(self, metric: Any) -> float:
        return metric._value.get()

    def sample(self, name: str, **labels: str) -> float:
        return self.service.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def make(tiny_bundle, stream, threshold):
    def build(**settings: Any) -> Harness:
        journal: list = []
        source = FakeSource(stream, journal)
        database = FakeDatabase("points", journal)
        alerts = FakeAlerts("alerts", journal)
        dead = FakeDeadLetters("dead_letters", journal)
        state = FakeState(journal)
        service = Service(
            processor=new_processor(tiny_bundle, threshold),
            source=source,
            database=database,
            alerts=alerts,
            dead_letters=dead,
            state=state,
            settings=ServiceSettings(**{**FAST, **settings}),
            on_delivered=lambda result, _now: journal.append(
                ("delivered", dict(result.last_offsets))
            ),
        )
        h = Harness(source, database, alerts, dead, state, service, journal, asyncio.Event())

        def probe() -> dict[str, Any]:
            last = source.fetched[-1] if source.fetched else []
            first: dict[int, int] = {}
            for r in last:
                first.setdefault(r.partition, r.offset)
            return {
                "paused": source.paused,
                "paused_gauge": h.gauge(service.metrics.paused),
                "sinks_ok": service.health.sinks_ok,
                "committed": dict(source.committed),
                "batch_first": first,
            }

        for sink in (database, alerts, dead):
            sink.probe = probe
        return h

    return build


def assert_commits_follow_deliveries_and_snapshots(h: Harness, stream) -> None:
    """Walk the journal: every commit covers delivered batches only, after their snapshots,
    and after every dead letter below the committed offsets was acknowledged."""
    delivered_next: dict[int, int] = {}
    saved_since_commit: set[str] = set()
    dead_acked: set[tuple[int, int]] = set()
    garbage = {(r.partition, r.offset) for p in stream for r in stream[p] if r.value == b"{oops"}
    commits = 0
    for kind, item in h.journal:
        if kind == "delivered":
            for p, o in item.items():
                delivered_next[p] = max(delivered_next.get(p, 0), o + 1)
        elif kind == "save":
            saved_since_commit |= set(item)
        elif kind == "dead_letters":
            dead_acked |= {(d.record.partition, d.record.offset) for d in item}
        elif kind == "commit":
            commits += 1
            for p, o in item.items():
                assert o <= delivered_next.get(p, 0), f"partition {p}: {o} committed undelivered"
                assert turbine_of(stream, p) in saved_since_commit, "commit before its snapshot"
                assert {g for g in garbage if g[0] == p and g[1] < o} <= dead_acked
            saved_since_commit.clear()
    assert commits > 0


# ---------------------------------------------------------------------- 1. commits


@pytest.mark.parametrize("failing", ["dead_letters", "points", "alerts"])
async def test_offsets_are_committed_only_after_every_sink_acknowledged(
    make, stream, reference, failing
):
    h = make()
    sink = {"dead_letters": h.dead, "points": h.database, "alerts": h.alerts}[failing]
    sink.fail(at=1, times=3)
    h.start()
    await h.run_to_end()
    assert len(sink.failures) == 3
    for _payload, _error, seen in sink.failures:
        # while the batch in hand is undelivered, none of its offsets is committed
        for p, first in seen["batch_first"].items():
            assert seen["committed"].get(p, 0) <= first
    assert_commits_follow_deliveries_and_snapshots(h, stream)
    # the last snapshot of each turbine holds everything below the committed offsets
    for p, offset in h.source.committed.items():
        snap = orjson.loads(h.state.latest[turbine_of(stream, p)])
        last_valid = max(r.offset for r in stream[p] if r.value != b"{oops")
        assert snap["offset"] == last_valid < offset
    assert_same_outputs(delivered(h), reference)


# ---------------------------------------------------------------------- 2. retryable failures


async def test_retryable_failures_pause_the_input_and_resume_without_loss_or_duplicates(
    make, reference, logs
):
    h = make()
    h.dead.fail(at=0, times=2)
    h.database.fail(at=2, times=3, retry_after_s=0.03)
    h.alerts.fail(at=0, times=2)
    h.start()
    await h.run_to_end()
    for sink in (h.dead, h.database, h.alerts):
        assert sink.failures, f"{sink.name} never failed"
        # a retry of a failed write: the input is paused and the health says why
        retries = [seen for _, error, seen in sink.calls if error is None and seen["paused"]]
        failed_then_retried = [
            seen for i, (_, error, seen) in enumerate(sink.calls) if i and sink.calls[i - 1][1]
        ]
        assert failed_then_retried
        for seen in failed_then_retried:
            assert seen["paused"]
            assert seen["paused_gauge"] == 1
            assert seen["sinks_ok"] is False
        assert retries
        assert h.sample("wtbi_sink_errors_total", sink=sink.name, kind="retryable") == len(
            sink.failures
        )
    assert h.source.pauses >= 1
    assert h.source.pauses == h.source.resumes
    assert h.source.fetches_while_paused >= 1, "the paused consumer was not polled"
    assert not h.source.paused
    assert h.gauge(h.service.metrics.paused) == 0
    assert h.service.health.sinks_ok
    assert "sinks_recovered" in logs.events()
    # every step was acknowledged once: nothing redone, nothing lost
    assert_same_outputs(delivered(h), reference)
    delivered_batches = sum(1 for kind, _ in h.journal if kind == "delivered")
    assert len(h.dead.acked) == delivered_batches  # every batch has one malformed record
    assert len(h.dead.calls) == delivered_batches + 2


# ---------------------------------------------------------------------- 3. permanent failures


async def test_a_permanent_failure_is_not_retried_and_the_service_goes_on(make, reference, logs):
    h = make()
    h.database.fail(at=2, retryable=False)
    h.start()
    await h.run_to_end()
    ((lost, _error, _seen),) = h.database.failures
    # called once for that batch: the refused lines are never sent again
    assert len(h.database.calls) == len(h.database.acked) + 1
    assert all(payload != lost for payload, *_ in h.database.calls[3:])
    lost_points = {(tid, ts) for kind, tid, ts, *_ in lost if kind == "score"}
    assert lost_points
    got = delivered(h)
    lost_alarms = [(alarm_id, state) for kind, alarm_id, state, *_ in lost if kind == "alarm"]
    want = dataclasses.replace(
        reference, alarm_keys=[k for k in reference.alarm_keys if k not in lost_alarms]
    )
    assert_same_outputs(got, want, missing=lost_points)  # the batch's other steps delivered
    assert h.sample("wtbi_sink_errors_total", sink="points", kind="permanent") == 1
    assert h.sample("wtbi_sink_errors_total", sink="points", kind="retryable") == 0
    assert h.sample("wtbi_outputs_dropped_total", sink="points") == len(lost)
    assert logs.events("error"), "a dropped step is logged as an error"
    assert not h.source.paused
    assert h.gauge(h.service.metrics.paused) == 0
    assert h.service.health.sinks_ok
    assert h.source.committed == h.end()


# ---------------------------------------------------------------------- 4. rebalances


async def rebalance(h: Harness, stream, *, corrupt: bool) -> None:
    """Consume half of each partition, revoke partition 1, assign it back, consume the rest."""
    half = {p: len(r) // 2 for p, r in stream.items()}
    h.source.available = dict(half)
    h.start()
    await h.until(lambda: h.delivered_next() == half, "the first half delivered")
    assert h.source.commits == [], "no periodic commit with this commit interval"
    await h.source.revoke({1})
    assert h.source.commits == [half], "on_revoked commits what was delivered"
    saved = next(i for i, (kind, _) in enumerate(h.journal) if kind == "save")
    assert saved < h.journal.index(("commit", half))
    assert turbine_of(stream, 1) not in h.service.processor.turbines
    assert turbine_of(stream, 0) in h.service.processor.turbines
    if corrupt:
        h.state.corrupt = {1}
    await h.source.assign({1})
    assert h.state.loads[-1] == {1}
    restored = turbine_of(stream, 1) in h.service.processor.turbines
    assert restored is not corrupt
    h.source.available = h.end()
    await h.run_to_end()


async def test_revoke_commits_and_drops_then_assign_restores_from_snapshots(
    make, stream, reference, logs
):
    h = make(commit_interval_s=3600.0)
    await rebalance(h, stream, corrupt=False)
    assert "state_snapshot_unusable" not in logs.events()
    # the restored turbine continued exactly: no warm-up gap, same alarms
    assert_same_outputs(delivered(h), reference)


async def test_an_unusable_snapshot_costs_the_turbine_a_warm_up_not_the_service(
    make, stream, reference, logs
):
    h = make(commit_interval_s=3600.0)
    await rebalance(h, stream, corrupt=True)
    assert "state_snapshot_unusable" in logs.events("warning")
    got = delivered(h)
    fresh = turbine_of(stream, 1)
    assert len(got.point_keys) == len(set(got.point_keys))
    kept = {k: v for k, v in reference.points.items() if k[0] != fresh}
    assert {k for k in got.points if k[0] != fresh} == set(kept)
    # the fresh turbine is scored again after its warm-up, with the same scores
    half_time = max(
        t for (tid, t) in got.points if tid == fresh and (tid, t) in points_before_first_commit(h)
    )
    after = sorted(t for (tid, t) in got.points if tid == fresh and t > half_time)
    want_after = sorted(t for (tid, t) in reference.points if tid == fresh and t > half_time)
    assert after, "the turbine was not scored again"
    assert set(after) < set(want_after)
    assert after == want_after[len(want_after) - len(after) :], "a gap only at the start"
    gap = len(want_after) - len(after)
    assert 0 < gap <= SETTINGS.preprocessing.window_length + SETTINGS.preprocessing.smoothing_length
    np.testing.assert_allclose(
        [got.points[k] for k in sorted(got.points)],
        [reference.points[k] for k in sorted(got.points)],
        rtol=1e-6,
        atol=1e-9,
    )
    assert h.source.committed == h.end()


def points_before_first_commit(h: Harness) -> set[tuple[str, int]]:
    """Score points acknowledged before the first commit (the first half)."""
    first = h.journal.index(next(e for e in h.journal if e[0] == "commit"))
    keys = set()
    for kind, item in h.journal[:first]:
        if kind == "points":
            keys |= {(tid, ts) for kind, tid, ts, *_ in item if kind == "score"}
    return keys


# ---------------------------------------------------------------------- 5. watchdog


async def test_the_watchdog_flips_readiness_and_restarts_a_stalled_consumer(make, reference):
    h = make(watchdog_unready_s=0.5, watchdog_restart_s=2.0)
    h.source.stalled = True  # lag > 0, but fetch returns nothing
    h.start()
    await h.until(lambda: h.service.health.started, "the start")
    await h.until(lambda: not h.service.health.ready, "unready")
    assert h.source.restarts == 0
    assert h.service.health.sinks_ok
    assert not h.service.health.consuming
    await h.until(lambda: h.source.restarts == 1, "a consumer restart")
    assert h.service.metrics.consumer_restarts._value.get() == 1
    await h.until(lambda: h.service.health.ready, "ready again")
    await h.run_to_end()
    assert h.source.restarts == 1
    assert_same_outputs(delivered(h), reference)


async def test_the_watchdog_polls_the_source_check_and_is_unready_while_it_fails(make):
    h = make(watchdog_unready_s=0.4, broker_check_interval_s=0.1)
    h.start()
    await h.until(lambda: h.source.committed == h.end(), "the whole stream committed")
    await h.until(lambda: h.service.health.ready, "ready")
    h.source.broker_down = True
    await h.until(lambda: not h.service.health.ready, "unready while check() raises", 5.0)
    assert h.source.checks > 0
    h.source.broker_down = False
    await h.until(lambda: h.service.health.ready, "ready once check() passes", 5.0)
    await h.finish()


# ---------------------------------------------------------------------- 6. shutdown


async def test_stop_delivers_the_pending_batch_and_commits_it(make, logs):
    h = make()
    h.database.fail(at=2, times=3, retry_after_s=0.05)
    h.start()
    await h.until(lambda: h.database.failures, "the first failure")
    pending = h.source.fetched[-1]
    h.stop.set()
    await h.finish()
    assert len(h.database.failures) == 3
    assert h.database.acked[-1] == h.database.failures[0][0], "the pending batch was delivered"
    last = {}
    for r in pending:
        last[r.partition] = r.offset + 1
    assert h.delivered_next() == last
    assert h.source.committed == last, "final commit of the drained batch"
    assert h.journal[-1] == ("commit", last)
    assert h.source.committed != h.end(), "stopped before the end of the stream"
    assert "shutdown_with_undelivered_batch" not in logs.events()


async def test_stop_with_a_sink_that_never_recovers_returns_without_committing_it(make, logs):
    h = make(shutdown_timeout_s=0.8)
    h.database.fail_forever(at=2)
    h.start()
    await h.until(lambda: h.database.failures, "the first failure")
    pending = h.source.fetched[-1]
    started = time.monotonic()
    h.stop.set()
    await h.finish(timeout=5.0)
    elapsed = time.monotonic() - started
    assert elapsed < 0.8 + 1.5, f"run() took {elapsed:.1f} s to return"
    assert "shutdown_with_undelivered_batch" in logs.events("warning")
    first = {}
    for r in pending:
        first.setdefault(r.partition, r.offset)
    for commit in h.source.commits:
        for p, offset in commit.items():
            assert offset <= first[p], "the undelivered batch's offsets were committed"
