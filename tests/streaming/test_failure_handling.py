"""Pure failure-handling logic of the adapters and the log set-up: dead-letter summaries,
permanent refusals that do not block the other messages, and rate-limited library logs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from wtbi_monitor.adapters.influx import _pieces
from wtbi_monitor.adapters.kafka import (
    REQUEST_OVERHEAD_BYTES,
    KafkaOutputs,
    dead_letter_summary,
)
from wtbi_monitor.config import KafkaSettings
from wtbi_monitor.domain import DeadLetterRecord, InputRecord
from wtbi_monitor.errors import Reason, SinkError
from wtbi_monitor.logs import RepeatFilter


class FakeProducer:
    """Records sends; refuses values above `limit` the way aiokafka does (before sending)."""

    def __init__(self, limit: int, fail_with: Exception | None = None) -> None:
        self.limit = limit
        self.fail_with = fail_with
        self.sent: list[tuple[str, bytes | None, bytes | None, list]] = []

    async def send(self, topic, value=None, key=None, headers=None):
        size = len(value or b"") + len(key or b"")
        if size > self.limit:
            msg = f"{size} bytes"
            raise MessageSizeTooLargeError(msg)
        self.sent.append((topic, key, value, headers or []))
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        if self.fail_with is not None:
            done.set_exception(self.fail_with)
        else:
            done.set_result(None)
        return done


def outputs(limit: int, **kw) -> tuple[KafkaOutputs, FakeProducer]:
    fake = FakeProducer(limit, **kw)
    return KafkaOutputs(KafkaSettings(max_request_bytes=limit), producer=fake), fake


def letter(value: bytes | None, key: bytes | None = b"T01", offset: int = 7) -> DeadLetterRecord:
    return DeadLetterRecord(InputRecord(2, offset, key, value, 123, "in"), Reason.TOO_LARGE, "big")


async def test_a_dead_letter_too_large_for_a_request_is_sent_as_a_bounded_summary():
    limit = 64 * 1024
    out, fake = outputs(limit)
    big = b"x" * (limit - REQUEST_OVERHEAD_BYTES + 1)  # one byte over what fits
    fits = b"y" * (limit - REQUEST_OVERHEAD_BYTES - 3)  # plus the 3-byte key: exactly fits
    await out.publish_dead_letters([letter(big, offset=1), letter(fits, offset=2)])
    (_, k1, v1, h1), (_, _, v2, h2) = fake.sent
    assert dict(h1)["substituted"] == b"true"
    summary = orjson.loads(v1)
    assert summary == orjson.loads(dead_letter_summary(letter(big, offset=1)))
    assert summary["size_bytes"] == len(big)
    assert summary["sha256"] == hashlib.sha256(big).hexdigest()
    assert base64.b64decode(summary["prefix_base64"]) == big[:1024]
    assert (summary["partition"], summary["offset"], summary["key"]) == (2, 1, "T01")
    assert len(v1) < 2000
    assert k1 == b"T01"
    assert v2 == fits  # the one that fits goes as it came
    assert "substituted" not in dict(h2)
    assert dict(h2)["source_offset"] == b"2"


async def test_a_tombstone_is_dead_lettered_as_a_tombstone():
    out, fake = outputs(64 * 1024)
    await out.publish_dead_letters([letter(None)])
    assert fake.sent[0][2] is None


async def test_a_huge_key_is_cut_in_the_summary():
    limit = 64 * 1024
    out, fake = outputs(limit)
    await out.publish_dead_letters([letter(b"{}", key=b"k" * limit)])
    _, key, value, _ = fake.sent[0]
    assert key == b"k" * 256
    assert orjson.loads(value)["key_bytes"] == limit


async def test_a_message_refused_for_good_does_not_block_the_others():
    out, fake = outputs(64 * 1024)
    alerts = [(b"T01", b"a"), (b"T02", b"b" * 70_000), (b"T03", b"c")]
    with pytest.raises(SinkError) as caught:
        await out.publish_alerts(alerts)
    assert caught.value.retryable is False
    assert caught.value.refused == 1
    assert [k for _, k, _, _ in fake.sent] == [b"T01", b"T03"]  # the others went out


async def test_a_retriable_failure_fails_the_call_as_retryable():
    out, _ = outputs(64 * 1024, fail_with=KafkaTimeoutError())
    with pytest.raises(SinkError) as caught:
        await out.publish_alerts([(b"T01", b"a")])
    assert caught.value.retryable is True


def record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


def test_library_lines_are_printed_once_per_kind_per_interval(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("wtbi_monitor.logs.time.monotonic", lambda: clock[0])
    f = RepeatFilter(interval_s=30.0)
    kinds = ("Unable connect to node %s", "Failed fetch messages from %s")
    assert f.filter(record("aiokafka", kinds[0]))
    assert f.filter(record("aiokafka.consumer.fetcher", kinds[1]))  # another kind
    for _ in range(100):
        clock[0] += 0.01
        assert not f.filter(record("aiokafka", kinds[0]))
    assert f.take_suppressed() == {"aiokafka": 100}
    assert f.take_suppressed() == {}
    clock[0] += 30.0
    again = record("aiokafka", kinds[0])
    assert f.filter(again)
    assert "100 similar lines suppressed" in again.getMessage()


def test_own_lines_and_low_levels_are_never_suppressed():
    f = RepeatFilter(interval_s=30.0)
    for _ in range(5):
        assert f.filter(record("wtbi_monitor.service", "sink_write_failed"))
        assert f.filter(record("aiokafka", "Heartbeat ok", logging.INFO))
        structlog_like = record("aiokafka", "x")
        structlog_like.msg = {"event": "x"}  # structlog passes its event dict
        assert f.filter(structlog_like)
    assert f.take_suppressed() == {}


def test_a_refused_database_chunk_is_dead_lettered_in_pieces_that_fit():
    lines = [f"m,turbine=T{i:03d} score={i}.5 {i}" for i in range(5000)]
    pieces = _pieces(lines, 10_000)
    assert all(len(p) <= 10_000 for p in pieces)
    assert b"\n".join(pieces).decode().split("\n") == lines  # whole lines, in order
    assert _pieces(["x" * 50], 10) == [b"x" * 50]  # a longer line is a piece of its own
