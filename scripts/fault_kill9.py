"""Kill the daemon with SIGKILL N times over a live stream, then compare its outputs with replay.

The script starts its own local servers (Tansu broker and VictoriaMetrics, loopback only),
trains a tiny model bundle (or uses --bundle), simulates a few hours of a small farm at 7 s,
and produces it into Kafka at a pace chosen so that the kills land mid-stream. It runs
`python -m wtbi_monitor --log-format json serve` as a subprocess, kills it with SIGKILL at
N random moments (seeded delays after each instance's partition assignment), restarts it
each time, lets the last instance consume to the end (the group's committed offsets reach
every partition's end), stops it with SIGTERM and then compares:

* score points in the database with replay's (lost, extra, differing beyond a relative
  tolerance of 1e-5, and not bit-identical);
* alarm points in the database and alarm events on the alert topic with replay's, by
  (alarm_id, state, event_time_ms); the alert topic is at-least-once, so identical copies
  are allowed (and counted as duplicated);
* dead letters (by source partition and offset) with replay's.

    python scripts/fault_kill9.py --kills 10 --seed 0
    python scripts/fault_kill9.py --kills 2 --hours 2 --json /tmp/kill9.json --keep

Exit status: 0 when nothing is lost, extra or differing beyond tolerance; 1 when something
is; 2 when the run itself failed (a server or daemon did not start, a bounded wait ran out).
Results: docs/recovery.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from wtbi_devtools.localenv import LocalServers, start_all

from wtbi_monitor.adapters.files import alarm_record, score_records
from wtbi_monitor.adapters.kafka import ensure_topics, produce_readings
from wtbi_monitor.adapters.line_protocol import tag
from wtbi_monitor.codec import RecordDecoder
from wtbi_monitor.config import Settings, SimulationSettings
from wtbi_monitor.data.synthetic import FarmSimulator
from wtbi_monitor.logs import configure_logging
from wtbi_monitor.model import load_bundle, save_bundle
from wtbi_monitor.replay import frames_to_messages, replay_messages
from wtbi_monitor.scoring import StreamProcessor
from wtbi_monitor.training.train import fit_member, prepare_training_data, split_history

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4
REL_TOL = 1e-5
ABS_TOL = 1e-6
ASSIGN_TIMEOUT_S = 120.0  # daemon start (imports, bundle) plus the broker's first assignment
DRAIN_TIMEOUT_S = 300.0  # the last instance consumes to the end
STOP_TIMEOUT_S = 30.0  # SIGTERM to exit
PRODUCED_AT_LAST_KILL = 0.9  # share of the stream produced when the last kill lands

# A small model and a short on-delay, so that a few hours give alarm events to compare
# (the same values as the integration tests' TINY_SETTINGS).
TRAINING = {
    "epochs": 2,
    "pretrain_epochs": 1,
    "warmup_epochs": 1,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "max_train_windows": 500,
    "max_validation_windows": 500,
}
ALARM = {
    "on_window_s": 35.0,
    "on_fraction": 0.6,
    "off_delay_s": 42.0,
    "min_duration_s": 0.0,
    "rearm_s": 0.0,
    "clear_tail": 0.3,
    "per_turbine_thresholds": False,
}

Messages = list[tuple[int, str, bytes]]
AlarmKey = tuple[str, str, int]  # alarm_id, state, event_time_ms


class FaultRunError(RuntimeError):
    """The run itself failed (not the comparison): a start-up or a bounded wait."""


def log(text: str) -> None:
    """Progress on stderr, so that stdout keeps only the result table."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> float:
    """Poll until `check()` is true; return the seconds it took, raise naming `what`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(every)
    msg = f"timed out after {timeout:.0f} s waiting for {what}"
    raise FaultRunError(msg)


# ---------------------------------------------------------------- settings


@dataclass
class RunConfig:
    """Per-run names (topics, group, measurements) and the settings derived from them."""

    servers: LocalServers
    bundle: Path
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    threshold_override: float | None = None

    def sections(self) -> dict[str, dict[str, Any]]:
        """Settings sections for the daemon and for replay."""
        u = self.uid
        return {
            "model": {"preset": "small", "threshold_override": self.threshold_override},
            "alarm": ALARM,
            "kafka": {
                "bootstrap_servers": self.servers.bootstrap,
                "input_topic": f"in-{u}",
                "alert_topic": f"alerts-{u}",
                "dead_letter_topic": f"dlq-{u}",
                "state_topic": f"state-{u}",
                "group_id": f"group-{u}",
                "input_partitions": PARTITIONS,
                # the local broker's first assignment waits ~session_timeout/2
                "session_timeout_ms": 3000,
                "heartbeat_interval_ms": 500,
            },
            "influx": {
                "url": self.servers.influx_url,
                "score_measurement": f"score_{u}",
                "alarm_measurement": f"alarm_{u}",
            },
            "service": {
                "bundle": str(self.bundle),
                "http_port": 0,
                "http_host": "127.0.0.1",
                "commit_interval_s": 0.5,
                "max_wait_ms": 100,
                "max_batch_records": 500,
                "retry_initial_s": 0.1,
                "retry_max_s": 1.0,
                "shutdown_timeout_s": 10,
            },
        }

    def settings(self) -> Settings:
        """The settings tree (no TOML file involved)."""
        return Settings(**self.sections())  # type: ignore[arg-type]

    def env(self) -> dict[str, str]:
        """The same settings as WTBI_ environment variables, for a daemon subprocess."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WTBI_")}
        for section, values in self.sections().items():
            for key, value in values.items():
                if value is None:
                    continue
                text = json.dumps(value) if isinstance(value, (list, tuple, bool)) else str(value)
                env[f"WTBI_{section.upper()}__{key.upper()}"] = text
        env["PYTHONUNBUFFERED"] = "1"
        return env


