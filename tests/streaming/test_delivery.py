"""The delivery component (wtbi_monitor/delivery.py) with in-memory sinks.

The service's own tests (test_service.py) drive it through the main loop; these pin its
contract directly: the order of the steps, what a retry re-sends (only the failed step and
those after it), drops on permanent refusals, the backoff, and `deliver`'s bound.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from wtbi_monitor import delivery as delivery_module
from wtbi_monitor.delivery import STEPS, Delivery, Outbox, UndeliveredError
from wtbi_monitor.domain import (
    TOP_K,
    AlarmEvent,
    AlarmState,
    DeadLetterRecord,
    InputRecord,
    ScorePoints,
    Severity,
)
from wtbi_monitor.errors import SinkError
from wtbi_monitor.scoring import BatchResult


def batch(n_points: int = 3, n_events: int = 1, n_dead: int = 2) -> BatchResult:
    points = ScorePoints(
        turbine=["T1"] * n_points,
        time_ms=np.arange(n_points, dtype=np.int64) * 7000,
        score=np.linspace(0.1, 2.0, n_points),
        tail_probability=np.full(n_points, 0.5),
        clip_fraction=np.zeros(n_points),
        top_index=np.full((n_points, TOP_K), -1, dtype=np.int64),
        top_share=np.zeros((n_points, TOP_K)),
        threshold=np.ones(n_points),
        model="m",
        model_version="m@1",
    )
    events = [
        AlarmEvent(
            f"a{i}", "T1", AlarmState.RAISED, 0, None, 7000, 2.0, 1.0, "m", "m@1", Severity.LOW
        )
        for i in range(n_events)
    ]
    dead = [
        DeadLetterRecord(InputRecord(0, i, b"T1", b"{oops"), "malformed_json", "bad")
        for i in range(n_dead)
    ]
    return BatchResult(points, events, dead, {"T1"}, {0: 10})


class Journal:
    """Sinks that write into one journal and fail on command."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.failures: dict[str, list[SinkError]] = {}

    def fail(self, sink: str, *errors: SinkError) -> None:
        self.failures.setdefault(sink, []).extend(errors)

    async def _call(self, sink: str, payload: Any) -> None:
        await asyncio.sleep(0)
        queued = self.failures.get(sink)
        if queued:
            self.calls.append((f"{sink}!", payload))
            raise queued.pop(0)
        self.calls.append((sink, payload))

    def acked(self, sink: str) -> list[Any]:
        return [p for s, p in self.calls if s == sink]


class Database:
    def __init__(self, journal: Journal, refused: int = 0) -> None:
        self.journal, self.refused = journal, refused

    async def write(self, points: ScorePoints, events: list[AlarmEvent]) -> int:
        await self.journal._call("points", (len(points), [e.alarm_id for e in events]))
        return self.refused


class Alerts:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def publish(self, events: list[AlarmEvent]) -> None:
        await self.journal._call("alerts", [e.alarm_id for e in events])


class DeadLetters:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def publish(self, letters: list[DeadLetterRecord]) -> None:
        await self.journal._call("dead_letters", [d.record.offset for d in letters])


@pytest.fixture
def logged(monkeypatch) -> list[tuple[str, str, dict]]:
    records: list[tuple[str, str, dict]] = []

    class Log:
        def __getattr__(self, level: str):
            return lambda event, **kw: records.append((level, event, kw))

    monkeypatch.setattr(delivery_module, "log", Log())
    return records


def make(journal: Journal, **kw: Any) -> Delivery:
    return Delivery(
        database=kw.pop("database", Database(journal)),
        alerts=kw.pop("alerts", Alerts(journal)),
        dead_letters=kw.pop("dead_letters", DeadLetters(journal)),
        retry_initial_s=kw.pop("retry_initial_s", 0.01),
        retry_max_s=kw.pop("retry_max_s", 0.04),
    )


def sample(d: Delivery, name: str, **labels: str) -> float:
    return d.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_steps_run_in_order_dead_letters_database_alerts():
    j = Journal()
    outbox = Outbox(batch())
    assert await make(j).attempt(outbox)
    assert outbox.delivered
    assert [s for s, _ in j.calls] == list(STEPS)
    assert j.calls == [("dead_letters", [0, 1]), ("points", (3, ["a0"])), ("alerts", ["a0"])]


