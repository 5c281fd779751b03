"""Kafka adapters (aiokafka): the input source, message sinks, the state store, topics.

Notes from docs/pitfalls.md and docs/infra.md that shaped this module:

* manual commits only, a rebalance listener that commits on revoke;
* the idempotent/transactional producer is not used (the test broker rejects it, and the
  design relies on idempotent outputs instead): acks="all" with retries;
* the highwater mark comes from fetch responses (`highwater`), never from ListOffsets
  (`end_offsets`), which one broker implementation gets wrong;
* every network call that may hang at shutdown has a timeout (the service bounds them);
* a dead letter that would not fit in a producer request (a record the broker accepted
  under a larger limit) is replaced by a bounded summary, never retried as it is: one
  oversized record must not stall the daemon (docs/recovery.md, "Poison pills").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)
from aiokafka.helpers import create_ssl_context

from wtbi_monitor.codec import encode_alarm_event
from wtbi_monitor.config import KafkaSettings
from wtbi_monitor.domain import AlarmEvent, DeadLetterRecord, InputRecord
from wtbi_monitor.errors import SinkError, SourceUnavailableError
from wtbi_monitor.logs import get_logger
from wtbi_monitor.ports import RebalanceHandler

log = get_logger(__name__)
LOAD_TIMEOUT_S = 60.0
CHECK_TIMEOUT_S = 5.0
START_TIMEOUT_S = 30.0
#: Room left in a producer request for the record batch framing and headers.
REQUEST_OVERHEAD_BYTES = 4096
#: Bytes of an oversized record's value kept (base64) in its dead-letter summary.
SUBSTITUTE_PREFIX_BYTES = 1024


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


def owned_topics(settings: KafkaSettings) -> tuple[str, ...]:
    """The topics the daemon reads and writes (created at start-up when configured)."""
    return (
        settings.input_topic,
        settings.alert_topic,
        settings.dead_letter_topic,
        settings.state_topic,
    )


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create the input, alert, dead-letter and state topics if missing; return those made."""
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
        return [t.name for t in missing]
    finally:
        await admin.close()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Bridges aiokafka's listener to the service's partition-number handler."""

    def __init__(
        self, handler: RebalanceHandler, source: KafkaSource, consumer: AIOKafkaConsumer
    ) -> None:
        self.handler = handler
        self.source = source
        self.consumer = consumer  # its own: the first assignment comes before start() returns

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            await self.handler.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self.source.paused and assigned:
            self.consumer.pause(*assigned)  # a pause covers partitions assigned later
        await self.handler.on_assigned({tp.partition for tp in assigned})


async def _stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer; a CancelledError from its own tasks does not escape.

    aiokafka's fetcher awaits the fetch tasks it has just cancelled when it closes, so
    stopping a consumer whose broker is gone can raise CancelledError into the caller (it
    killed the watchdog task before this guard). Only a cancellation of the caller itself
    propagates.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("consumer_stop_cancelled_internally")


class KafkaSource:
    """The input topic, read as a member of the consumer group with manual commits."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._handler: RebalanceHandler | None = None
        self._positions: dict[int, int] = {}
        self.paused = False

    @property
    def input_topic(self) -> str:
        """The topic read."""
        return self.settings.input_topic

    @property
    def live(self) -> AIOKafkaConsumer | None:
        """The consumer, or None between a failed restart and the next one."""
        return self._consumer

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
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            **connection_options(s),
        )

    async def start(self) -> None:
        """Connect, subscribe and join the group."""
        if self._handler is None:
            msg = "set_handler must be called before start"
            raise RuntimeError(msg)
        consumer = self._new_consumer()
        listener = _Listener(self._handler, self, consumer)
        consumer.subscribe([self.settings.input_topic], listener=listener)
        try:
            await asyncio.wait_for(consumer.start(), START_TIMEOUT_S)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_stop_consumer(consumer), CHECK_TIMEOUT_S)
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        """Leave the group and close."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await _stop_consumer(consumer)

    async def restart(self) -> None:
        """Recreate the consumer (the watchdog's remedy for a stalled or orphaned one).

        Topics the daemon owns are recreated first when `create_topics` is set (a broker
        with memory storage loses them on restart); the new consumer rejoins the group and
        resumes from the committed offsets, or from `auto_offset_reset` where there are none.
        """
        with contextlib.suppress(Exception):  # a consumer of a dead broker may fail to close
            await asyncio.wait_for(self.stop(), CHECK_TIMEOUT_S * 2)
        self._consumer = None
        self._positions.clear()
        await self.recreate_topics()
        await self.start()

    async def recreate_topics(self) -> list[str]:
        """Create the daemon's missing topics, when it owns them (`kafka.create_topics`)."""
        if not self.settings.create_topics:
            return []
        return await asyncio.wait_for(ensure_topics(self.settings), START_TIMEOUT_S)

    async def check(self) -> set[str]:
        """Ask the broker for its topics; return the daemon's topics it does not have.

        Raises `KafkaError` or `TimeoutError` when the broker cannot be reached.
        """
        topics = await asyncio.wait_for(self.consumer.topics(), CHECK_TIMEOUT_S)
        return set(owned_topics(self.settings)) - set(topics)

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The live consumer."""
        if self._consumer is None:
            msg = "the source has no consumer (not started, or its restart failed)"
            raise SourceUnavailableError(msg)
        return self._consumer

    async def fetch(self, max_records: int, timeout_ms: int) -> list[InputRecord]:
        """Records of the assigned partitions, partition by partition, in offset order."""
        if self._consumer is None:  # between a failed restart and the watchdog's next one
            await asyncio.sleep(timeout_ms / 1000)
            return []
        try:
            # getmany ignores its timeout while the group rejoins (it waits for an
            # assignment without a deadline); a stuck rejoin must not park the main loop.
            batches = await asyncio.wait_for(
                self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records),
                timeout_ms / 1000 + CHECK_TIMEOUT_S,
            )
        except TimeoutError:
            return []
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
        """Stop fetching the assigned partitions (and those assigned while paused)."""
        self.paused = True
        if self._consumer is not None:
            self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        """Fetch again."""
        self.paused = False
        if self._consumer is not None:
            self._consumer.resume(*self._consumer.assignment())

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

    def __init__(self, settings: KafkaSettings, producer: AIOKafkaProducer | None = None) -> None:
        self.settings = settings
        self._producer = producer or AIOKafkaProducer(
            client_id=f"{settings.client_id}-out",
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
            request_timeout_ms=15_000,
            max_request_size=settings.max_request_bytes,
            **connection_options(settings),
        )

    async def start(self) -> None:
        """Connect."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and close."""
        await self._producer.stop()

    async def _send_all(
        self, topic: str, items: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]
    ) -> None:
        """Send every item and wait for all acknowledgements.

        A retriable failure of any item fails the whole call (the caller retries it; the
        topics are at-least-once). Items refused for good (too large, not authorised) do
        not stop the others: the call then raises a permanent `SinkError` naming them.
        """
        futures: list[asyncio.Future[Any]] = []
        refused: list[tuple[int, KafkaError]] = []
        try:
            for i, (k, v, h) in enumerate(items):
                try:
                    sent = await self._producer.send(topic, value=v, key=k, headers=h or None)
                    futures.append(sent)
                except KafkaError as exc:
                    if not _refused_for_good(exc):
                        raise
                    refused.append((i, exc))
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        except KafkaError as exc:
            msg = f"kafka send to {topic} failed: {exc!r}"
            raise SinkError(msg, retryable=True) from exc
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        retriable = [f for f in failures if not _refused_for_good(f)]
        if retriable:
            msg = f"kafka send to {topic} failed ({len(failures)}/{len(items)}): {retriable[0]!r}"
            raise SinkError(msg, retryable=True) from retriable[0]
        if refused or failures:
            first = refused[0][1] if refused else failures[0]
            msg = (
                f"kafka refused {len(refused) + len(failures)} of {len(items)} messages to "
                f"{topic} for good (items {[i for i, _ in refused][:10]}...): {first!r}"
            )
            raise SinkError(msg, retryable=False, refused=len(refused) + len(failures))

    async def publish_alerts(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Alarm events to the alert topic, keyed by turbine id."""
        await self._send_all(self.settings.alert_topic, [(k, v, []) for k, v in messages])

    async def publish_dead_letters(self, letters: list[DeadLetterRecord]) -> None:
        """Rejected records with reason, detail and source coordinates in headers.

        The value is the record as it came (None for a tombstone), unless the record would
        not fit in a producer request: then a bounded JSON summary (`dead_letter_summary`)
        takes its place and the header `substituted: true` says so.
        """
        now = str(int(time.time() * 1000)).encode()
        limit = self.settings.max_request_bytes - REQUEST_OVERHEAD_BYTES
        items: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        for d in letters:
            rec = d.record
            headers = [
                ("reason", d.reason.encode()),
                ("detail", d.detail[:500].encode("utf-8", "replace")),
                ("source_topic", rec.topic.encode()),
                ("source_partition", str(rec.partition).encode()),
                ("source_offset", str(rec.offset).encode()),
                ("rejected_at_ms", now),
            ]
            key, value = rec.key, rec.value
            if len(key or b"") + len(value or b"") > limit:
                log.error(
                    "dead_letter_substituted",
                    detail="record too large for a producer request: sent as a summary",
                    partition=rec.partition,
                    offset=rec.offset,
                    value_bytes=len(value or b""),
                    key_bytes=len(key or b""),
                )
                value = dead_letter_summary(d)
                key = key[:256] if key is not None else None
                headers.append(("substituted", b"true"))
            items.append((key, value, headers))
        await self._send_all(self.settings.dead_letter_topic, items)

    async def save_state(self, snapshots: list[tuple[str, bytes]]) -> None:
        """Per-turbine snapshots to the compacted state topic."""
        await self._send_all(self.settings.state_topic, [(t.encode(), s, []) for t, s in snapshots])


#: Failures that sending the same message again cannot cure. Everything else (timeouts,
#: lost connections, leader changes, a missing topic) is retried: aiokafka marks some of
#: those `retriable = False` too (KafkaTimeoutError), which must not drop outputs.
_PERMANENT = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    InvalidTopicError,
)


def _refused_for_good(exc: BaseException) -> bool:
    return isinstance(exc, _PERMANENT)


def dead_letter_summary(letter: DeadLetterRecord) -> bytes:
    """A bounded stand-in for a record too large to dead-letter as it is (docs/schemas.md)."""
    rec = letter.record
    value = rec.value or b""
    return orjson.dumps(
        {
            "substituted": True,
            "reason": letter.reason,
            "size_bytes": len(value),
            "key": (rec.key or b"")[:256].decode("utf-8", "replace"),
            "key_bytes": len(rec.key or b""),
            "topic": rec.topic,
            "partition": rec.partition,
            "offset": rec.offset,
            "timestamp_ms": rec.timestamp_ms,
            "sha256": hashlib.sha256(value).hexdigest(),
            "prefix_base64": base64.b64encode(value[:SUBSTITUTE_PREFIX_BYTES]).decode(),
        }
    )


class KafkaAlertSink:
    """The alert port (`ports.AlertSink`) on `KafkaOutputs`: owns the alert message format.

    One message per alarm transition, keyed by turbine id, JSON as in docs/schemas.md
    (`codec.encode_alarm_event`).
    """

    def __init__(self, outputs: KafkaOutputs) -> None:
        self.outputs = outputs

    async def publish(self, events: list[AlarmEvent]) -> None:
        """Send alarm events and wait for the acknowledgements."""
        await self.outputs.publish_alerts(
            [(e.turbine_id.encode(), encode_alarm_event(e)) for e in events]
        )


class DeadLetters:
    """The dead-letter port (`ports.DeadLetterSink`) on `KafkaOutputs`."""

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
