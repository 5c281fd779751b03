"""The database goes away (503, 429, resets) or refuses a write (400), behind a fault proxy."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.integration.conftest import Harness
from tests.integration.fault_proxy import FaultProxy
from tests.integration.test_daemon import assert_same_outputs
from wtbi_monitor.adapters.kafka import produce_readings
from wtbi_monitor.cli import open_service
from wtbi_monitor.config import ServiceSettings
from wtbi_monitor.errors import Reason

pytestmark = pytest.mark.integration


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def consumed(h: Harness, messages, timeout: float = 120) -> None:
    target = h.end_offsets(messages)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(h.committed) == target:
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"offsets did not reach {target}")


def _identity(line: bytes) -> tuple[str, dict[str, str], int]:
    """Measurement, tags and timestamp of a line-protocol line (escapes undone)."""
    head = re.split(rb"(?<!\\) ", line)[0]
    name, *pairs = re.split(rb"(?<!\\),", head)
    tags = dict(re.split(rb"(?<!\\)=", pair, maxsplit=1) for pair in pairs)

    def text(raw: bytes) -> str:
        return re.sub(rb"\\(.)", rb"\1", raw).decode()

    return text(name), {text(k): text(v) for k, v in tags.items()}, int(line.rsplit(b" ", 1)[1])


def _backoff_s(settings: ServiceSettings, attempt: int) -> float:
    """The service's exponential backoff after a batch's `attempt`-th failed delivery."""
    return min(settings.retry_max_s, settings.retry_initial_s * 2.0 ** (attempt - 1))


async def test_outage_pauses_input_bounds_memory_and_resumes_without_loss(
    harness: Harness, stream_messages
):
    proxy = FaultProxy("127.0.0.1", harness.servers.influx_port)
    await proxy.start()
    settings = harness.settings(influx={"url": proxy.url})
    limits = settings.service
    expected = await asyncio.to_thread(harness.expected, stream_messages)
    stop = asyncio.Event()
    async with open_service(settings) as (service, http):
        task = asyncio.create_task(service.run(stop))
        await produce_readings(settings.kafka, stream_messages[:800])
        await until(lambda: service.metrics.windows._value.get() > 0, 60, "first windows")
        # The database is down (503, Retry-After: 2) until it has been asked three times;
        # nothing is written while it is down, so the input stays paused that long.
        proxy.retry_after = "2"
        proxy.mode = "503"
        await produce_readings(settings.kafka, stream_messages[800:])
        await until(lambda: service._paused, 60, "the input to pause")
        status, _, body = http.respond("GET", "/healthz")
        assert status == 503
        assert b'"sinks_ok":false' in body
        committed = dict(service._committed)
        deadline = time.monotonic() + 60
        while proxy.counts["503"] < 3:  # while down: one pending batch, a bounded stash
            assert time.monotonic() < deadline, f"only {proxy.counts['503']} attempts in 60 s"
            assert service._paused
            pending = service._pending
            assert pending is not None
            assert pending.result.records <= limits.max_batch_records
            assert len(service._stash) <= 4 * limits.max_batch_records
            assert service._committed == committed  # no progress
            await asyncio.sleep(0.1)
        # Then two 429s without a wait hint and two lost connections, then it is back.
        proxy.fail("429", 2, retry_after="0")
        proxy.fail("reset", 2)
        proxy.mode = "pass"
        await consumed(harness, stream_messages)
        assert proxy.queued == 0
        assert not service._paused
        assert http.respond("GET", "/healthz/ready")[0] == 200
        stop.set()
        await asyncio.wait_for(task, 30)
    await proxy.stop()
    # Every failed attempt retried the one pending batch, in the order the faults came,
    # and the attempt after the last fault went through.
    first = next(i for i, (mode, _) in enumerate(proxy.attempts) if mode != "pass")
    failed = list(itertools.takewhile(lambda a: a[0] != "pass", proxy.attempts[first:]))
    modes = [mode for mode, _ in failed]
    n503 = modes.count("503")
    assert n503 >= 3
    assert modes == ["503"] * n503 + ["429", "429", "reset", "reset"]
    assert len(proxy.attempts) > first + len(failed)  # the retry that succeeded
    times = [t for _, t in proxy.attempts[first : first + len(failed) + 1]]
    # Each retry waited the backoff after its attempt (Retry-After: 2 while 503s asked for
    # it, exponential up to retry_max_s after that), and not much longer.
    for attempt, (mode, gap) in enumerate(
        zip(modes, [b - a for a, b in itertools.pairwise(times)], strict=True), start=1
    ):
        wait = (
            max(2.0, _backoff_s(limits, attempt)) if mode == "503" else _backoff_s(limits, attempt)
        )
        assert wait - 0.05 <= gap <= wait + 3.0, (attempt, mode, gap, proxy.attempts)
    await asyncio.to_thread(assert_same_outputs, harness, expected, alerts_exact=False)


async def test_a_permanent_400_is_dead_lettered_not_retried(harness: Harness, stream_messages):
    proxy = FaultProxy("127.0.0.1", harness.servers.influx_port)
    await proxy.start()
    # small write requests: the stream makes many of them, only the first two are refused
    settings = harness.settings(influx={"url": proxy.url, "batch_lines": 100})
    stop = asyncio.Event()
    messages = stream_messages[:1500]
    expected = await asyncio.to_thread(harness.expected, messages)
    async with open_service(settings) as (service, _http):
        task = asyncio.create_task(service.run(stop))
        await produce_readings(settings.kafka, messages[:10])  # topics exist, the group settles
        proxy.fail("400", times=2)  # the next two write requests are refused for good
        await produce_readings(settings.kafka, messages[10:])
        await consumed(harness, messages)
        stop.set()
        await asyncio.wait_for(task, 30)
        refused_metric = service.metrics.points_refused._value.get()
        permanent_errors = service.metrics.sink_errors.labels("points", "permanent")._value.get()
    await proxy.stop()
    assert proxy.queued == 0
    refused = [
        [ln for ln in body.splitlines() if ln] for mode, body in proxy.bodies if mode == "400"
    ]
    assert len(refused) == 2
    assert all(refused)
    refused_lines = [ln for body in refused for ln in body]
    # each refused request was sent exactly once: none of its lines went out again
    sent = Counter(ln for _, body in proxy.bodies for ln in body.splitlines() if ln)
    assert [ln for ln in refused_lines if sent[ln] != 1] == []
    assert proxy.counts["pass"] > 0
    # the sink dealt with the refusal itself: counted, never an error of the service
    assert refused_metric == len(refused_lines)
    assert permanent_errors == 0
    # each refused request's lines are one dead letter, nothing else is
    letters = await asyncio.to_thread(harness.topic_messages, f"dlq-{harness.uid}")
    rejected = [(v, h) for _, v, h in letters if h["reason"].decode() == Reason.SINK_REJECTED]
    assert sorted(v.splitlines() for v, _ in rejected) == sorted(refused)
    assert all(b"400" in h["detail"] for _, h in rejected)
    # and every other point was written: the database holds replay's points but these
    lost_scores, lost_alarms = set(), set()
    for line in refused_lines:
        name, tags, ts = _identity(line)
        if name == f"score_{harness.uid}":
            lost_scores.add((tags["turbine"], ts))
        else:
            assert name == f"alarm_{harness.uid}", line
            lost_alarms.add((tags["alarm_id"], tags["state"]))
    assert lost_scores <= expected.scores.keys()
    assert lost_alarms <= expected.alarms.keys()
    got = await asyncio.to_thread(harness.db_scores)
    assert got
    assert got.keys() == expected.scores.keys() - lost_scores
    points = await asyncio.to_thread(harness.db_alarm_points)
    assert set(points) == expected.alarms.keys() - lost_alarms
