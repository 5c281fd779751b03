"""End-to-end daemon throughput and latency against the real local servers.

For each detector (the paper-size IAE-LSTM-KL and a trivial constant detector that isolates
the pipeline: decode, state, windows, scaling, alarms, line protocol, Kafka and database
round trips) this starts a local Tansu broker and VictoriaMetrics, then:

1. sustained throughput: a backlog of readings is produced first, then the daemon (the real
   `Service`, in this process) drains it; readings/s over wall time and per CPU-second of
   the daemon process;
2. latency: the daemon runs idle, a separate producer process paces readings at a fraction
   of the sustained rate, and each reading's latency is its Kafka timestamp (set at produce
   time) to the moment its batch's outputs were acknowledged;
3. model-only throughput of the same detector (scaled windows in, scores out) in the same
   run, and the ratio: pipeline overhead = model-only rate / end-to-end rate - 1.

    python scripts/bench_daemon.py                      # both detectors, paper preset
    python scripts/bench_daemon.py --readings 30000 --trivial-readings 300000 --json out.json

Targets on 2 CPU cores (issue 3): overhead <= 20 % of model time with the paper model;
>= 20,000 readings/s per core with the trivial detector. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Self

import numpy as np
import orjson
import torch
from aiokafka import AIOKafkaConsumer
from wtbi_devtools.localenv import LocalServers, start_all

from bench_scoring import random_weights_detector  # scripts/ is on sys.path when run
from wtbi_monitor.adapters.kafka import ensure_topics
from wtbi_monitor.cli import open_service
from wtbi_monitor.config import PreprocessingSettings, Settings, SimulationSettings
from wtbi_monitor.data.synthetic import FarmSimulator
from wtbi_monitor.logs import configure_logging
from wtbi_monitor.model import load_bundle, resolve_device, save_bundle
from wtbi_monitor.model.bundle import Bundle, build_manifest
from wtbi_monitor.model.detector import Detector, ScoreOutput
from wtbi_monitor.preprocessing.scaling import MinMaxScaler
from wtbi_monitor.service import Service
from wtbi_monitor.training.dataset import build_windows, scaled_windows, subsample


class ConstantDetector(Detector):
    """Scores every window 0: the pipeline's cost without a model (benchmark only)."""

    family = "constant"

    def _fit(self, *_args: Any) -> dict[str, Any]:
        return {}

    def _score(self, windows: Any, **_kw: Any) -> ScoreOutput:
        return ScoreOutput(np.zeros(windows.shape[0]), None)

    def hyperparameters(self) -> dict[str, Any]:
        """Nothing to describe."""
        return {"family": self.family}

    @classmethod
    def from_hyperparameters(cls, _hyper: dict[str, Any]) -> Self:
        """A fresh one."""
        return cls()

    def _model_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def _load_model_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        del tensors


def paper_bundle(folder: Path, preset: str, frames: list[Any]) -> Path:
    """An IAE-LSTM-KL bundle with random weights (speed does not depend on their values)."""
    pre = PreprocessingSettings()
    detector = random_weights_detector(preset, torch.device("cpu"))
    # Calibrate on the farm's own windows, so that the share of windows at or above the
    # alarm's clear level (which are scored a second time for per-channel errors) is as
    # small as with a trained model, instead of "all of them" with a random threshold.
    scaler = MinMaxScaler.fit(np.concatenate([f.values for f in frames]))
    windows = build_windows(frames, pre)
    index = subsample(len(windows), 8000, np.random.default_rng(0))
    detector.calibrate(scaled_windows(windows, scaler, np.sort(index)), 0.001)
    manifest = build_manifest(
        name="bench-random",
        member="iae_lstm_kl:soft",
        detector=detector,
        scaler=scaler,
        preprocessing=pre,
        training={"note": "random weights, for benchmarks only"},
        validation={},
    )
    return save_bundle(folder, Bundle(None, manifest, detector, scaler))


OVERRIDES: dict[str, dict[str, Any]] = {}  # section -> key -> value; set by --set


def parse_override(text: str) -> tuple[str, str, Any]:
    """'section.key=value' (the value read as JSON when it parses, else as a string)."""
    name, _, raw = text.partition("=")
    section, _, key = name.partition(".")
    if not (section and key and raw):
        msg = f"--set wants section.key=value, got {text!r}"
        raise SystemExit(msg)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return section, key, value