# ---------------------------------------------------------------- bundle, stream, replay


def train_bundle(folder: Path) -> Path:
    """A small calibrated IAE-LSTM-KL bundle on two simulated winter days (~30 s)."""
    frames, _ = FarmSimulator(
        SimulationSettings(
            turbines=2, days=2.0, seed=24, start="2015-12-10T00:00:00", icing_frequency=2.0
        )
    ).generate()
    settings = Settings(model={"preset": "small"}, training=TRAINING)
    train, validation = split_history(frames, settings.training)
    data = prepare_training_data(train, validation, settings)
    bundle = fit_member("iae_lstm_kl:soft", data, settings, name="fault-kill9")
    return save_bundle(folder, bundle)


def make_stream(hours: float, turbines: int, seed: int) -> Messages:
    """A later stretch of a simulated farm (with icing weather), as input messages."""
    frames, _ = FarmSimulator(
        SimulationSettings(
            turbines=turbines,
            days=hours / 24.0,
            seed=seed,
            start="2015-12-16T00:00:00",
            icing_frequency=2.0,
        )
    ).generate()
    return frames_to_messages(frames, Settings().preprocessing.channels)


@dataclass
class Expected:
    """Replay's outputs, by identity."""

    scores: dict[tuple[str, int], float] = field(default_factory=dict)
    alarms: dict[AlarmKey, dict[str, Any]] = field(default_factory=dict)
    dead_letters: int = 0


def replay(bundle_path: Path, settings: Settings, messages: Messages) -> Expected:
    """What the same processor gives in-process for these messages."""
    bundle = load_bundle(
        bundle_path,
        expected=settings.preprocessing,
        threshold_override=settings.model.threshold_override,
    )
    decoder = RecordDecoder(
        bundle.source_channels, max_future_s=1e12, valid_ranges=settings.preprocessing.valid_ranges
    )
    processor = StreamProcessor(
        bundle, settings.preprocessing, settings.alarm, decoder, settings.service.score_batch_size
    )
    out = Expected()
    for result in replay_messages(processor, messages, batch_records=700):
        out.dead_letters += len(result.dead_letters)
        for rec in score_records(result.points):
            out.scores[rec["turbine_id"], rec["time_ms"]] = rec["score"]
        for event in result.events:
            rec = alarm_record(event)
            rec.pop("type")
            out.alarms[rec["alarm_id"], rec["state"], rec["event_time_ms"]] = rec
    return out


# ---------------------------------------------------------------- broker and database


