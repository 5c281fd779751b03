"""Real servers for the integration tests: a Kafka-protocol broker and an InfluxDB-protocol
database, started once per session on free loopback ports and stopped by PID.

If a server cannot start, the tests ERROR (they are never skipped silently). Each test gets
its own topics, consumer group and measurements, so tests do not see each other's data.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from wtbi_devtools.localenv import LocalServers, start_all

from tests.conftest import TINY_SETTINGS
from wtbi_monitor.adapters.files import alarm_record, score_records
from wtbi_monitor.adapters.kafka import ensure_topics, produce_readings
from wtbi_monitor.codec import RecordDecoder
from wtbi_monitor.config import Settings
from wtbi_monitor.replay import frames_to_messages, replay_messages
from wtbi_monitor.scoring import StreamProcessor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def servers(tmp_path_factory) -> Iterator[LocalServers]:
    """Tansu + VictoriaMetrics for the whole session."""
    found = start_all(tmp_path_factory.mktemp("servers"))
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture(scope="session")
def stream_messages(tiny_farm):
    """About 2.5 hours of both turbines of the tiny farm, as input messages."""
    msgs = frames_to_messages(tiny_farm, Settings().preprocessing.channels)
    return msgs[: int(2.5 * 3600 / 7) * 2]


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.3) -> None:
    """Poll until `check()` is true or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Harness:
    """Per-test names and helpers around the shared servers."""

    servers: LocalServers
    bundle_path: Path
    workdir: Path
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    threshold_override: float | None = None
    partitions: int = 4  # of the input topic
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)
    named: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def overrides(self) -> dict[str, dict[str, Any]]:
        """Settings sections for this test."""
        u = self.uid
        return {
            **{k: v for k, v in TINY_SETTINGS.items() if k != "training"},
            "model": {"preset": "small", "threshold_override": self.threshold_override},
            "kafka": {
                "bootstrap_servers": self.servers.bootstrap,
                "input_topic": f"in-{u}",
                "alert_topic": f"alerts-{u}",
                "dead_letter_topic": f"dlq-{u}",
                "state_topic": f"state-{u}",
                "group_id": f"group-{u}",
                "input_partitions": self.partitions,
                # the test broker's first assignment waits ~session_timeout/2 (docs/infra)
                "session_timeout_ms": 3000,
                "heartbeat_interval_ms": 500,
            },
            "influx": {
                "url": self.servers.influx_url,
                "score_measurement": f"score_{u}",
                "alarm_measurement": f"alarm_{u}",
            },
            "service": {
                "bundle": str(self.bundle_path),
                "http_port": 0,
                "commit_interval_s": 0.5,
                "max_wait_ms": 100,
                "max_batch_records": 500,
                "retry_initial_s": 0.1,
                "retry_max_s": 1.0,
                "shutdown_timeout_s": 10,
            },
        }

    def settings(self, **sections: dict[str, Any]) -> Settings:
        """The settings tree for this test (no TOML file involved)."""
        merged = self.overrides()
        for name, values in sections.items():
            merged[name] = {**merged.get(name, {}), **values}
        return Settings(**merged)

    def env(self, **sections: dict[str, Any]) -> dict[str, str]:
        """The same settings as WTBI_ environment variables, for a daemon subprocess."""
        env = dict(os.environ)
        merged = self.overrides()
        for name, values in sections.items():
            merged[name] = {**merged.get(name, {}), **values}
        for section, values in merged.items():
            for key, value in values.items():
                if value is None:
                    continue
                text = json.dumps(value) if isinstance(value, (list, tuple, bool)) else str(value)
                env[f"WTBI_{section.upper()}__{key.upper()}"] = text
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_daemon(
        self, name: str = "daemon", **sections: dict[str, Any]
    ) -> subprocess.Popen[bytes]:
        """`wtbi-monitor serve` as a subprocess, logging JSON to workdir/<name>.log."""
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "wtbi_monitor", "--log-format", "json", "serve"],
            env=self.env(**sections),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()  # the child has its own copy of the descriptor
        self.daemons.append(proc)
        self.named[name] = proc
        return proc

    def wait(
        self, check: Callable[[], bool], timeout: float, what: str, running: tuple[str, ...]
    ) -> None:
        """`wait_for`, failing at once with its log's tail if a daemon of `running` exits."""

        def probe() -> bool:
            for name in running:
                code = self.named[name].poll()
                if code is not None:
                    path = self.workdir / f"{name}.log"
                    tail = path.read_text()[-3000:] if path.exists() else ""
                    pytest.fail(f"daemon {name!r} exited ({code}) before {what}:\n{tail}")
            return check()

        wait_for(probe, timeout, what)

    def log_lines(self, name: str = "daemon") -> list[dict[str, Any]]:
        """Parsed JSON log lines of a daemon."""
        path = self.workdir / f"{name}.log"
        out = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def produce(self, messages: list[tuple[int, str, bytes]], **kw: Any) -> None:
        """Publish messages (creates the topics first)."""
        settings = self.settings()

        async def run() -> None:
            await ensure_topics(settings.kafka)
            await produce_readings(settings.kafka, messages, **kw)

        asyncio.run(run())

    def expected(
        self, messages: list[tuple[int, str, bytes]], **sections: dict[str, Any]
    ) -> Outputs:
        """What replay (the same processor, in-process) gives for these messages."""
        from wtbi_monitor.model import load_bundle

        settings = self.settings(**sections)
        bundle = load_bundle(
            self.bundle_path,
            expected=settings.preprocessing,
            threshold_override=settings.model.threshold_override,
        )
        processor = StreamProcessor(
            bundle,
            settings.preprocessing,
            settings.alarm,
            RecordDecoder(
                bundle.source_channels,
                max_future_s=1e12,
                valid_ranges=settings.preprocessing.valid_ranges,
            ),
            512,
        )
        out = Outputs()
        for result in replay_messages(processor, messages, batch_records=700):
            out.dead_letters += [d.reason for d in result.dead_letters]
            for rec in score_records(result.points):
                out.scores[(rec["turbine_id"], rec["time_ms"])] = rec["score"]
            for event in result.events:
                rec = alarm_record(event)
                out.alarms[(rec["alarm_id"], rec["state"])] = rec
        return out

    # ----------------------------------------------------------------- reading back

    def db_export(self, series: str) -> list[dict[str, Any]]:
        """Raw samples of one series from the database (after a flush)."""
        base = self.servers.influx_url
        urllib.request.urlopen(
            urllib.request.Request(f"{base}/internal/force_flush", method="POST"), timeout=10
        ).read()
        data = urllib.parse.urlencode({"match[]": series}).encode()
        with urllib.request.urlopen(f"{base}/api/v1/export", data=data, timeout=30) as r:
            return [json.loads(line) for line in r.read().splitlines() if line.strip()]

    def db_scores(self) -> dict[tuple[str, int], float]:
        """(turbine, time ms) -> score, from the database; rewrites must agree."""
        out: dict[tuple[str, int], float] = {}
        for s in self.db_export(f"score_{self.uid}_score"):
            tid = s["metric"]["turbine"]
            for value, ts in zip(s["values"], s["timestamps"], strict=True):
                key = (tid, int(ts))
                assert out.get(key, value) == value, f"two different values for {key}"
                out[key] = value
        return out

    def db_alarm_points(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(alarm id, state) -> tags and time of the alarm points in the database."""
        out = {}
        for s in self.db_export(f"alarm_{self.uid}_active"):
            m = s["metric"]
            out[(m["alarm_id"], m["state"])] = {"tags": m, "timestamps": s["timestamps"]}
        return out

    def topic_messages(self, topic: str) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
        """Every message of a topic: (key, value, headers)."""
        return asyncio.run(_read_all(self.servers.bootstrap, topic))

    def alerts(self) -> list[dict[str, Any]]:
        """Alert-topic messages, decoded."""
        return [json.loads(v) for _, v, _ in self.topic_messages(f"alerts-{self.uid}")]

    def committed(self, partitions: int | None = None) -> dict[int, int]:
        """The group's committed offsets per input partition (partitions with a commit)."""
        return asyncio.run(
            _committed(
                self.servers.bootstrap,
                f"group-{self.uid}",
                f"in-{self.uid}",
                partitions or self.partitions,
            )
        )

    def end_offsets(
        self, messages: list[tuple[int, str, bytes]], partitions: int | None = None
    ) -> dict[int, int]:
        """Offsets the group must reach: records per partition (keys hashed by the producer)."""
        from aiokafka.partitioner import DefaultPartitioner

        part = DefaultPartitioner()
        partitions = partitions or self.partitions
        counts: dict[int, int] = {}
        for _t, turbine, _m in messages:
            p = part(turbine.encode(), list(range(partitions)), list(range(partitions)))
            counts[p] = counts.get(p, 0) + 1
        return counts

    def stop_all(self) -> None:
        """Kill any daemon still running."""
        for proc in self.daemons:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@dataclass
class Outputs:
    """Score points and alarm events (by identity)."""

    scores: dict[tuple[str, int], float] = field(default_factory=dict)
    alarms: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    dead_letters: list[str] = field(default_factory=list)


async def _read_all(
    bootstrap: str, topic: str
) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out = []
        idle = 0
        while idle < 4:
            batch = await consumer.getmany(timeout_ms=300)
            records = [r for rs in batch.values() for r in rs]
            idle = 0 if records else idle + 1
            out += [(r.key, r.value, dict(r.headers or ())) for r in records]
        return out
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        # the test broker needs the partitions named explicitly (docs/infra)
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def stream_threshold(servers, tiny_bundle, stream_messages, tmp_path_factory) -> float:
    """The 80th percentile of the streamed windows' own scores: every test sees alarms
    raised AND cleared, whatever the tiny model learned."""
    bundle_path = tiny_bundle.path
    assert bundle_path is not None
    probe = Harness(servers, bundle_path, tmp_path_factory.mktemp("probe"))
    scores = np.asarray(list(probe.expected(stream_messages).scores.values()))
    return float(np.quantile(scores, 0.8))


@pytest.fixture
def harness(servers, tiny_bundle, stream_threshold, tmp_path) -> Iterator[Harness]:
    """A harness with its own topics; kills leftover daemons after the test."""
    bundle_path = tiny_bundle.path
    assert bundle_path is not None
    h = Harness(servers, bundle_path, tmp_path, threshold_override=stream_threshold)
    try:
        yield h
    finally:
        h.stop_all()
