"""The daemon's metrics (Prometheus) and health state.

One `ServiceMetrics` per service instance, each with its own registry, so that two
instances in one process (tests) do not collide. adapters/http.py serves them on
/metrics and /healthz; docs/operations.md lists every metric.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ServiceMetrics:
    """Counters, gauges and histograms of one daemon instance."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.consumed = Counter("wtbi_records_consumed", "Input records fetched", registry=r)
        self.decoded = Counter("wtbi_readings_accepted", "Valid readings fed to state", registry=r)
        self.rejected = Counter(
            "wtbi_records_rejected", "Records sent to the dead-letter topic", ["reason"], registry=r
        )
        self.skipped = Counter(
            "wtbi_records_replayed_skipped",
            "Records already contained in a restored snapshot",
            registry=r,
        )
        self.windows = Counter("wtbi_windows_scored", "Windows scored", registry=r)
        self.outside_coverage = Counter(
            "wtbi_windows_outside_coverage",
            "Windows with values outside the training data's range (drift; see clip_fraction)",
            registry=r,
        )
        self.attributed = Counter(
            "wtbi_windows_attributed",
            "Windows at or above the clear level, scored again for per-channel errors",
            registry=r,
        )
        self.alarms = Counter("wtbi_alarm_events", "Alarm transitions", ["state"], registry=r)
        self.gated = Counter(
            "wtbi_alarm_gated_windows",
            "Windows with evidence that a physics gate kept from counting, per gate",
            ["gate"],
            registry=r,
        )
        self.drifting = Gauge(
            "wtbi_turbine_drifting",
            "1 while a turbine's above-threshold rate exceeds drift_factor x its calibrated rate",
            ["turbine"],
            registry=r,
        )
        self.sink_errors = Counter(
            "wtbi_sink_errors", "Failed sink writes", ["sink", "kind"], registry=r
        )
        self.points_refused = Counter(
            "wtbi_points_refused",
            "Score/alarm lines the database refused for good (sent to the dead-letter topic)",
            registry=r,
        )
        self.dropped = Counter(
            "wtbi_outputs_dropped",
            "Outputs a sink refused for good (not retried), per delivery step",
            ["sink"],
            registry=r,
        )
        self.topics_lost = Counter(
            "wtbi_topics_lost", "Daemon topics the broker lost (then recreated)", registry=r
        )
        self.log_suppressed = Counter(
            "wtbi_log_lines_suppressed",
            "Repeated library log lines not printed (one per kind per interval is)",
            ["logger"],
            registry=r,
        )
        self.commits = Counter("wtbi_commits", "Offset commits (after snapshots)", registry=r)
        self.consumer_restarts = Counter(
            "wtbi_consumer_restarts", "Consumers recreated by the watchdog", registry=r
        )
        self.batch_records = Histogram(
            "wtbi_batch_records", "Records per micro-batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000), registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            "wtbi_inference_seconds", "Scoring time per micro-batch", registry=r
        )
        self.latency_seconds = Histogram(
            "wtbi_end_to_end_latency_seconds",
            "Oldest record's produce time to acknowledged outputs, per batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge("wtbi_consumer_lag", "Highwater - position", ["partition"], registry=r)
        self.progress_age = Gauge(
            "wtbi_last_progress_age_seconds",
            "Seconds since a record was fetched or offsets were committed",
            registry=r,
        )
        self.assigned = Gauge("wtbi_assigned_partitions", "Partitions assigned", registry=r)
        self.paused = Gauge("wtbi_paused", "1 while input is paused for a sink", registry=r)
        self.ready = Gauge("wtbi_ready", "1 when ready", registry=r)


@dataclass
class Health:
    """Liveness and readiness, updated by the service loop and its watchdog."""

    started: bool = False
    loop_beat: float = field(default_factory=time.monotonic)
    assigned: bool = False
    consuming: bool = True
    sinks_ok: bool = True
    broker_ok: bool = True
    commits_ok: bool = True
    stopping: bool = False
    liveness_timeout_s: float = 60.0

    def beat(self) -> None:
        """Called by the main loop on every iteration."""
        self.loop_beat = time.monotonic()

    @property
    def live(self) -> bool:
        """The main loop has turned recently."""
        return time.monotonic() - self.loop_beat < self.liveness_timeout_s

    @property
    def ready(self) -> bool:
        """Started, assigned, consuming, the broker reachable and the sinks writable."""
        return (
            self.started and self.live and self.assigned and self.consuming and self.sinks_ok
            and self.broker_ok and self.commits_ok and not self.stopping
        )  # fmt: skip

    def as_dict(self) -> dict[str, bool]:
        """JSON body of /healthz."""
        return {
            "live": self.live,
            "ready": self.ready,
            "started": self.started,
            "assigned": self.assigned,
            "consuming": self.consuming,
            "sinks_ok": self.sinks_ok,
            "broker_ok": self.broker_ok,
            "commits_ok": self.commits_ok,
            "stopping": self.stopping,
        }