def end_offsets(messages: Messages) -> dict[int, int]:
    """Offsets the group must reach: records per partition (keys hashed like the producer)."""
    part = DefaultPartitioner()
    every = list(range(PARTITIONS))
    counts: Counter[int] = Counter()
    for _t, turbine, _m in messages:
        counts[part(turbine.encode(), every, every)] += 1
    return dict(counts)


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets per input partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        # the local broker needs the partitions named explicitly
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        await admin.close()


def committed(cfg: RunConfig) -> dict[int, int]:
    """Committed offsets of the run's group (empty on a transient broker error)."""
    try:
        return asyncio.run(
            asyncio.wait_for(
                _committed(cfg.servers.bootstrap, f"group-{cfg.uid}", f"in-{cfg.uid}"), 20
            )
        )
    except (TimeoutError, OSError, RuntimeError) as exc:
        log(f"committed offsets not readable this time: {exc!r}")
        return {}


async def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    """Every message of a topic from the beginning: (value, headers)."""
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
        out: list[tuple[bytes, dict[str, bytes]]] = []
        idle = 0
        while idle < 4:
            batch = await consumer.getmany(timeout_ms=300)
            records = [r for rs in batch.values() for r in rs]
            idle = 0 if records else idle + 1
            out += [(r.value, dict(r.headers or ())) for r in records]
        return out
    finally:
        await consumer.stop()


def topic_messages(cfg: RunConfig, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    """A topic's messages, bounded in time."""
    return asyncio.run(asyncio.wait_for(_read_all(cfg.servers.bootstrap, topic), 120))


def db_export(cfg: RunConfig, series: str) -> list[dict[str, Any]]:
    """Raw samples of one series from the database (after a flush)."""
    base = cfg.servers.influx_url
    flush = urllib.request.Request(f"{base}/internal/force_flush", method="POST")
    with urllib.request.urlopen(flush, timeout=10) as r:
        r.read()
    data = urllib.parse.urlencode({"match[]": series}).encode()
    with urllib.request.urlopen(f"{base}/api/v1/export", data=data, timeout=60) as r:
        return [json.loads(line) for line in r.read().splitlines() if line.strip()]


# ---------------------------------------------------------------- producer and daemons


class PacedProducer(threading.Thread):
    """Produces the stream in the background at a rate the kill loop adjusts."""

    def __init__(self, settings: Settings, messages: Messages) -> None:
        super().__init__(name="paced-producer", daemon=True)
        self.settings = settings
        self.messages = messages
        self.produced = 0
        self.error: BaseException | None = None
        self._rate = 0.0  # records per second; 0 = paused
        self._lock = threading.Lock()
        self._halt = threading.Event()

    @property
    def rate(self) -> float:
        """Current records per second."""
        with self._lock:
            return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        with self._lock:
            self._rate = max(0.0, value)

    @property
    def done(self) -> bool:
        """Every message was acknowledged by the broker."""
        return self.produced >= len(self.messages)

    def stop(self) -> None:
        """Stop after the current chunk."""
        self._halt.set()

    def run(self) -> None:
        """The thread's body: its own event loop."""
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc

    async def _run(self) -> None:
        """Send what the rate allows every half second, in order."""
        allowance = 0.0
        last = time.monotonic()
        while not self.done and not self._halt.is_set():
            await asyncio.sleep(0.5)
            now = time.monotonic()
            allowance += self.rate * (now - last)
            last = now
            n = min(int(allowance), len(self.messages) - self.produced)
            if n <= 0:
                continue
            chunk = self.messages[self.produced : self.produced + n]
            await produce_readings(self.settings.kafka, chunk)
            self.produced += n
            allowance -= n


@dataclass
class Instance:
    """One daemon process and what happened to it."""

    index: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float
    assigned_after_s: float | None = None
    kill_delay_s: float | None = None
    produced_at_kill: int | None = None
    committed_at_kill: int | None = None
    exit_code: int | None = None

    def lines(self) -> list[dict[str, Any]]:
        """Parsed JSON log lines so far (other lines are skipped)."""
        out = []
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        for line in text.splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                item = json.loads(line)
                if isinstance(item, dict):
                    out.append(item)
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        """Log lines with `event == name`."""
        return [m for m in self.lines() if m.get("event") == name]


def start_daemon(cfg: RunConfig, workdir: Path, index: int) -> Instance:
    """`wtbi-monitor serve` as a subprocess in its own session, logging JSON to a file."""
    path = workdir / f"daemon-{index:02d}.log"
    with path.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "wtbi_monitor", "--log-format", "json", "serve"],
            env=cfg.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    return Instance(index, proc, path, time.monotonic())


