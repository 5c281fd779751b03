"""The service's view of the outside world: protocols the adapters implement.

The service (service.py) and the delivery (delivery.py) talk only to these; adapters/
implements them with aiokafka, influxdb-client and files, and tests drive the service with
in-memory versions. Every port speaks domain types (domain.py); each sink owns its wire
format (line protocol, alert JSON, dead-letter headers).
"""

from __future__ import annotations

from typing import Protocol

from wtbi_monitor.domain import AlarmEvent, DeadLetterRecord, InputRecord, ScorePoints


class RebalanceHandler(Protocol):
    """Called by the source around partition reassignments."""

    async def on_revoked(self, partitions: set[int]) -> None:
        """Partitions are about to be taken away: flush and commit them."""
        ...

    async def on_assigned(self, partitions: set[int]) -> None:
        """Partitions were given to us: restore their state."""
        ...


class Source(Protocol):
    """A partitioned, committable input (a Kafka consumer group member)."""

    @property
    def input_topic(self) -> str:
        """The name of the input topic (as `check` reports it when it is lost)."""
        ...

    def set_handler(self, handler: RebalanceHandler) -> None:
        """Register the rebalance handler (before `start`)."""
        ...

    async def start(self) -> None:
        """Connect and join the group."""
        ...

    async def stop(self) -> None:
        """Leave the group and close."""
        ...

    async def restart(self) -> None:
        """Recreate the underlying consumer, and the daemon's topics where it owns them."""
        ...

    async def recreate_topics(self) -> list[str]:
        """Create the daemon's missing topics where it owns them; return those created."""
        ...

    async def check(self) -> set[str]:
        """The daemon's topics the broker does not have; raise if it cannot be reached."""
        ...

    async def fetch(self, max_records: int, timeout_ms: int) -> list[InputRecord]:
        """Next records of the assigned partitions, in partition-offset order."""
        ...

    async def commit(self, offsets: dict[int, int]) -> None:
        """Commit: per partition, the offset of the NEXT record to read."""
        ...

    def pause(self) -> None:
        """Stop fetching (the consumer stays in the group)."""
        ...

    def resume(self) -> None:
        """Fetch again."""
        ...

    def assignment(self) -> set[int]:
        """Assigned partitions."""
        ...

    def lag(self) -> dict[int, int]:
        """Per assigned partition: records between our position and the highwater mark."""
        ...


class DatabaseSink(Protocol):
    """The time-series database: score points and alarm transitions."""

    async def write(self, points: ScorePoints, events: list[AlarmEvent]) -> int:
        """Write and wait for the acknowledgement; raise SinkError on a failure.

        Returns how many points the database refused for good (dead-lettered by the sink,
        not retried).
        """
        ...


class AlertSink(Protocol):
    """The alert feed: one message per alarm transition."""

    async def publish(self, events: list[AlarmEvent]) -> None:
        """Send the events and wait until all are acknowledged."""
        ...


class DeadLetterSink(Protocol):
    """Where rejected records go, with their reasons."""

    async def publish(self, letters: list[DeadLetterRecord]) -> None:
        """Send and wait until acknowledged."""
        ...


class StateStore(Protocol):
    """Per-turbine snapshots (a compacted topic)."""

    async def save(self, snapshots: list[tuple[str, bytes]]) -> None:
        """Store (turbine id, snapshot) pairs; wait until acknowledged."""
        ...

    async def load(self, partitions: set[int]) -> list[bytes]:
        """The latest snapshot of every turbine of the given input partitions."""
        ...