def settings_for(servers: LocalServers, bundle: Path, uid: str) -> Settings:
    """Fresh topics, group and measurement per run (plus the --set overrides)."""
    base: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": servers.bootstrap,
            "input_topic": f"bench-in-{uid}",
            "alert_topic": f"bench-alerts-{uid}",
            "dead_letter_topic": f"bench-dlq-{uid}",
            "state_topic": f"bench-state-{uid}",
            "group_id": f"bench-{uid}",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        "influx": {
            "url": servers.influx_url,
            "score_measurement": f"bench_score_{uid}",
            "alarm_measurement": f"bench_alarm_{uid}",
        },
        "service": {"bundle": str(bundle), "http_port": 0},
        "logging": {"level": "warning"},
    }
    for section, values in OVERRIDES.items():
        base[section] = {**base.get(section, {}), **values}
    return Settings.model_validate(base)


COMPACT = False  # schema 2 (array) messages; set by --compact


def produce(settings: Settings, farm: Path, limit: int, speedup: float) -> subprocess.Popen[bytes]:
    """A separate producer process (it must not share the daemon's CPU time or loop)."""
    env = {
        **os.environ,
        "WTBI_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "WTBI_KAFKA__INPUT_TOPIC": settings.kafka.input_topic,
        "WTBI_LOGGING__LEVEL": "warning",
    }
    cmd = [sys.executable, "-m", "wtbi_monitor", "produce", "--data", str(farm)]
    cmd += ["--limit", str(limit), "--speedup", str(speedup)]
    if COMPACT:
        cmd.append("--compact")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)


def handled(service: Service) -> float:
    """Records fully handled: acknowledged by the sinks, or dead-lettered."""
    m = service.metrics
    # Only the counts: a counter's samples also carry its creation time (`_created`).
    rejected = sum(
        s.value
        for metric in m.rejected.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    )
    return float(m.decoded._value.get() + m.skipped._value.get() + rejected)


class LatencyProbe:
    """Per-record latency: Kafka timestamp -> acknowledgement of its batch's outputs."""

    def __init__(self, service: Service) -> None:
        self.latencies_ms: list[float] = []
        self._queue: deque[np.ndarray] = deque()  # batches go through in order
        prepare, finish = service.processor.prepare, service._finish_batch

        def probe_prepare(records: Any) -> Any:
            self._queue.append(np.array([r.timestamp_ms for r in records], dtype=np.float64))
            return prepare(records)

        def probe_finish(pending: Any) -> None:
            finish(pending)
            stamps = self._queue.popleft()
            self.latencies_ms.extend((time.time() * 1000 - stamps).tolist())

        service.processor.prepare = probe_prepare  # type: ignore[method-assign]
        service._finish_batch = probe_finish  # type: ignore[method-assign]


async def run_case(  # noqa: PLR0917 - one call site, the names say it
    servers: LocalServers,
    bundle: Path,
    farm: Path,
    detector: Detector | None,
    readings: int,
    latency_rate: float,
    latency_seconds: float,
    turbines: int,
) -> dict[str, Any]:
    """Throughput then latency for one detector."""
    out: dict[str, Any] = {}
    # -- 1. sustained throughput over a backlog
    settings = settings_for(servers, bundle, uuid.uuid4().hex[:8])
    await ensure_topics(settings.kafka)
    await asyncio.to_thread(produce(settings, farm, readings, 0).wait)
    async with open_service(settings) as (service, _http):
        if detector is not None:
            detector.threshold_ = 1.0
            detector.calibration_scores_ = np.zeros(100)
            detector.fitted_ = True
            service.processor.bundle.detector = detector
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        while service.metrics.consumed._value.get() == 0:
            await asyncio.sleep(0.01)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        infer0 = service.metrics.inference_seconds._sum.get()
        while handled(service) < readings:
            await asyncio.sleep(0.02)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        m = service.metrics
        hot = m.attributed._value.get() / max(1.0, m.windows._value.get())
        inference = m.inference_seconds._sum.get() - infer0
        out["decoded"] = m.decoded._value.get()
        out["rejected"] = {
            s.labels["reason"]: s.value
            for metric in m.rejected.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        }
        stop.set()
        await task
    # -- 1b. the baseline: a bare aiokafka consumer that only decodes the same backlog
    out.update(await bare_consumer(settings, readings))
    out["readings"] = readings
    out["readings_per_s"] = readings / wall
    out["readings_per_cpu_s"] = readings / cpu
    out["cpu_cores_used"] = cpu / wall
    out["attributed_share"] = hot
    out["inference_s"] = inference
    out["wall_s"] = wall
    # Everything that is not the model's scoring call, relative to it.
    out["pipeline_overhead"] = (wall - inference) / inference if inference > 0 else None
    # -- 2. latency at a fraction of the sustained rate
    rate = min(latency_rate * out["readings_per_s"], 5000.0)
    count = min(max(int(rate * latency_seconds), 200), readings)
    speedup = rate * 7.0 / turbines  # readings arrive every 7 s per turbine
    settings = settings_for(servers, bundle, uuid.uuid4().hex[:8])
    await ensure_topics(settings.kafka)
    async with open_service(settings) as (service, _http):
        if detector is not None:
            service.processor.bundle.detector = detector
        probe = LatencyProbe(service)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        while not service.health.assigned:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        proc = produce(settings, farm, count, speedup)
        await asyncio.to_thread(proc.wait)
        deadline = time.monotonic() + 120
        while handled(service) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task
    lat = np.array(probe.latencies_ms)
    out["latency_rate_per_s"] = rate
    out["latency_records"] = int(lat.size)
    out["latency_p50_ms"] = float(np.percentile(lat, 50)) if lat.size else None
    out["latency_p99_ms"] = float(np.percentile(lat, 99)) if lat.size else None
    return out