def check_alive(inst: Instance) -> None:
    """Raise with the log's tail if the daemon exited on its own."""
    code = inst.proc.poll()
    if code is not None:
        tail = inst.log_path.read_text(errors="replace").splitlines()[-15:]
        msg = f"daemon {inst.index} exited by itself with status {code}; log tail:\n" + "\n".join(
            tail
        )
        raise FaultRunError(msg)


def wait_assigned(inst: Instance) -> None:
    """Wait for the instance's first `partitions_assigned` log line."""

    def assigned() -> bool:
        check_alive(inst)
        return bool(inst.events("partitions_assigned"))

    wait_for(assigned, ASSIGN_TIMEOUT_S, f"daemon {inst.index} to be assigned partitions", 0.2)
    inst.assigned_after_s = time.monotonic() - inst.started


def sleep_alive(inst: Instance, seconds: float) -> None:
    """Sleep, checking every 0.1 s that the daemon is still running."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        check_alive(inst)
        time.sleep(min(0.1, left))


def stop_daemons(instances: list[Instance]) -> None:
    """SIGKILL every daemon that still runs (cleanup path)."""
    for inst in instances:
        if inst.proc.poll() is None:
            inst.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                inst.proc.wait(10)


@dataclass
class StreamRun:
    """What the kill loop did."""

    instances: list[Instance] = field(default_factory=list)
    kills_before_stream_end: int = 0  # part of the stream was still to be produced
    kills_with_uncommitted: int = 0  # the group had not committed everything produced
    drain_s: float = 0.0
    clean_stop: bool = False


def run_stream(
    cfg: RunConfig,
    messages: Messages,
    *,
    workdir: Path,
    kills: int,
    rng: random.Random,
    mean_delay_s: float,
    run: StreamRun,
) -> None:
    """Produce the stream; start, SIGKILL and restart the daemon `kills` times; drain; stop."""
    settings = cfg.settings()
    asyncio.run(ensure_topics(settings.kafka))
    producer = PacedProducer(settings, messages)
    producer.start()
    total = len(messages)
    try:
        for i in range(kills + 1):
            inst = start_daemon(cfg, workdir, i)
            run.instances.append(inst)
            wait_assigned(inst)
            startup = float(np.mean([x.assigned_after_s or 0.0 for x in run.instances]))
            left = kills - i
            if left > 0:
                # pace so that PRODUCED_AT_LAST_KILL of the stream exists at the last kill
                seconds = left * mean_delay_s + (left - 1) * (startup + 1.0)
                want = PRODUCED_AT_LAST_KILL * total - producer.produced
                producer.rate = max(want, 0.02 * total) / max(seconds, 1.0)
            else:
                producer.rate = max(producer.rate, (total - producer.produced) / 10.0)
            log(
                f"daemon {i} assigned after {inst.assigned_after_s:.1f} s; produced "
                f"{producer.produced}/{total}, rate {producer.rate:.0f}/s"
            )
            if producer.error is not None:
                msg = f"the producer failed: {producer.error!r}"
                raise FaultRunError(msg)
            if left == 0:
                break
            delay = rng.uniform(0.0, 2.0 * mean_delay_s)
            sleep_alive(inst, delay)
            inst.kill_delay_s = delay
            inst.produced_at_kill = producer.produced
            os.kill(inst.proc.pid, signal.SIGKILL)
            inst.exit_code = inst.proc.wait(10)
            inst.committed_at_kill = sum(committed(cfg).values())
            run.kills_before_stream_end += inst.produced_at_kill < total
            run.kills_with_uncommitted += inst.committed_at_kill < inst.produced_at_kill
            log(
                f"kill {i + 1}/{kills}: SIGKILL {delay:.2f} s after assignment, produced "
                f"{inst.produced_at_kill}, committed {inst.committed_at_kill}"
            )
        last = run.instances[-1]

        def produced() -> bool:
            check_alive(last)
            return producer.done or producer.error is not None

        wait_for(produced, total / max(producer.rate, 1.0) + 120, "the producer to finish")
        if producer.error is not None:
            msg = f"the producer failed: {producer.error!r}"
            raise FaultRunError(msg)
        target = end_offsets(messages)
        log(f"stream produced; waiting for the committed offsets to reach {target}")
        seen: dict[int, int] = {}

        def drained() -> bool:
            check_alive(last)
            seen.clear()
            seen.update(committed(cfg))
            return seen == target

        try:
            run.drain_s = wait_for(drained, DRAIN_TIMEOUT_S, f"committed offsets {target}")
        except FaultRunError as exc:
            msg = f"{exc} (last seen {seen}); see {last.log_path}"
            raise FaultRunError(msg) from exc
        last.proc.send_signal(signal.SIGTERM)
        try:
            last.exit_code = last.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            msg = f"daemon {last.index} did not stop within {STOP_TIMEOUT_S} s of SIGTERM"
            raise FaultRunError(msg) from exc
        stopped = last.events("service_stopped")
        run.clean_stop = last.exit_code == 0 and bool(stopped) and stopped[-1].get("clean") is True
    finally:
        producer.stop()
        producer.join(15)


# ---------------------------------------------------------------- comparison


def close(a: Any, b: Any) -> bool:
    """Equal, with floats within the tolerance (recursively for lists and dicts)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def db_round_trip(
    cfg: RunConfig, kind: str, values: dict[Any, float], tag_names: tuple[str, ...]
) -> dict[Any, float]:
    """Replay's values at the database's precision, written and read back.

    The values go to a reference measurement as the same line-protocol float text the
    daemon writes. Keys are (tag values..., time ms). The database keeps only 11 to 14
    significant digits, so "bit-identical" compares what comes back for the daemon's values
    with what comes back for replay's.
    """
    name = f"ref_{kind}_{cfg.uid}"
    lines = [
        f"{name},{','.join(f'{n}={tag(str(v))}' for n, v in zip(tag_names, key[:-1], strict=True))}"
        f" v={value!r} {key[-1]}"
        for key, value in values.items()
    ]
    for start in range(0, len(lines), 5000):
        body = "\n".join(lines[start : start + 5000]).encode()
        url = f"{cfg.servers.influx_url}/write?precision=ms"
        with urllib.request.urlopen(urllib.request.Request(url, body), timeout=30) as r:
            r.read()
    out: dict[Any, float] = {}
    for series in db_export(cfg, f"{name}_v"):
        head = tuple(series["metric"][n] for n in tag_names)
        for value, ts in zip(series["values"], series["timestamps"], strict=True):
            out[(*head, int(ts))] = float(value)
    return out


