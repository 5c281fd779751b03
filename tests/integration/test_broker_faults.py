"""The broker misbehaves: a record too large to dead-letter as it is, a broker that
restarts and forgets everything (memory storage), SIGTERM while the broker is gone."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from wtbi_devtools.localenv import LocalServers, free_port, start_kafka, start_s3, stop_server

from tests.integration.conftest import Harness, Outputs, wait_for
from tests.integration.test_daemon import assert_same_outputs
from wtbi_monitor.adapters.kafka import ensure_topics, produce_readings
from wtbi_monitor.errors import Reason

pytestmark = pytest.mark.integration

BIG_BYTES = 1_500_000  # above the producer's default request limit (1 MiB)


def produce_with_big_record(h: Harness, messages, big: bytes) -> None:
    """The messages in order, with `big` (key "big") in the middle, by a producer whose
    request limit admits it (the broker accepts it, as one configured for large records)."""
    settings = h.settings()

    async def run() -> None:
        await ensure_topics(settings.kafka)
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap_servers, max_request_size=4 << 20
        )
        await producer.start()
        try:
            half = len(messages) // 2
            for i, (_t, turbine, value) in enumerate(messages):
                if i == half:
                    await producer.send_and_wait(settings.kafka.input_topic, big, key=b"big")
                    # and a tombstone, which must be dead-lettered as a tombstone
                    await producer.send_and_wait(settings.kafka.input_topic, None, key=b"nil")
                await producer.send(settings.kafka.input_topic, value, key=turbine.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


def dead_letters(h: Harness) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    """Every dead-letter message: (key, value, headers)."""
    return h.topic_messages(f"dlq-{h.uid}")


def substitutes(h: Harness) -> list[tuple[dict[str, bytes], dict]]:
    """Dead letters sent as summaries: (headers, decoded summary)."""
    out = []
    for _key, value, headers in dead_letters(h):
        if headers.get("substituted") == b"true":
            out.append((headers, orjson.loads(value)))
    return out


def test_a_record_above_the_producer_limit_never_stalls_the_daemon(
    harness: Harness, stream_messages
):
    messages = stream_messages[:1500]
    big = b'{"turbine_id": "big", "pad": "' + b"x" * BIG_BYTES + b'"}'
    produce_with_big_record(harness, messages, big)
    expected = harness.expected(messages)

    # First instance: never commits (huge interval), killed once it has written
    # everything. The group has no committed offsets, so the next instance starts ON
    # the oversized record again, the case that used to stall for ever.
    harness.start_daemon("first", service={"commit_interval_s": 3600})
    wait_for(lambda: len(substitutes(harness)) == 1, 120, "the oversized record's summary")
    wait_for(lambda: harness.db_scores().keys() == expected.scores.keys(), 120, "every score point")
    first = harness.daemons[-1]
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert harness.committed() == {}

    harness.start_daemon("second")
    target = harness.end_offsets(messages)
    for extra in (b"big", b"nil"):  # one more record each in their partitions
        p = next(h["source_partition"] for k, _v, h in dead_letters(harness) if k == extra)
        target[int(p)] = target.get(int(p), 0) + 1
    wait_for(lambda: harness.committed() == target, 120, f"committed offsets {target}")

    found = substitutes(harness)
    assert len(found) == 2  # once per instance: at-least-once, never stuck
    for headers, summary in found:
        assert headers["reason"] == Reason.TOO_LARGE.encode()
        assert summary["reason"] == Reason.TOO_LARGE
        assert summary["size_bytes"] == len(big)
        assert summary["sha256"] == hashlib.sha256(big).hexdigest()
        assert base64.b64decode(summary["prefix_base64"]) == big[:1024]
        assert summary["key"] == "big"
        assert headers["source_offset"] == str(summary["offset"]).encode()
    assert found[0][1]["offset"] == found[1][1]["offset"]
    tombstones = [(v, h) for k, v, h in dead_letters(harness) if k == b"nil"]
    assert len(tombstones) == 2  # once per instance
    for value, headers in tombstones:
        assert value is None  # null, as it came; not an empty value
        assert headers["reason"] == Reason.MALFORMED_JSON.encode()
    # Nothing else was lost on the way: every valid reading's outputs are there.
    assert_same_outputs(harness, expected, alerts_exact=False)
    second = [line["event"] for line in harness.log_lines("second")]
    assert "dead_letter_substituted" in second
    assert "sink_write_dropped" not in second


# ----------------------------------------------------------------- a broker of our own


@pytest.fixture
def own_broker(servers, tmp_path) -> Iterator[LocalServers]:
    """A Tansu broker (memory storage) that this test may stop and restart."""
    proc, port = start_kafka(tmp_path)
    mine = replace(servers, kafka=proc, kafka_port=port)
    try:
        yield mine
    finally:
        stop_server(mine.kafka)


@pytest.fixture
def durable_broker(servers, tmp_path) -> Iterator[tuple[LocalServers, int]]:
    """A Tansu broker on S3 storage (a local moto server): it survives restarts."""
    s3, s3_port = start_s3(tmp_path)
    try:
        proc, port = start_kafka(tmp_path, s3_port=s3_port)
        mine = replace(servers, kafka=proc, kafka_port=port)
        try:
            yield mine, s3_port
        finally:
            stop_server(mine.kafka)
    finally:
        stop_server(s3)


def healthz(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:  # 503 while not ready, with the same body
        return json.loads(exc.read())
    except OSError:
        return {}


def topic_exists(bootstrap: str, topic: str) -> bool:
    async def run() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return topic in set(await admin.list_topics())
        finally:
            await admin.close()

    try:
        return asyncio.run(run())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_broker_restart_that_loses_everything_recovers_by_itself(
    own_broker: LocalServers, tiny_bundle, stream_threshold, tmp_path, stream_messages
):
    assert tiny_bundle.path is not None
    h = Harness(own_broker, tiny_bundle.path, tmp_path, threshold_override=stream_threshold)
    port = free_port()
    fast = {"http_port": port, "broker_check_interval_s": 1.0, "shutdown_timeout_s": 8}
    cut = len(stream_messages) // 2
    before, after = stream_messages[:cut], stream_messages[cut:]
    try:
        daemon = h.start_daemon(service=fast)
        h.produce(before)
        target = h.end_offsets(before)
        wait_for(lambda: h.committed() == target, 120, f"committed offsets {target}")
        wait_for(lambda: healthz(port).get("ready") is True, 30, "ready")

        # The broker goes away: not ready, and a quiet log.
        own_broker.kafka.send_signal(signal.SIGTERM)
        own_broker.kafka.wait(10)
        lines_before = len(h.log_lines())
        wait_for(lambda: healthz(port).get("broker_ok") is False, 30, "broker_ok false")
        assert healthz(port)["ready"] is False
        outage_started = time.monotonic()
        wait_for(lambda: time.monotonic() - outage_started > 5, 10, "a 5 s outage")
        outage = h.log_lines()[lines_before:]
        # One line per failure kind per interval: a handful, not ~100 a second.
        assert len(outage) < 40, [line.get("event") for line in outage]

        # It comes back empty (memory storage): the daemon recreates its topics, rejoins
        # and says what was lost.
        (tmp_path / "again").mkdir()
        proc, _ = start_kafka(tmp_path / "again", port=own_broker.kafka_port)
        own_broker.kafka = proc
        wait_for(lambda: topic_exists(own_broker.bootstrap, f"in-{h.uid}"), 60, "input topic")
        events = [line["event"] for line in h.log_lines()]
        assert "topics_lost" in events
        lost = next(line for line in h.log_lines() if line["event"] == "topics_lost")
        assert f"in-{h.uid}" in lost["topics"]
        assert lost["committed_offsets"] == {str(p): o for p, o in target.items()}

        asyncio.run(produce_readings(h.settings().kafka, after))
        target = h.end_offsets(after)
        wait_for(lambda: h.committed() == target, 120, f"committed offsets {target}")
        wait_for(lambda: healthz(port).get("ready") is True, 30, "ready again")

        # Every reading's outputs are in the database: before the loss as replay gives
        # them, after it as a fresh start gives them (the turbines warmed up again).
        first, second = h.expected(before), h.expected(after)
        both = Outputs(
            scores={**first.scores, **second.scores}, alarms={**first.alarms, **second.alarms}
        )
        got = h.db_scores()
        assert got.keys() == both.scores.keys()
        for key, value in both.scores.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6)
        assert set(h.db_alarm_points()) == set(both.alarms)
        alerts = {(a["alarm_id"], a["state"]) for a in h.alerts()}
        assert alerts == set(second.alarms)  # the first half's alerts went with the broker

        # SIGTERM with the broker gone again: the process still ends within its budget.
        own_broker.kafka.send_signal(signal.SIGTERM)
        own_broker.kafka.wait(10)
        wait_for(lambda: healthz(port).get("broker_ok") is False, 30, "broker_ok false")
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(fast["shutdown_timeout_s"] + 2)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not end the daemon within shutdown_timeout_s")
        assert time.monotonic() - started <= fast["shutdown_timeout_s"] + 2
    finally:
        h.stop_all()


def test_broker_restart_with_durable_storage_loses_and_duplicates_nothing(
    durable_broker: tuple[LocalServers, int],
    tiny_bundle,
    stream_threshold,
    tmp_path,
    stream_messages,
):
    broker, s3_port = durable_broker
    assert tiny_bundle.path is not None
    h = Harness(broker, tiny_bundle.path, tmp_path, threshold_override=stream_threshold)
    port = free_port()
    fast = {"http_port": port, "broker_check_interval_s": 1.0}
    cut = len(stream_messages) // 2
    expected = h.expected(stream_messages)
    try:
        h.start_daemon(service=fast)
        h.produce(stream_messages[:cut])
        wait_for(lambda: h.committed() != {}, 120, "a first commit")

        # Restart the broker while the daemon works through the first half.
        broker.kafka.send_signal(signal.SIGTERM)
        broker.kafka.wait(10)
        wait_for(lambda: healthz(port).get("broker_ok") is False, 30, "broker_ok false")
        (tmp_path / "again").mkdir()
        broker.kafka, _ = start_kafka(tmp_path / "again", port=broker.kafka_port, s3_port=s3_port)
        wait_for(lambda: healthz(port).get("broker_ok") is True, 60, "broker_ok again")

        asyncio.run(produce_readings(h.settings().kafka, stream_messages[cut:]))
        target = h.end_offsets(stream_messages)
        wait_for(lambda: h.committed() == target, 180, f"committed offsets {target}")
        events = [line["event"] for line in h.log_lines()]
        assert "topics_lost" not in events  # durable: nothing to recreate
        # Everything as one uninterrupted replay gives it; re-sent alerts are identical.
        assert_same_outputs(h, expected, alerts_exact=False)
    finally:
        h.stop_all()
