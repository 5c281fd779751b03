"""The database goes away (503, 429, resets) or refuses a write (400), behind a fault proxy."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest

from tests.integration.conftest import Harness
from tests.integration.fault_proxy import FaultProxy
from tests.integration.test_daemon import assert_same_outputs
from wtbi_monitor.adapters.kafka import produce_readings
from wtbi_monitor.cli import open_service
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


async def test_outage_pauses_input_bounds_memory_and_resumes_without_loss(
    harness: Harness, stream_messages
):
    proxy = FaultProxy("127.0.0.1", harness.servers.influx_port)
    await proxy.start()
    settings = harness.settings(influx={"url": proxy.url})
    expected = await asyncio.to_thread(harness.expected, stream_messages)
    stop = asyncio.Event()
    async with open_service(settings) as (service, http):
        task = asyncio.create_task(service.run(stop))
        await produce_readings(settings.kafka, stream_messages[:800])
        await until(lambda: service.metrics.windows._value.get() > 0, 60, "first windows")
        proxy.retry_after = "2"
        proxy.mode = "503"
        await produce_readings(settings.kafka, stream_messages[800:])
        await until(lambda: service._paused, 60, "the input to pause")
        status, _, body = http.respond("GET", "/healthz")
        assert status == 503
        assert b'"sinks_ok":false' in body
        for _ in range(15):  # while down: one pending batch, a bounded stash, no progress
            pending = service._pending
            assert pending is None or pending.result.records <= settings.service.max_batch_records
            assert len(service._stash) <= 4 * settings.service.max_batch_records
            await asyncio.sleep(0.2)
        attempts = proxy.times.get("503", [])
        assert len(attempts) >= 2
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert min(gaps) >= 1.8, proxy.requests  # Retry-After: 2 is honoured
        proxy.retry_after = "0"
        proxy.mode = "429"
        await asyncio.sleep(1.0)
        proxy.mode = "reset"
        await asyncio.sleep(1.0)
        proxy.mode = "pass"
        await consumed(harness, stream_messages)
        assert not service._paused
        assert http.respond("GET", "/healthz/ready")[0] == 200
        stop.set()
        await asyncio.wait_for(task, 30)
    await proxy.stop()
    assert proxy.counts["429"] > 0
    assert proxy.counts["reset"] > 0
    await asyncio.to_thread(assert_same_outputs, harness, expected, alerts_exact=False)


async def test_a_permanent_400_is_dead_lettered_not_retried(harness: Harness, stream_messages):
    proxy = FaultProxy("127.0.0.1", harness.servers.influx_port)
    await proxy.start()
    settings = harness.settings(influx={"url": proxy.url})
    stop = asyncio.Event()
    messages = stream_messages[:1500]
    async with open_service(settings) as (service, _http):
        task = asyncio.create_task(service.run(stop))
        await produce_readings(settings.kafka, messages[:10])  # topics exist, the group settles
        proxy.fail("400", times=1)  # exactly one write is refused; the proxy passes after it
        await produce_readings(settings.kafka, messages[10:])
        await consumed(harness, messages)
        stop.set()
        await asyncio.wait_for(task, 30)
        assert service.metrics.sink_errors.labels("points", "permanent")._value.get() == 0
        assert service.metrics.points_refused._value.get() >= 1
    await proxy.stop()
    assert proxy.counts["400"] == 1
    refused = next(body for mode, body in proxy.bodies if mode == "400")
    later = b"".join(body for mode, body in proxy.bodies if mode == "pass")
    refused_lines = [ln for ln in refused.splitlines() if ln]
    assert refused_lines
    assert not any(ln in later for ln in refused_lines)  # never sent again: not retried
    letters = await asyncio.to_thread(harness.topic_messages, f"dlq-{harness.uid}")
    rejected = [v for _, v, h in letters if h["reason"].decode() == Reason.SINK_REJECTED]
    assert len(rejected) == 1
    assert rejected[0].count(b"\n") >= 1  # the chunk's lines, kept for inspection