def compare_scores(cfg: RunConfig, expected: Expected) -> dict[str, float]:
    """Score points: database against replay."""
    got: dict[tuple[str, int], float] = {}
    conflicting = 0
    for s in db_export(cfg, f"score_{cfg.uid}_score"):
        turbine = s["metric"]["turbine"]
        for value, ts in zip(s["values"], s["timestamps"], strict=True):
            key = (turbine, int(ts))
            if key in got and got[key] != value:
                conflicting += 1  # two different values for one point
            got[key] = float(value)
    common = got.keys() & expected.scores.keys()
    differing = sum(not close(got[k], expected.scores[k]) for k in common)
    reference = db_round_trip(cfg, "score", expected.scores, ("turbine",))
    not_bitwise = sum(reference.get(k) != got[k] for k in common)
    rel = [abs(got[k] - v) / abs(v) for k in common if (v := expected.scores[k])]
    return {
        "expected": len(expected.scores),
        "database": len(got),
        "lost": len(expected.scores.keys() - got.keys()),
        "extra": len(got.keys() - expected.scores.keys()),
        "differing": differing + conflicting,
        "not_bit_identical": not_bitwise,
        "max_relative_difference": max(rel, default=0.0),
        "max_absolute_difference": max(
            (abs(got[k] - expected.scores[k]) for k in common), default=0.0
        ),
        "rewrites_disagreeing": conflicting,
    }


def expected_alarm_point(rec: dict[str, Any]) -> dict[str, Any]:
    """Tags and fields the database should hold for one alarm event of replay."""
    tags = {
        "alarm_id": rec["alarm_id"],
        "evidence": rec["evidence"],
        "model_version": rec["model_version"],
        "severity": rec["severity"],
        "state": rec["state"],
        "turbine": rec["turbine_id"],
    }
    for k, top in enumerate(rec["top_channels"][:3]):
        tags[f"top{k + 1}"] = top["channel"]
    return {
        "tags": tags,
        "active": 1 if rec["state"] == "raised" else 0,
        "peak_score": rec["peak_score"],
    }


