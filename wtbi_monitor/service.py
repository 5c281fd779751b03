"""The daemon's main loop: fetch -> process -> deliver -> snapshot -> commit.

Flow: source (ports.Source) -> processor (scoring.StreamProcessor) -> delivery
(delivery.Delivery) -> sinks (ports.DatabaseSink, AlertSink, DeadLetterSink); then the
state store and the commit.

At-least-once input with idempotent outputs (docs/recovery.md):

1. fetch a micro-batch (at most `max_batch_records`, waiting at most `max_wait_ms`);
2. process it: decode/validate/window on the event loop, score in a worker thread, run
   the alarm machines;
3. deliver (delivery.py, shared with replay): dead letters, then score points and alarm
   events to the database, then alarm events to the alert feed; each sink must
   acknowledge. Retryable failures (429, 5xx, lost connections) pause the input and retry
   with exponential backoff while the consumer keeps polling (so it stays in its group);
   memory holds one pending batch only;
4. every `commit_interval_s`: save the snapshots of the turbines that changed, then
   commit the input offsets. A snapshot is never older than the committed offsets, and
   the processor skips records a snapshot already contains, so a crash anywhere gives the
   same final outputs as an uninterrupted run.

Rebalances: on revoke, commit (if nothing is pending) and drop the revoked turbines; on
assign, restore the assigned partitions' snapshots. A lock keeps these callbacks from
interleaving with a batch in flight.

Failures (docs/recovery.md): a sink's permanent refusal drops that step of the batch with
an error log and a counter, never a retry loop; commits are bounded in time and back off;
the watchdog asks the broker for its topics, marks the service unready while the broker
cannot be reached, and recreates the consumer (and the topics, when it owns them) when the
broker lost them or when consumption stalls with input waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from wtbi_monitor.config import ServiceSettings
from wtbi_monitor.delivery import Delivery, Outbox
from wtbi_monitor.domain import InputRecord
from wtbi_monitor.errors import SourceUnavailableError
from wtbi_monitor.logs import get_logger, take_suppressed
from wtbi_monitor.ports import AlertSink, DatabaseSink, DeadLetterSink, Source, StateStore
from wtbi_monitor.scoring import BatchResult, StreamProcessor
from wtbi_monitor.telemetry import Health, ServiceMetrics

log = get_logger(__name__)

#: Consecutive failed commits after which the service reports not ready.
COMMIT_FAILURES_UNREADY = 3


@dataclass
class _Pending:
    """The one batch between processing and commit."""

    outbox: Outbox
    revoked: set[int] = field(default_factory=set)  # partitions revoked while pending

    @property
    def result(self) -> BatchResult:
        return self.outbox.result


DeliveredHook = Callable[[BatchResult, float], None]


class Service:
    """One daemon instance (a consumer-group member) wired to its ports."""

    def __init__(
        self,
        *,
        processor: StreamProcessor,
        source: Source,
        database: DatabaseSink,
        alerts: AlertSink,
        dead_letters: DeadLetterSink,
        state: StateStore,
        settings: ServiceSettings,
        metrics: ServiceMetrics | None = None,
        health: Health | None = None,
        on_delivered: DeliveredHook | None = None,
    ) -> None:
        self.processor = processor
        self.source = source
        self.state = state
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        self.delivery = Delivery(
            database=database,
            alerts=alerts,
            dead_letters=dead_letters,
            retry_initial_s=settings.retry_initial_s,
            retry_max_s=settings.retry_max_s,
            metrics=self.metrics,
        )
        self.health = health or Health()
        self.on_delivered = on_delivered
        self._lock = asyncio.Lock()
        self._pending: _Pending | None = None
        self._stash: list[InputRecord] = []
        self._offsets: dict[int, int] = {}  # partition -> next offset to commit
        self._committed: dict[int, int] = {}
        self._ever_committed: dict[int, int] = {}  # kept through revokes, for loss reports
        self._dirty: set[str] = set()
        self._last_progress = time.monotonic()
        self._paused = False
        self._commit_failures = 0
        self._next_commit = time.monotonic() + settings.commit_interval_s
        self._next_check = 0.0
        self._restart_wanted = False
        self._loop_stuck_logged = False
        self._discard_snapshots = False
        self._missing_streak = 0
        self._restart_failures = 0
        self._next_restart = 0.0
        self._draining = False

    # ------------------------------------------------------------------ main loop

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then finish the batch in hand, commit and close."""
        self.source.set_handler(self)
        await self.source.start()
        self.health.started = True
        watchdog = asyncio.create_task(self._watchdog(stop), name="wtbi-watchdog")
        clean = True
        try:
            while not stop.is_set():
                self.health.beat()
                if self._pending is not None:  # only a failed delivery leaves a batch here
                    await self._idle_poll(stop)
                    await self._retry_pending()
                    continue
                records = self._stash or await self.source.fetch(
                    self.settings.max_batch_records, self.settings.max_wait_ms
                )
                self._stash = []
                if records:
                    self._last_progress = time.monotonic()
                    async with self._lock:
                        await self._process(records)
                        await self._deliver()
                if self._pending is None and self._commit_due():
                    async with self._lock:
                        await self._commit()
            clean = await self._drain(stop)
        finally:
            self.health.stopping = True
            watchdog.cancel()
            await self._bounded(self.source.stop(), "source.stop")
            log.info("service_stopped", clean=clean, committed=self._committed)

    async def _drain(self, stop: asyncio.Event) -> bool:
        """Graceful stop: deliver what is in hand, then commit it, within the shutdown budget.

        The budget (`shutdown_timeout_s`) covers the drain, the final commit and closing the
        consumer; `serve` ends the process by force if it is ever exceeded.
        """
        del stop
        self._draining = True
        self._deadline = time.monotonic() + self.settings.shutdown_timeout_s * 0.8
        while self._pending is not None and self._remaining() > 0:
            if not await self._retry_pending():
                await asyncio.sleep(min(self._backoff(), self._remaining()))
        if self._pending is not None:
            log.warning(
                "shutdown_with_undelivered_batch",
                detail="not committed; it will be processed again after restart",
            )
            return False
        committed: list[bool] = []

        async def final_commit() -> None:
            async with self._lock:
                committed.append(await self._commit(force=True))

        finished = await self._bounded(final_commit(), "final commit")
        return finished and all(committed)

    _deadline: float | None = None

    def _remaining(self) -> float:
        """Seconds left of the shutdown budget (the full timeout before a stop)."""
        if self._deadline is None:
            return self.settings.shutdown_timeout_s
        return max(0.0, self._deadline - time.monotonic())

    async def _bounded(self, coro: Coroutine[Any, Any, Any], what: str) -> bool:
        try:
            await asyncio.wait_for(coro, max(0.1, self._remaining()))
        except TimeoutError:
            log.warning("shutdown_step_timed_out", step=what)
            return False
        except Exception as exc:  # noqa: BLE001 - shutdown must go on whatever happened
            log.warning("shutdown_step_failed", step=what, error=repr(exc))
            return False
        return True

    # ------------------------------------------------------------------ batches

    async def _process(self, records: list[InputRecord]) -> None:
        self.metrics.consumed.inc(len(records))
        self.metrics.batch_records.observe(len(records))
        prepared = self.processor.prepare(records)
        t0 = time.perf_counter()
        scored = await asyncio.to_thread(self.processor.score, prepared)
        inference = time.perf_counter() - t0
        self.metrics.inference_seconds.observe(inference)
        self.metrics.attributed.inc(int(scored.has_channels.sum()))
        result = self.processor.finish(prepared, scored)
        self._pending = _Pending(Outbox(result))
        log.info(
            "batch",
            records=result.records,
            readings=result.readings,
            windows=len(result.points),
            rejected=len(result.dead_letters),
            skipped=result.skipped,
            alarms=len(result.events),
            inference_ms=round(inference * 1000, 1),
        )

    async def _deliver(self) -> bool:
        """Push the pending batch through its remaining steps; False on a retryable error."""
        pending = self._pending
        if pending is None:
            return True
        if not await self.delivery.attempt(pending.outbox):
            self.health.sinks_ok = False
            if not self._paused:
                self.source.pause()
                self._paused = True
                self.metrics.paused.set(1)
            return False
        self._finish_batch(pending)
        return True

    def _finish_batch(self, pending: _Pending) -> None:
        result = pending.result
        for reason in (d.reason for d in result.dead_letters):
            self.metrics.rejected.labels(reason).inc()
        self.metrics.decoded.inc(result.readings)
        self.metrics.skipped.inc(result.skipped)
        self.metrics.windows.inc(len(result.points))
        self.metrics.outside_coverage.inc(int((result.points.clip_fraction > 0).sum()))
        for event in result.events:
            self.metrics.alarms.labels(event.state.value).inc()
        for gate, count in result.gated.items():
            self.metrics.gated.labels(gate).inc(count)
        for turbine, drifting in result.drift.items():
            self.metrics.drifting.labels(turbine).set(1.0 if drifting else 0.0)
            log.warning(
                "drift" if drifting else "drift_ended",
                turbine_id=turbine,
                detail="above-threshold rate vs the calibrated rate; see docs/operations.md",
            )
        for partition, offset in result.last_offsets.items():
            if partition in pending.revoked:
                # Revoked while this batch waited: whoever owns the partition now (maybe
                # this instance again, restored from an older snapshot) reads these
                # records again; committing past them would skip them.
                continue
            self._offsets[partition] = max(offset + 1, self._offsets.get(partition, 0))
        self._dirty |= result.touched
        now = time.time()
        if result.oldest_timestamp_ms:
            self.metrics.latency_seconds.observe(max(0.0, now - result.oldest_timestamp_ms / 1000))
        if self.on_delivered is not None:
            self.on_delivered(result, now)
        self._pending = None
        if self._paused:
            self.source.resume()
            self._paused = False
            self.metrics.paused.set(0)
            log.info("sinks_recovered", attempts=pending.outbox.attempts)
        self.health.sinks_ok = True

    async def _retry_pending(self) -> bool:
        async with self._lock:
            return await self._deliver()

    def _backoff(self) -> float:
        return self.delivery.backoff(self._pending.outbox if self._pending else None)

    async def _idle_poll(self, stop: asyncio.Event) -> None:
        """Wait out the backoff while polling the (paused) consumer to stay in the group."""
        deadline = time.monotonic() + self._backoff()
        while not stop.is_set() and time.monotonic() < deadline:
            self.health.beat()
            wait_ms = max(1, min(500, int((deadline - time.monotonic()) * 1000)))
            extra = await self.source.fetch(self.settings.max_batch_records, wait_ms)
            if extra:  # prefetched before the pause: keep them, in order, for later
                self._stash.extend(extra)

    # ------------------------------------------------------------------ commits

    def _commit_due(self) -> bool:
        return time.monotonic() >= self._next_commit

    async def _commit(self, *, force: bool = False) -> bool:
        """Save snapshots of changed turbines, then commit offsets (caller holds the lock).

        Each step is bounded by `commit_timeout_s` (aiokafka retries a commit to a lost
        topic for ever); a failure is retried with backoff, up to `retry_max_s` apart.
        """
        assigned = self.source.assignment()
        offsets = {
            p: o for p, o in self._offsets.items() if p in assigned and o != self._committed.get(p)
        }
        interval = self.settings.commit_interval_s
        if not offsets and not self._dirty and not force:
            self._next_commit = time.monotonic() + interval
            return True
        snapshots = [
            (tid, self.processor.snapshot(tid))
            for tid in sorted(self._dirty)
            if tid in self.processor.turbines
        ]
        timeout = self.settings.commit_timeout_s
        try:
            if snapshots:
                await asyncio.wait_for(self.state.save(snapshots), timeout)
            if offsets:
                await asyncio.wait_for(self.source.commit(offsets), timeout)
        except Exception as exc:  # noqa: BLE001 - a failed commit is retried with backoff
            self._commit_failures += 1
            self.health.commits_ok = self._commit_failures < COMMIT_FAILURES_UNREADY
            delay = min(self.settings.retry_max_s, interval * 2.0**self._commit_failures)
            self._next_commit = time.monotonic() + delay
            self.metrics.sink_errors.labels("commit", "retryable").inc()
            log.warning(
                "commit_failed",
                error=repr(exc)[:300] or type(exc).__name__,
                attempt=self._commit_failures,
                retry_in_s=round(delay, 2),
            )
            return False
        if self._commit_failures:
            log.info("commit_recovered", attempts=self._commit_failures)
        self._commit_failures = 0
        self.health.commits_ok = True
        self._committed.update(offsets)
        self._ever_committed.update(offsets)
        self._dirty.clear()
        self._next_commit = time.monotonic() + interval
        self._last_progress = time.monotonic()
        self.metrics.commits.inc()
        return True

    # ------------------------------------------------------------------ rebalances

    async def on_revoked(self, partitions: set[int]) -> None:
        """Commit what was delivered, then forget the revoked partitions' turbines."""
        async with self._lock:
            if self._pending is None:
                await self._commit()
            else:
                self._pending.revoked |= partitions
            gone = self.processor.drop_partitions(partitions)
            self._dirty -= set(gone)
            for p in partitions:
                self._offsets.pop(p, None)
                self._committed.pop(p, None)
            self._stash = [r for r in self._stash if r.partition not in partitions]
            log.info("partitions_revoked", partitions=sorted(partitions), turbines=len(gone))

    async def on_assigned(self, partitions: set[int]) -> None:
        """Restore the assigned partitions' turbines from their snapshots."""
        async with self._lock:
            self.processor.drop_partitions(partitions)
            if self._discard_snapshots:
                # The input topic was lost: snapshots name offsets of the old topic, which
                # would make the new topic's first records look already processed.
                self._discard_snapshots = False
                snapshots = []
            else:
                try:
                    snapshots = await asyncio.wait_for(
                        self.state.load(partitions), self.settings.commit_timeout_s * 6
                    )
                except Exception as exc:  # noqa: BLE001 - not without state: stop and retry
                    log.error("state_load_failed", error=repr(exc)[:300])  # noqa: TRY400
                    # Consuming without the snapshots would warm up every turbine and
                    # overwrite good snapshots at the next commit: hold the input instead.
                    self.source.pause()
                    self._restart_wanted = True
                    return
            restored = []
            for snapshot in snapshots:
                try:
                    restored.append(self.processor.restore(snapshot))
                except (ValueError, KeyError, TypeError) as exc:
                    # An unreadable snapshot costs that turbine a warm-up, not the service.
                    log.warning("state_snapshot_unusable", error=repr(exc)[:300])
            assigned = self.source.assignment() | partitions
            self.health.assigned = bool(assigned)
            self.metrics.assigned.set(len(assigned))
            self._last_progress = time.monotonic()
            log.info("partitions_assigned", partitions=sorted(partitions), restored=len(restored))

    # ------------------------------------------------------------------ watchdog

    async def _watchdog(self, stop: asyncio.Event) -> None:
        """Watch the broker and progress; unready and recreate the consumer when needed.

        aiokafka consumers can stall silently after broker restarts or rebalances, and a
        broker with memory storage forgets topics and offsets when it restarts
        (docs/pitfalls.md, docs/recovery.md).
        """
        while not stop.is_set():
            await asyncio.sleep(min(1.0, self.settings.watchdog_unready_s / 2))
            if stop.is_set():
                return
            try:
                await self._watch_once()
            except Exception as exc:  # noqa: BLE001 - a watchdog must not die
                log.warning("watchdog_failed", error=repr(exc)[:300])
            except asyncio.CancelledError:
                # A client library's internal cancellation must not end the watchdog
                # (aiokafka's fetcher leaks one when it closes); ours does.
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                log.warning("watchdog_step_cancelled")

    async def _watch_once(self) -> None:
        if self._draining:  # the shutdown owns the consumer now
            return
        for logger, count in take_suppressed().items():
            self.metrics.log_suppressed.labels(logger).inc(count)
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.settings.broker_check_interval_s
            await self._check_broker()
        if self._restart_wanted:
            if time.monotonic() >= self._next_restart:
                await self._restart_source("input_lost_or_consumer_down")
            return
        if not self.health.live and not self._loop_stuck_logged:
            # /healthz/live answers 503 now; an orchestrator restarts the process.
            log.error("main_loop_stuck", seconds=round(time.monotonic() - self.health.loop_beat))
        self._loop_stuck_logged = not self.health.live
        lag = self.source.lag()
        for partition, behind in lag.items():
            self.metrics.lag.labels(str(partition)).set(behind)
        age = time.monotonic() - self._last_progress
        self.metrics.progress_age.set(age)
        waiting = any(v > 0 for v in lag.values()) and not self._paused
        self.health.consuming = not (waiting and age >= self.settings.watchdog_unready_s)
        self.metrics.ready.set(1 if self.health.ready else 0)
        if waiting and age >= self.settings.watchdog_restart_s:
            log.warning("consumer_stalled_restarting", stalled_s=round(age, 1))
            await self._restart_source("stalled")

    async def _check_broker(self) -> None:
        """Ask the broker for the daemon's topics; note loss of reachability or of topics."""
        try:
            missing = await self.source.check()
        except Exception as exc:  # noqa: BLE001 - unreachable, timed out, or no consumer
            if self.health.broker_ok:
                log.error("broker_unreachable", error=repr(exc)[:300])  # noqa: TRY400 - no trace
            self.health.broker_ok = False
            self.metrics.ready.set(0)
            if isinstance(exc, SourceUnavailableError):  # no consumer: a restart failed
                self._restart_wanted = True
            return
        if not self.health.broker_ok:
            log.info("broker_reachable")
        self.health.broker_ok = True
        # A topic can be missing from one metadata answer (leader election); act on two.
        self._missing_streak = self._missing_streak + 1 if missing else 0
        if self._missing_streak < 2:  # two answers in a row
            return
        self._missing_streak = 0
        async with self._lock:
            self._forget_lost(missing)
        if self.source.input_topic in missing:
            self._restart_wanted = True  # a new topic: a new consumer, from its start
            return
        try:  # outputs or state only: recreate them, write every snapshot again
            created = await self.source.recreate_topics()
        except Exception as exc:  # noqa: BLE001 - tried again at the next check
            log.warning("topic_recreation_failed", error=repr(exc)[:300])
            return
        if created:
            self._next_commit = 0.0

    def _forget_lost(self, missing: set[str]) -> None:
        """The broker lost topics (caller holds the lock): say what, reset what depends on it."""
        input_lost = self.source.input_topic in missing
        log.error(
            "topics_lost",
            topics=sorted(missing),
            committed_offsets=dict(sorted(self._ever_committed.items())),
            detail=(
                "the input topic is gone: records after the committed offsets that were not "
                "yet processed are lost; turbines restart with a warm-up"
                if input_lost
                else "output or state topics are gone: they are recreated; snapshots are "
                "written again at the next commit"
            ),
        )
        self.metrics.topics_lost.inc(len(missing))
        if input_lost:
            # Offsets of the new topic start again from 0: nothing of the old one applies,
            # neither the offsets nor the snapshots that name them.
            self._discard_snapshots = True
            self.processor.drop_partitions({t.partition for t in self.processor.turbines.values()})
            self._offsets.clear()
            self._committed.clear()
            self._ever_committed.clear()
            self._stash = []
            self._dirty.clear()
            if self._pending is not None:  # its offsets belong to the lost topic
                self._pending.revoked |= set(self._pending.result.last_offsets)
        else:
            self._dirty |= set(self.processor.turbines)

    async def _restart_source(self, why: str) -> None:
        """Recreate the consumer as a rebalance would: revoke everything, then reassign.

        The revoke commits what was delivered and forgets the turbines; the new consumer's
        assignment restores them from their snapshots, so state and offsets stay together.
        """
        self.metrics.consumer_restarts.inc()
        self._last_progress = time.monotonic()
        self.health.assigned = False
        try:
            assigned = self.source.assignment()
            if assigned:
                await self.on_revoked(assigned)
            # Not under the lock: the new consumer's first assignment calls on_assigned.
            await self.source.restart()
            if not self._paused:  # a pause kept for a failed state load ends here
                self.source.resume()
        except Exception as exc:  # noqa: BLE001 - tried again, with backoff
            self._restart_wanted = True
            self._restart_failures += 1
            delay = min(
                self.settings.retry_max_s,
                self.settings.retry_initial_s * 2.0**self._restart_failures,
            )
            self._next_restart = time.monotonic() + delay
            log.warning(
                "consumer_restart_failed",
                why=why,
                error=repr(exc)[:300],
                attempt=self._restart_failures,
                retry_in_s=round(delay, 2),
            )
            return
        self._restart_wanted = False
        self._restart_failures = 0
        log.info("consumer_restarted", why=why)
