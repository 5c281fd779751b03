"""One delivery for the daemon and for replay: a batch's outputs to every sink, acknowledged.

`serve` (through the service) and `replay` (to the sinks or to a file) hand each processed
micro-batch to a `Delivery`, which pushes it through three steps in a fixed order:

1. dead letters (rejected records, with their reasons);
2. score points and alarm events to the database;
3. alarm events to the alert feed.

Each sink must acknowledge before the next step starts, so a record's dead letter is
never behind its batch's outputs, and an alert never precedes its database point. A
step's retryable failure (429, 5xx, a lost connection) stops the batch where it stands:
the `Outbox` remembers the step and the attempts, and the caller tries again after
`backoff()` (exponential, or the sink's Retry-After hint). A step refused for good (too
large, not authorised, a 4xx) is dropped with an error log and a counter, never retried:
retrying it would stall the input for ever (a poison pill). Sinks are idempotent (points
overwrite, alarm ids are deterministic), so repeating a step after a crash is harmless.

What happens after delivery belongs to the caller: the service then snapshots the changed
turbines and commits the input offsets (service.py); replay has neither.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from wtbi_monitor.errors import SinkError
from wtbi_monitor.logs import get_logger
from wtbi_monitor.ports import AlertSink, DatabaseSink, DeadLetterSink
from wtbi_monitor.scoring import BatchResult
from wtbi_monitor.telemetry import ServiceMetrics

log = get_logger(__name__)

#: Delivery steps of a batch, in order (also the `sink` label of the metrics).
STEPS = ("dead_letters", "points", "alerts")


@dataclass
class Outbox:
    """One batch on its way to the sinks, and how far it got.

    Attributes:
        result: the processed batch.
        step: index into STEPS of the next step to run (len(STEPS): delivered).
        attempts: failed attempts so far (for the backoff).
        retry_after_s: the last failing sink's Retry-After hint, if any.
    """

    result: BatchResult
    step: int = 0
    attempts: int = 0
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        """Every step acknowledged (or dropped as refused for good)."""
        return self.step >= len(STEPS)


class UndeliveredError(SinkError):
    """A batch could not be delivered within the time given (`Delivery.deliver`)."""


class Delivery:
    """Pushes batches through dead letters -> database -> alerts, in that order.

    Args:
        database: score points and alarm events.
        alerts: the alert feed; None skips the step (replay to a file).
        dead_letters: rejected records; None skips the step (replay to a file, which only
            counts them).
        retry_initial_s, retry_max_s: the exponential backoff between attempts.
        metrics: counters of sink errors, refused points and dropped outputs.
    """

    def __init__(
        self,
        *,
        database: DatabaseSink,
        alerts: AlertSink | None,
        dead_letters: DeadLetterSink | None,
        retry_initial_s: float,
        retry_max_s: float,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.database = database
        self.alerts = alerts
        self.dead_letters = dead_letters
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.metrics = metrics or ServiceMetrics()

    async def attempt(self, outbox: Outbox) -> bool:
        """Run the outbox's remaining steps; False when a sink failed and a retry is due.

        A retryable failure is logged (`sink_write_failed`), counted and recorded in the
        outbox; a permanent one drops that step (`sink_write_dropped`) and goes on.
        """
        result = outbox.result
        while not outbox.delivered:
            step = STEPS[outbox.step]
            try:
                if step == "dead_letters" and result.dead_letters and self.dead_letters:
                    await self.dead_letters.publish(result.dead_letters)
                elif step == "points" and (len(result.points) or result.events):
                    refused = await self.database.write(result.points, result.events)
                    self.metrics.points_refused.inc(refused)
                elif step == "alerts" and result.events and self.alerts:
                    await self.alerts.publish(result.events)
            except SinkError as exc:
                outbox.attempts += 1
                kind = "retryable" if exc.retryable else "permanent"
                self.metrics.sink_errors.labels(step, kind).inc()
                if exc.retryable:
                    outbox.retry_after_s = exc.retry_after_s
                    log.warning(
                        "sink_write_failed",
                        sink=step,
                        attempt=outbox.attempts,
                        error=str(exc),
                        retry_after_s=exc.retry_after_s,
                    )
                    return False
                self._drop_step(result, step, exc)
            outbox.step += 1
        return True

    def backoff(self, outbox: Outbox | None) -> float:
        """Seconds to wait before the next attempt: exponential, at least the sink's hint."""
        attempts = outbox.attempts if outbox is not None else 1
        delay = min(self.retry_max_s, self.retry_initial_s * 2.0 ** max(0, attempts - 1))
        hinted = outbox.retry_after_s if outbox is not None else None
        return max(delay, hinted) if hinted else delay

    async def deliver(self, result: BatchResult, *, give_up_after_s: float) -> Outbox:
        """Deliver one batch completely, retrying with backoff (replay's way).

        Raises UndeliveredError when the sinks have not taken it after `give_up_after_s`.
        """
        outbox = Outbox(result)
        deadline = time.monotonic() + give_up_after_s
        while not await self.attempt(outbox):
            delay = self.backoff(outbox)
            if time.monotonic() + delay > deadline:
                msg = (
                    f"gave up delivering a batch after {outbox.attempts} attempts in "
                    f"{give_up_after_s:g} s: the {STEPS[outbox.step]} sink keeps failing"
                )
                raise UndeliveredError(msg, retryable=True)
            await asyncio.sleep(delay)
        return outbox

    def _drop_step(self, result: BatchResult, step: str, exc: SinkError) -> None:
        count = {
            "dead_letters": len(result.dead_letters),
            "points": len(result.points) + len(result.events),
            "alerts": len(result.events),
        }[step]
        if exc.refused is not None:  # the sink delivered the others
            count = min(count, exc.refused)
        self.metrics.dropped.labels(step).inc(count)
        coordinates = (
            [(d.record.partition, d.record.offset) for d in result.dead_letters[:20]]
            if step == "dead_letters"
            else sorted(result.last_offsets.items())
        )
        log.error(
            "sink_write_dropped",
            sink=step,
            items=count,
            error=str(exc)[:500],
            records=coordinates,
            detail="refused for good: not retried; (partition, offset) of the records "
            "(for points and alerts: the batch's last offset per partition)",
        )