def compare_alarm_points(cfg: RunConfig, expected: Expected) -> dict[str, int]:
    """Alarm points (`<alarm>_active`, `<alarm>_peak_score`): database against replay."""
    points: dict[AlarmKey, dict[str, Any]] = {}
    for field_name in ("active", "peak_score"):
        for s in db_export(cfg, f"alarm_{cfg.uid}_{field_name}"):
            tags = {k: v for k, v in s["metric"].items() if k not in {"__name__", "model"}}
            for value, ts in zip(s["values"], s["timestamps"], strict=True):
                key = (tags["alarm_id"], tags["state"], int(ts))
                point = points.setdefault(key, {"tags": tags})
                point[field_name] = value
    common = points.keys() & expected.alarms.keys()
    differing = sum(not close(points[k], expected_alarm_point(expected.alarms[k])) for k in common)
    peaks = {k: float(rec["peak_score"]) for k, rec in expected.alarms.items()}
    reference = db_round_trip(cfg, "peak", peaks, ("alarm_id", "state"))
    not_bitwise = sum(points[k].get("peak_score") != reference.get(k) for k in common)
    return {
        "expected": len(expected.alarms),
        "database": len(points),
        "lost": len(expected.alarms.keys() - points.keys()),
        "extra": len(points.keys() - expected.alarms.keys()),
        "differing": differing,
        "not_bit_identical": not_bitwise,
    }


def compare_alerts(cfg: RunConfig, expected: Expected) -> dict[str, int]:
    """Alert-topic events against replay, by (alarm_id, state, event_time_ms)."""
    copies: dict[AlarmKey, list[dict[str, Any]]] = {}
    for value, _headers in topic_messages(cfg, f"alerts-{cfg.uid}"):
        event = json.loads(value)
        copies.setdefault((event["alarm_id"], event["state"], event["event_time_ms"]), []).append(
            event
        )
    duplicated = sum(len(c) - 1 for c in copies.values())
    inconsistent = sum(any(e != c[0] for e in c[1:]) for c in copies.values())
    common = copies.keys() & expected.alarms.keys()
    differing = sum(any(not close(e, expected.alarms[k]) for e in copies[k]) for k in common)
    not_identical = sum(any(e != expected.alarms[k] for e in copies[k]) for k in common)
    return {
        "expected": len(expected.alarms),
        "topic_messages": sum(len(c) for c in copies.values()),
        "distinct": len(copies),
        "lost": len(expected.alarms.keys() - copies.keys()),
        "extra": len(copies.keys() - expected.alarms.keys()),
        "duplicated": duplicated,
        "differing": differing + inconsistent,
        "not_bit_identical": not_identical,
        "copies_disagreeing": inconsistent,
    }


def compare_dead_letters(cfg: RunConfig, expected: Expected) -> dict[str, int]:
    """Dead letters, distinct by source partition and offset, against replay's count."""
    letters = topic_messages(cfg, f"dlq-{cfg.uid}")
    distinct = {(h.get("source_partition"), h.get("source_offset")) for _, h in letters}
    return {
        "expected": expected.dead_letters,
        "topic_messages": len(letters),
        "distinct": len(distinct),
        "duplicated": len(letters) - len(distinct),
        "lost": max(0, expected.dead_letters - len(distinct)),
        "extra": max(0, len(distinct) - expected.dead_letters),
    }


def instance_report(inst: Instance) -> dict[str, Any]:
    """Per-instance figures from its JSON log."""
    lines = inst.lines()
    assigned = [m for m in lines if m.get("event") == "partitions_assigned"]
    batches = [m for m in lines if m.get("event") == "batch"]
    warnings = Counter(
        str(m.get("event")) for m in lines if m.get("level") in {"warning", "error", "critical"}
    )
    return {
        "instance": inst.index,
        "assigned_after_s": round(inst.assigned_after_s or 0.0, 2),
        "kill_delay_s": None if inst.kill_delay_s is None else round(inst.kill_delay_s, 3),
        "produced_at_kill": inst.produced_at_kill,
        "committed_at_kill": inst.committed_at_kill,
        "exit_code": inst.exit_code,
        "assignments": len(assigned),
        "partitions": sorted({p for m in assigned for p in m.get("partitions", [])}),
        "snapshots_restored": sum(int(m.get("restored", 0)) for m in assigned),
        "batches": len(batches),
        "records": sum(int(m.get("records", 0)) for m in batches),
        "skipped": sum(int(m.get("skipped", 0)) for m in batches),
        "warnings": dict(warnings),
    }