async def bare_consumer(settings: Settings, readings: int) -> dict[str, float]:
    """Readings/s and per CPU-second of a consumer that only fetches and parses the messages.

    The machine-independent yardstick of the daemon's per-reading cost: the same topic,
    client library and JSON parser, nothing else (no validation, state, model or outputs).
    """
    consumer = AIOKafkaConsumer(
        settings.kafka.input_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()

    async def take() -> int:
        """One fetch, every message parsed; how many there were."""
        batch = await consumer.getmany(timeout_ms=500, max_records=2000)
        for records in batch.values():
            for r in records:
                orjson.loads(r.value)
        return sum(len(records) for records in batch.values())

    try:
        n = 0
        while n == 0:  # the first fetch includes the connection: not timed
            n += await take()
        start = n
        wall0, cpu0 = time.perf_counter(), time.process_time()
        while n < readings:
            n += await take()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        await consumer.stop()
    timed = n - start
    return {"bare_readings_per_s": timed / wall, "bare_readings_per_cpu_s": timed / cpu}


def device_name() -> str:
    """Where the daemon scores (model.device auto, as `serve`): the GPU's name or CPU."""
    device = resolve_device("auto")
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def model_only(bundle: Path, detector: Detector | None, seconds: float, batch: int) -> float:
    """Windows/s of the detector alone on scaled windows, batch = service.score_batch_size."""
    det = detector or load_bundle(bundle, device=resolve_device("auto")).detector  # as serve
    x = np.random.default_rng(1).random((batch, 26, 26), dtype=np.float32)
    for _ in range(3):
        det.score(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        det.score(x)
        n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    """Run both cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=["paper", "small"])
    parser.add_argument("--readings", type=int, default=20_000, help="backlog, model case")
    parser.add_argument("--trivial-readings", type=int, default=200_000)
    parser.add_argument("--turbines", type=int, default=8)
    parser.add_argument("--latency-load", type=float, default=0.5, help="of sustained rate")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compact", action="store_true", help="schema 2 (array) messages")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only", choices=["model", "trivial"], help="run one detector case (default: both)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a daemon setting for this run, e.g. kafka.fetch_max_wait_ms=100 (repeatable)",
    )
    args = parser.parse_args()
    for section, key, value in map(parse_override, args.set):
        OVERRIDES.setdefault(section, {})[key] = value
    global COMPACT  # noqa: PLW0603 - a module switch read by produce()
    COMPACT = args.compact
    torch.set_num_threads(args.threads)
    configure_logging("warning")

    with tempfile.TemporaryDirectory(prefix="wtbi-bench-") as tmp:
        root = Path(tmp)
        days = max(args.readings, args.trivial_readings) * 7.0 / 86400 / args.turbines * 1.1
        sim = SimulationSettings(turbines=args.turbines, days=days, seed=11)
        frames, _ = FarmSimulator(sim).write(root / "farm")
        total = sum(len(f.times_ms) for f in frames)
        bundle = paper_bundle(root / "bundle", args.preset, frames)
        servers = start_all(root / "servers")
        try:
            cases = {
                f"iae_lstm_kl ({args.preset})": (None, args.readings),
                "trivial constant": (ConstantDetector(), args.trivial_readings),
            }
            if args.only:  # "model" or "trivial"
                kept = next(iter(cases)) if args.only == "model" else "trivial constant"
                cases = {kept: cases[kept]}
            results: dict[str, Any] = {
                "messages": "schema 2 (array)" if args.compact else "schema 1 (object)",
                "cpu_count": os.cpu_count(),
                "device": device_name(),
                "overrides": OVERRIDES,
                "torch_threads": torch.get_num_threads(),
                "farm_readings": total,
            }
            for name, (det, n) in cases.items():
                r = asyncio.run(
                    run_case(
                        servers,
                        bundle,
                        root / "farm",
                        det,
                        min(n, total),
                        args.latency_load,
                        args.latency_seconds,
                        args.turbines,
                    )
                )
                r["model_only_windows_per_s"] = model_only(bundle, det, 5.0, 512)
                r["overhead"] = r["model_only_windows_per_s"] / r["readings_per_s"] - 1
                results[name] = r
        finally:
            servers.stop()

    print(
        f"scoring device {results['device']}, "
        f"cores {results['cpu_count']}, torch threads {results['torch_threads']}, "
        f"messages {results['messages']}"
    )
    print(
        f"{'detector':<22} {'readings/s':>11} {'per CPU-s':>10} {'cores':>6} "
        f"{'model-only win/s':>17} {'vs model-only':>14} {'outside model':>14} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'at /s':>7} {'hot':>6}"
    )
    for name in cases:
        r = results[name]
        print(
            f"{name:<22} {r['readings_per_s']:>11,.0f} {r['readings_per_cpu_s']:>10,.0f} "
            f"{r['cpu_cores_used']:>6.2f} {r['model_only_windows_per_s']:>17,.0f} "
            f"{r['overhead']:>13.1%} {r['pipeline_overhead']:>13.1%} "
            f"{r['latency_p50_ms']:>8.0f} {r['latency_p99_ms']:>8.0f} "
            f"{r['latency_rate_per_s']:>7,.0f} {r['attributed_share']:>6.1%}"
        )
    print()
    print(f"{'detector':<22} {'bare readings/s':>16} {'per CPU-s':>10} {'daemon/bare':>12}")
    for name in cases:
        r = results[name]
        r["vs_bare_per_cpu_s"] = r["readings_per_cpu_s"] / r["bare_readings_per_cpu_s"]
        print(
            f"{name:<22} {r['bare_readings_per_s']:>16,.0f} {r['bare_readings_per_cpu_s']:>10,.0f} "
            f"{r['vs_bare_per_cpu_s']:>12.1%}"
        )
    paper = results.get(f"iae_lstm_kl ({args.preset})")
    trivial = results.get("trivial constant")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print()
    if paper is not None:
        report_paper(paper)
    if trivial is not None:
        report_trivial(trivial)


def report_paper(paper: dict[str, Any]) -> None:
    """The model case's verdicts."""
    print(
        f"pipeline overhead with the model: {paper['pipeline_overhead']:.1%} of the model's "
        f"scoring time in the same run (target <= 20 %): "
        f"{'MET' if paper['pipeline_overhead'] <= 0.2 else 'NOT MET'}; end-to-end rate "
        f"{paper['readings_per_s'] / paper['model_only_windows_per_s']:.0%} of the model-only "
        f"rate ({paper['attributed_share']:.0%} of windows also decoded for attribution)"
    )
    p99 = paper["latency_p99_ms"]
    print(
        f"latency at {paper['latency_rate_per_s']:,.0f} readings/s: p99 {p99:,.0f} ms "
        f"(target <= 250 ms beyond the smoothing delay): {'MET' if p99 <= 250 else 'NOT MET'}"
    )


def report_trivial(trivial: dict[str, Any]) -> None:
    """The trivial case's verdicts."""
    print(
        f"trivial detector: {trivial['readings_per_cpu_s']:,.0f} readings per CPU-second "
        f"(target >= 20,000 per core): "
        f"{'MET' if trivial['readings_per_cpu_s'] >= 20_000 else 'NOT MET'}"
    )
    ratio = trivial["vs_bare_per_cpu_s"]
    print(
        f"trivial detector vs a bare aiokafka consumer that only parses the same messages: "
        f"{ratio:.1%} of its readings per CPU-second (target >= 30 %): "
        f"{'MET' if ratio >= 0.3 else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
