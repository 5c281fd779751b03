"""Kafka adapters (aiokafka): the input source, message sinks, the state store, topics.

Notes from docs/pitfalls.md and docs/infra.md that shaped this module:

* manual commits only, a rebalance listener that commits on revoke;
* the idempotent/transactional producer is not used (the test broker rejects it, and the
  design relies on idempotent outputs instead): acks="all" with retries;
* the highwater mark comes from fetch responses (`highwater`), never from ListOffsets
  (`end_offsets`), which one broker implementation gets wrong;
* every network call that may hang at shutdown has a timeout (the service bounds them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from wtbi_monitor.config import KafkaSettings
from wtbi_monitor.errors import SinkError
from wtbi_monitor.logs import get_logger
from wtbi_monitor.ports import RebalanceHandler
from wtbi_monitor.scoring import DeadLetterRecord, InputRecord

log = get_logger(__name__)
LOAD_TIMEOUT_S = 60.0


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """Bootstrap and security options shared by every aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
        )
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options


async def ensure_topics(settings: KafkaSettings) -> None:
    """Create the input, alert, dead-letter and state topics if they are missing."""
    admin = AIOKafkaAdminClient(
        client_id=f"{settings.client_id}-admin", **connection_options(settings)
    )
    await admin.start()
    try:
        wanted = [
            NewTopic(settings.input_topic, settings.input_partitions, settings.replication_factor),
            NewTopic(settings.alert_topic, 1, settings.replication_factor),
            NewTopic(settings.dead_letter_topic, 1, settings.replication_factor),
            NewTopic(
                settings.state_topic,
                1,
                settings.replication_factor,
                topic_configs={"cleanup.policy": "compact"},
            ),
        ]
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another instance was faster
                await admin.create_topics(missing)
            log.info("topics_created", topics=[t.name for t in missing])
    finally:
        await admin.close()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Bridges aiokafka's listener to the service's partition-number handler."""

    def __init__(self, handler: RebalanceHandler) -> None:
        self.handler = handler

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            await self.handler.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.handler.on_assigned({tp.partition for tp in assigned})


class KafkaSource:
    """The input topic, read as a member of the consumer group with manual commits."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._handler: RebalanceHandler | None = None
        self._positions: dict[int, int] = {}

    def set_handler(self, handler: RebalanceHandler) -> None:
        """Register the rebalance handler."""
        self._handler = handler

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            group_id=s.group_id,
            client_id=s.client_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            **connection_options(s),
        )

    async def start(self) -> None:
        """Connect, subscribe and join the group."""
        if self._handler is None:
            msg = "set_handler must be called before start"
            raise RuntimeError(msg)
        consumer = self._new_consumer()
        consumer.subscribe([self.settings.input_topic], listener=_Listener(self._handler))
        await consumer.start()
        self._consumer = consumer

    async def stop(self) -> None:
        """Leave the group and close."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def restart(self) -> None:
        """Recreate the consumer (the watchdog's remedy for a silently stalled one)."""
        await self.stop()
        await self.start()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The live consumer."""
        if self._consumer is None:
            msg = "the source is not started"
            raise RuntimeError(msg)
        return self._consumer

    async def fetch(self, max_records: int, timeout_ms: int) -> list[InputRecord]:
        """Records of the assigned partitions, partition by partition, in offset order."""
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[InputRecord] = []
        for tp in sorted(batches, key=lambda t: t.partition):
            out.extend(
                InputRecord(
                    partition=tp.partition,
                    offset=r.offset,
                    key=r.key,
                    value=r.value,
                    timestamp_ms=r.timestamp,
                    topic=tp.topic,
                )
                for r in batches[tp]
            )
            if batches[tp]:
                self._positions[tp.partition] = batches[tp][-1].offset + 1
        return out

    async def commit(self, offsets: dict[int, int]) -> None:
        """Commit next-offsets for the given partitions."""
        topic = self.settings.input_topic
        await self.consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})

    def pause(self) -> None:
        """Stop fetching the assigned partitions."""
        self.consumer.pause(*self.consumer.assignment())

    def resume(self) -> None:
        """Fetch again."""
        self.consumer.resume(*self.consumer.assignment())

    def assignment(self) -> set[int]:
        """Assigned input partitions."""
        if self._consumer is None:
            return set()
        return {tp.partition for tp in self._consumer.assignment()}

    def lag(self) -> dict[int, int]:
        """Highwater (from fetch responses) minus our position, per assigned partition."""
        if self._consumer is None:
            return {}
        out = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                out[tp.partition] = max(0, high - self._positions.get(tp.partition, high))
        return out


class KafkaOutputs:
    """One producer for alerts, dead letters and state snapshots; every send is awaited."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer = AIOKafkaProducer(
            client_id=f"{settings.client_id}-out",
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
            request_timeout_ms=15_000,
            **connection_options(settings),
        )

    async def start(self) -> None:
        """Connect."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and close."""
        await self._producer.stop()

    async def _send_all(
        self, topic: str, items: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        try:
            futures = [
                await self._producer.send(topic, value=v, key=k, headers=h or None)
                for k, v, h in items
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            msg = f"kafka send to {topic} failed: {exc!r}"
            raise SinkError(msg, retryable=getattr(exc, "retriable", True)) from exc

    async def publish_alerts(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Alarm events to the alert topic, keyed by turbine id."""
        await self._send_all(self.settings.alert_topic, [(k, v, []) for k, v in messages])

    async def publish_dead_letters(self, letters: list[DeadLetterRecord]) -> None:
        """Rejected records with reason, detail and source coordinates in headers."""
        now = str(int(time.time() * 1000)).encode()
        items = []
        for d in letters:
            headers = [
                ("reason", d.reason.encode()),
                ("detail", d.detail[:500].encode("utf-8", "replace")),
                ("source_topic", d.record.topic.encode()),
                ("source_partition", str(d.record.partition).encode()),
                ("source_offset", str(d.record.offset).encode()),
                ("rejected_at_ms", now),
            ]
            items.append((d.record.key, d.record.value or b"", headers))
        await self._send_all(self.settings.dead_letter_topic, items)

    async def save_state(self, snapshots: list[tuple[str, bytes]]) -> None:
        """Per-turbine snapshots to the compacted state topic."""
        await self._send_all(self.settings.state_topic, [(t.encode(), s, []) for t, s in snapshots])


class AlertSink:
    """`MessageSink` view of `KafkaOutputs` for alerts."""

    def __init__(self, outputs: KafkaOutputs) -> None:
        self.outputs = outputs

    async def publish(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Send alarm events."""
        await self.outputs.publish_alerts(messages)


class DeadLetters:
    """`DeadLetterSink` view of `KafkaOutputs`."""

    def __init__(self, outputs: KafkaOutputs) -> None:
        self.outputs = outputs

    async def publish(self, letters: list[DeadLetterRecord]) -> None:
        """Send rejected records."""
        await self.outputs.publish_dead_letters(letters)


class KafkaStateStore:
    """Snapshots in a compacted topic: written by `KafkaOutputs`, read back on assignment."""

    def __init__(self, settings: KafkaSettings, outputs: KafkaOutputs) -> None:
        self.settings = settings
        self.outputs = outputs

    async def save(self, snapshots: list[tuple[str, bytes]]) -> None:
        """Write and wait."""
        await self.outputs.save_state(snapshots)

    async def load(self, partitions: set[int]) -> list[bytes]:
        """The latest snapshot of each turbine whose input partition is in `partitions`.

        Reads the whole state topic up to its highwater mark.
        """
        latest = await read_topic_latest(self.settings, self.settings.state_topic)
        out = []
        for value in latest.values():
            try:
                partition = int(orjson.loads(value)["partition"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("state_snapshot_unreadable")
                continue
            if partition in partitions:
                out.append(value)
        return out


async def read_topic_latest(settings: KafkaSettings, topic: str) -> dict[bytes, bytes]:
    """Latest value per key of a whole topic, read up to its highwater mark."""
    consumer = AIOKafkaConsumer(
        client_id=f"{settings.client_id}-state",
        enable_auto_commit=False,
        **connection_options(settings),
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return {}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        latest: dict[bytes, bytes] = {}
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        done: set[int] = set()
        while len(done) < len(tps):
            if time.monotonic() > deadline:
                msg = f"reading {topic} did not reach its end within {LOAD_TIMEOUT_S} s"
                raise TimeoutError(msg)
            batches = await consumer.getmany(timeout_ms=300, max_records=5000)
            for records in batches.values():
                for r in records:
                    if r.key is not None and r.value is not None:
                        latest[r.key] = r.value
            for tp in tps:
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    done.add(tp.partition)
        return latest
    finally:
        await consumer.stop()


async def produce_readings(
    settings: KafkaSettings,
    readings: list[tuple[int, str, bytes]],
    *,
    speedup: float = 0.0,
    topic: str | None = None,
    chunk: int = 2000,
) -> float:
    """Publish (time_ms, turbine_id, message) tuples in order, keyed by turbine id.

    `speedup` > 0 paces the stream: a reading `dt` after the first is sent `dt / speedup`
    after the start; 0 sends as fast as the broker acknowledges. Returns the seconds spent.
    """
    producer = AIOKafkaProducer(
        client_id=f"{settings.client_id}-produce",
        acks="all",
        enable_idempotence=False,
        linger_ms=10,
        **connection_options(settings),
    )
    await producer.start()
    target = topic or settings.input_topic
    start = time.monotonic()
    try:
        if not readings:
            return 0.0
        t0 = readings[0][0]
        pending: list[asyncio.Future[Any]] = []
        for t_ms, turbine, message in readings:
            if speedup > 0:
                due = start + (t_ms - t0) / 1000.0 / speedup
                delay = due - time.monotonic()
                if delay > 0.002:
                    if pending:
                        await asyncio.gather(*pending)
                        pending = []
                    await asyncio.sleep(delay)
            pending.append(await producer.send(target, value=message, key=turbine.encode()))
            if len(pending) >= chunk:
                await asyncio.gather(*pending)
                pending = []
        if pending:
            await asyncio.gather(*pending)
        return time.monotonic() - start
    finally:
        await producer.stop()