# ---------------------------------------------------------------- report


def failed(results: dict[str, Any]) -> list[str]:
    """Names of the figures that break the promise (empty: the run passed)."""
    bad = [
        f"{section}.{what}"
        for section in ("scores", "alarm_points", "alerts", "dead_letters")
        for what in ("lost", "extra", "differing")
        if results[section].get(what, 0)
    ]
    if not results["clean_stop"]:
        bad.append("clean_stop")
    return bad


def print_table(results: dict[str, Any]) -> None:
    """The result table on stdout."""
    s, a, e, d = (results[k] for k in ("scores", "alarm_points", "alerts", "dead_letters"))
    rows = [
        ("score points", s["expected"], s["database"], s["lost"], s["extra"], s["differing"], ""),
        ("alarm points", a["expected"], a["database"], a["lost"], a["extra"], a["differing"], ""),
        (
            "alert events",
            e["expected"],
            e["distinct"],
            e["lost"],
            e["extra"],
            e["differing"],
            f"{e['duplicated']} duplicated (identical copies) of {e['topic_messages']} messages",
        ),
        (
            "dead letters",
            d["expected"],
            d["distinct"],
            d["lost"],
            d["extra"],
            "",
            f"{d['duplicated']} duplicated of {d['topic_messages']} messages",
        ),
    ]
    print(
        f"fault_kill9: {results['kills']} x SIGKILL, seed {results['seed']}, "
        f"{results['readings']} readings ({results['turbines']} turbines, "
        f"{results['hours']} h at 7 s), {results['restarts']} restarts, "
        f"{results['kills_before_stream_end']} kills before the stream's end, "
        f"{results['kills_with_uncommitted']} with produced records not yet committed"
    )
    head = f"{'':<14} {'expected':>9} {'got':>9} {'lost':>6} {'extra':>6} {'differing':>10}"
    print(head)
    for name, exp, got, lost, extra, diff, note in rows:
        print(f"{name:<14} {exp:>9} {got:>9} {lost:>6} {extra:>6} {diff!s:>10}  {note}".rstrip())
    print(
        f"differing = beyond rel {REL_TOL:g} (abs {ABS_TOL:g}); not bit-identical (replay's "
        f"value through the same database): score points {s['not_bit_identical']} (max relative "
        f"difference {s['max_relative_difference']:.2g}, absolute "
        f"{s['max_absolute_difference']:.2g}), alarm peak scores "
        f"{a['not_bit_identical']}, alert events {e['not_bit_identical']}"
    )
    print("per instance: delay = SIGKILL after assignment; restored = snapshots read on start")
    print(
        f"{'#':>3} {'assigned s':>10} {'delay s':>8} {'produced':>9} {'committed':>9} "
        f"{'restored':>8} {'records':>8} {'skipped':>8}  warnings"
    )
    for r in results["instances"]:
        delay = "-" if r["kill_delay_s"] is None else f"{r['kill_delay_s']:.2f}"
        produced = "-" if r["produced_at_kill"] is None else r["produced_at_kill"]
        comm = "-" if r["committed_at_kill"] is None else r["committed_at_kill"]
        warn = ", ".join(f"{k} x{v}" for k, v in r["warnings"].items()) or "-"
        print(
            f"{r['instance']:>3} {r['assigned_after_s']:>10.1f} {delay:>8} {produced!s:>9} "
            f"{comm!s:>9} {r['snapshots_restored']:>8} {r['records']:>8} {r['skipped']:>8}  "
            f"{warn}"
        )
    print(
        f"last instance: drained in {results['drain_s']:.1f} s after the stream ended, "
        f"SIGTERM clean stop: {results['clean_stop']}; wall time {results['wall_s']:.0f} s "
        f"(stream phase {results['stream_s']:.0f} s)"
    )
    bad = failed(results)
    print("RESULT: " + ("PASS" if not bad else "FAIL (" + ", ".join(bad) + ")"))


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit, so that cleanup (finally blocks) runs."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The whole run; returns the figures (raises FaultRunError if the run failed)."""
    wall0 = time.monotonic()
    if args.bundle is None:
        log("training a tiny bundle (small preset, 2 epochs)")
        bundle_path = train_bundle(workdir / "bundle")
    else:
        bundle_path = args.bundle
    messages = make_stream(args.hours, args.turbines, args.seed)
    log(f"stream: {len(messages)} readings; computing replay's outputs")
    servers = start_all(workdir / "servers")
    run = StreamRun()
    try:
        log(f"servers: kafka {servers.bootstrap}, database {servers.influx_url}")
        cfg = RunConfig(servers, bundle_path)
        # alarm threshold: the 80th percentile of the stream's own scores, so that the
        # stream has alarms raised and cleared whatever the tiny model learned
        probe = replay(bundle_path, cfg.settings(), messages)
        cfg.threshold_override = float(np.quantile(list(probe.scores.values()), 0.8))
        expected = replay(bundle_path, cfg.settings(), messages)
        log(
            f"replay: {len(expected.scores)} score points, {len(expected.alarms)} alarm events, "
            f"{expected.dead_letters} dead letters (threshold {cfg.threshold_override:.4g})"
        )
        stream0 = time.monotonic()
        run_stream(
            cfg,
            messages,
            workdir=workdir,
            kills=args.kills,
            rng=random.Random(args.seed),
            mean_delay_s=args.mean_delay,
            run=run,
        )
        stream_s = time.monotonic() - stream0
        log("reading back the database and the topics")
        results: dict[str, Any] = {
            "kills": args.kills,
            "seed": args.seed,
            "hours": args.hours,
            "turbines": args.turbines,
            "readings": len(messages),
            "threshold_override": cfg.threshold_override,
            "restarts": len(run.instances) - 1,
            "kills_before_stream_end": run.kills_before_stream_end,
            "kills_with_uncommitted": run.kills_with_uncommitted,
            "scores": compare_scores(cfg, expected),
            "alarm_points": compare_alarm_points(cfg, expected),
            "alerts": compare_alerts(cfg, expected),
            "dead_letters": compare_dead_letters(cfg, expected),
            "instances": [instance_report(i) for i in run.instances],
            "snapshots_restored_per_restart": [
                instance_report(i)["snapshots_restored"] for i in run.instances[1:]
            ],
            "drain_s": run.drain_s,
            "clean_stop": run.clean_stop,
            "stream_s": stream_s,
            "tolerance": {"rel": REL_TOL, "abs": ABS_TOL},
        }
    finally:
        stop_daemons(run.instances)
        servers.stop()
    results["wall_s"] = time.monotonic() - wall0
    results["failed"] = failed(results)
    return results