async def test_empty_steps_are_skipped():
    j = Journal()
    assert await make(j).attempt(Outbox(batch(n_points=0, n_events=0, n_dead=0)))
    assert j.calls == []
    assert await make(j).attempt(Outbox(batch(n_points=2, n_events=0, n_dead=0)))
    assert [s for s, _ in j.calls] == ["points"]


async def test_missing_sinks_skip_their_steps():
    j = Journal()
    d = make(j, alerts=None, dead_letters=None)
    assert await d.attempt(Outbox(batch()))
    assert [s for s, _ in j.calls] == ["points"]


async def test_a_retry_resends_only_the_failed_step_and_those_after_it(logged):
    j = Journal()
    d = make(j)
    j.fail("points", SinkError("db down", retryable=True, retry_after_s=0.02))
    outbox = Outbox(batch())
    assert not await d.attempt(outbox)
    assert (outbox.step, outbox.attempts, outbox.retry_after_s) == (1, 1, 0.02)
    assert [s for s, _ in j.calls] == ["dead_letters", "points!"]
    assert ("warning", "sink_write_failed") in [(lv, e) for lv, e, _ in logged]
    assert await d.attempt(outbox)
    # the dead letters went out once; the database and alerts after it
    assert [s for s, _ in j.calls] == ["dead_letters", "points!", "points", "alerts"]
    assert sample(d, "wtbi_sink_errors_total", sink="points", kind="retryable") == 1


async def test_a_permanent_refusal_drops_that_step_only(logged):
    j = Journal()
    d = make(j)
    j.fail("points", SinkError("400 bad line", retryable=False, refused=2))
    outbox = Outbox(batch())
    assert await d.attempt(outbox)  # delivered: nothing left to retry
    assert [s for s, _ in j.calls] == ["dead_letters", "points!", "alerts"]
    assert sample(d, "wtbi_outputs_dropped_total", sink="points") == 2  # what the sink said
    assert sample(d, "wtbi_sink_errors_total", sink="points", kind="permanent") == 1
    ((level, _event, fields),) = [r for r in logged if r[1] == "sink_write_dropped"]
    assert level == "error"
    assert fields["records"] == [(0, 10)]  # the batch's last offset per partition


async def test_a_refused_dead_letter_step_names_its_records(logged):
    j = Journal()
    d = make(j)
    j.fail("dead_letters", SinkError("too large", retryable=False))
    assert await d.attempt(Outbox(batch(n_dead=3)))
    assert sample(d, "wtbi_outputs_dropped_total", sink="dead_letters") == 3  # all of them
    ((_, _, fields),) = [r for r in logged if r[1] == "sink_write_dropped"]
    assert fields["records"] == [(0, 0), (0, 1), (0, 2)]


async def test_points_refused_by_the_database_are_counted():
    j = Journal()
    d = make(j, database=Database(j, refused=4))
    assert await d.attempt(Outbox(batch()))
    assert sample(d, "wtbi_points_refused_total") == 4


def test_backoff_doubles_up_to_the_maximum_and_honours_the_hint():
    d = make(Journal(), retry_initial_s=0.1, retry_max_s=0.5)
    outbox = Outbox(batch())
    delays = []
    for attempts in range(1, 6):
        outbox.attempts = attempts
        delays.append(d.backoff(outbox))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    outbox.attempts, outbox.retry_after_s = 1, 3.0
    assert d.backoff(outbox) == 3.0
    assert d.backoff(None) == pytest.approx(0.1)


async def test_deliver_retries_until_the_sinks_take_the_batch():
    j = Journal()
    d = make(j)
    j.fail("alerts", *[SinkError("broker away", retryable=True) for _ in range(3)])
    outbox = await d.deliver(batch(), give_up_after_s=5.0)
    assert outbox.delivered
    assert outbox.attempts == 3
    assert len(j.acked("alerts")) == 1
    assert len(j.acked("points")) == 1  # the database was not written again


async def test_deliver_gives_up_after_its_bound():
    j = Journal()
    d = make(j, retry_initial_s=0.01, retry_max_s=0.02)
    j.fail("points", *[SinkError("db gone", retryable=True) for _ in range(1000)])
    with pytest.raises(UndeliveredError, match="points sink keeps failing"):
        await d.deliver(batch(), give_up_after_s=0.1)
    assert j.acked("alerts") == []  # never ahead of the database