def main() -> int:
    """Parse arguments, run, print; the exit status says whether the promise held."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs (restarts) over the run")
    parser.add_argument("--seed", type=int, default=0, help="kill delays and the farm")
    parser.add_argument("--hours", type=float, default=3.0, help="length of the stream")
    parser.add_argument("--turbines", type=int, default=4)
    parser.add_argument("--mean-delay", type=float, default=4.0, help="s, kill after assignment")
    parser.add_argument("--bundle", type=Path, help="a model bundle (default: train a tiny one)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep logs and servers' data here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (training, replay)")
    args = parser.parse_args()
    if args.kills < 0 or args.hours <= 0 or args.turbines < 1 or args.mean_delay <= 0:
        parser.error("--kills >= 0, --hours > 0, --turbines >= 1, --mean-delay > 0")
    torch.set_num_threads(args.threads)
    configure_logging("warning")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wtbi-kill9-"))
    workdir.mkdir(parents=True, exist_ok=True)
    keep = args.keep or args.workdir is not None
    status = 2
    try:
        with terminate_as_exit():
            results = execute(args, workdir)
        print_table(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        status = 1 if results["failed"] else 0
    except FaultRunError as exc:
        print(f"fault_kill9: the run failed: {exc}", file=sys.stderr)
    finally:
        if keep or status != 0:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
