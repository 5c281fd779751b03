"""The `wtbi-monitor` command line: the only place that wires the layers together.

Subcommands: simulate, train, evaluate, score (and, with the daemon, serve, replay,
produce). Settings are built once from --config, WTBI_ environment variables and the
flags given here. Deliberate errors (bad data, refused bundle, bad settings) exit with
status 2 and one clear line on stderr; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import torch
from numpy.typing import NDArray
from pydantic import ValidationError
from tqdm import tqdm

from wtbi_monitor import __version__
from wtbi_monitor.adapters.files import JsonLinesSink
from wtbi_monitor.adapters.http import HttpEndpoint
from wtbi_monitor.adapters.influx import InfluxSink
from wtbi_monitor.adapters.kafka import (
    DeadLetters,
    KafkaAlertSink,
    KafkaOutputs,
    KafkaSource,
    KafkaStateStore,
    ensure_topics,
    produce_readings,
)
from wtbi_monitor.alarms import top_channels
from wtbi_monitor.codec import RecordDecoder
from wtbi_monitor.config import Settings, load_settings
from wtbi_monitor.data.synthetic import FarmSimulator, read_episodes
from wtbi_monitor.data.wtbi import TurbineFrame, detect_channels, format_times, read_farm
from wtbi_monitor.delivery import Delivery
from wtbi_monitor.errors import WtbiError
from wtbi_monitor.evaluation.benchmark import BenchmarkRun, Cache, Cell, plan, run_benchmark
from wtbi_monitor.evaluation.protocols import ProtocolResult, evaluate_paper, evaluate_time_ordered
from wtbi_monitor.evaluation.realism import write_report as write_realism_report
from wtbi_monitor.evaluation.report import write_report
from wtbi_monitor.evaluation.results_doc import render
from wtbi_monitor.logs import configure_logging, get_logger, set_repeat_interval
from wtbi_monitor.model import FAMILIES, Bundle, load_bundle, resolve_device, save_bundle
from wtbi_monitor.model.bundle import score_chunked
from wtbi_monitor.model.trainer import EpochRecord, ProgressCallback
from wtbi_monitor.ports import AlertSink, DatabaseSink, DeadLetterSink
from wtbi_monitor.replay import frames_to_messages, replay_frames, replay_messages
from wtbi_monitor.scoring import BatchResult, StreamProcessor
from wtbi_monitor.service import Service
from wtbi_monitor.telemetry import Health, ServiceMetrics
from wtbi_monitor.training.dataset import build_windows
from wtbi_monitor.training.train import fit_member, prepare_training_data, split_history
from wtbi_monitor.training.tuning import apply_values, tune_member

log = get_logger("wtbi_monitor.cli")


# ---------------------------------------------------------------------------- helpers


def _overrides(args: argparse.Namespace, mapping: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Turn given flags into nested settings overrides: {section: {field: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for attr, (section, field) in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.setdefault(section, {})[field] = value
    return out


def _settings(args: argparse.Namespace, mapping: dict[str, tuple[str, str]]) -> Settings:
    settings = load_settings(args.config, **_overrides(args, mapping))
    apply_threads(settings)
    return settings


def apply_threads(settings: Settings) -> None:
    """`model.threads` for torch's operators, process-wide (0: leave torch's choice)."""
    if settings.model.threads:
        torch.set_num_threads(settings.model.threads)


_MODEL_FLAGS = {
    "preset": ("model", "preset"),
    "device": ("model", "device"),
    "objective": ("model", "objective"),
    "epochs": ("training", "epochs"),
    "pretrain_epochs": ("training", "pretrain_epochs"),
    "max_train_windows": ("training", "max_train_windows"),
    "seed": ("training", "seed"),
}


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["paper", "small"], help="network size (model.preset)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="model.device")
    p.add_argument("--objective", choices=["hard", "soft"], help="default SVDD boundary")
    p.add_argument("--epochs", type=int, help="joint training epochs (training.epochs)")
    p.add_argument("--pretrain-epochs", type=int, help="training.pretrain_epochs")
    p.add_argument("--max-train-windows", type=int, help="training.max_train_windows")
    p.add_argument("--seed", type=int, help="training.seed")


def progress_bar(member: str, total: int) -> tuple[ProgressCallback, Callable[[], None]]:
    """A tqdm bar over epochs (silent when stderr is not a terminal)."""
    bar = tqdm(total=total, desc=member, unit="epoch", leave=False, disable=None)

    def update(record: EpochRecord) -> None:
        post = {"loss": f"{record.train_loss:.4g}"}
        if record.validation_loss is not None:
            post["val"] = f"{record.validation_loss:.4g}"
        bar.set_postfix(post, refresh=False)
        bar.set_description(f"{member} [{record.phase}]")
        bar.update(1)

    return update, bar.close


def _read(path: Path, settings: Settings) -> list[TurbineFrame]:
    frames = read_farm(path, settings.preprocessing.channels)
    for f in frames:
        if f.dropped_rows:
            log.warning(
                "rows_dropped",
                turbine=f.turbine_id,
                rows=f.dropped_rows,
                reason="missing or non-finite channel values",
            )
    return frames


# ---------------------------------------------------------------------------- commands


def cmd_simulate(args: argparse.Namespace) -> int:
    """Write a synthetic farm in the WTBI format."""
    settings = _settings(
        args,
        {
            "profile": ("simulation", "profile"),
            "turbines": ("simulation", "turbines"),
            "days": ("simulation", "days"),
            "start": ("simulation", "start"),
            "sim_seed": ("simulation", "seed"),
            "icing_frequency": ("simulation", "icing_frequency"),
            "format": ("simulation", "file_format"),
        },
    )
    t0 = time.perf_counter()
    frames, episodes = FarmSimulator(settings.simulation).write(args.out)
    rows = sum(len(f) for f in frames)
    labelled = [e for e in episodes if e.labelled]
    print(
        f"wrote {len(frames)} turbines, {rows:,} readings, {len(labelled)} labelled icing "
        f"episodes ({len(episodes) - len(labelled)} too weak to label) to {args.out} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    print(f"episodes: {args.out / 'episodes.json'}")
    return 0


def cmd_realism(args: argparse.Namespace) -> int:
    """How close a farm (synthetic or real) is to real 10-minute SCADA (docs/realism.md)."""
    channels = detect_channels(args.data)
    frames = read_farm(args.data, channels)
    out = args.out or args.data / "realism"
    command = " ".join(["wtbi-monitor", *sys.argv[1:]])
    page, checks = write_realism_report(
        frames, out, title=args.title or str(args.data), command=command
    )
    width = max(len(b.key) for b, _, _ in checks)
    for band, value, ok in checks:
        shown = "n/a" if value is None else f"{value:.4g}"
        real = "" if band.real is None else f"real {band.real:.4g}"
        print(f"  {band.key:{width}s} {shown:>10s}  {real:12s} {'' if ok else 'OUT OF BAND'}")
    inside = sum(ok for _, _, ok in checks)
    print(f"{inside} of {len(checks)} statistics inside their band; report: {page}")
    return 0


def window_thresholds(
    bundle: Bundle, settings: Settings, turbines: NDArray[np.str_]
) -> NDArray[np.float64]:
    """Each window's threshold in force: its turbine's own level, else the fleet's."""
    context = bundle.alarm_context(settings.alarm)
    levels = {t: context.levels(str(t)).threshold for t in np.unique(turbines)}
    return np.asarray([levels[t] for t in turbines], dtype=np.float64)


def cmd_train(args: argparse.Namespace) -> int:
    """Fit one family member on history and save a bundle."""
    settings = _settings(args, _MODEL_FLAGS)
    member = args.member or f"{settings.model.family}:{settings.model.objective}"
    frames = _read(args.data, settings)
    train_frames, val_frames = split_history(frames, settings.training)
    data = prepare_training_data(
        train_frames, val_frames, settings, assume_normal=args.assume_normal
    )
    tuning = None
    if args.tune:
        result = tune_member(member, data, settings, budget=args.tune)
        settings = apply_values(settings, result.best)
        tuning = result.to_json()
        print(f"search: best of {len(result.trials)} trials {result.best}")
    total = settings.training.pretrain_epochs + settings.training.epochs
    update, close = progress_bar(member, total)
    try:
        bundle = fit_member(member, data, settings, name=args.name, progress=update, tuning=tuning)
    finally:
        close()
    out = args.out or settings.models_dir / bundle.name
    save_bundle(out, bundle)
    v = bundle.manifest.validation
    print(f"saved bundle {bundle.version} to {out}")
    _print_coverage(bundle)
    fpr = v.false_positive_rate_at_threshold
    print(
        f"  threshold {v.threshold:.6g} (validation FPR {fpr:.4f}, "
        f"target {settings.training.target_fpr}); validation loss {v.loss}; "
        f"fit {bundle.manifest.training.fit_seconds} s"
    )
    return 0


def _print_coverage(bundle: Bundle) -> None:
    """What the training data covers, and its warnings (manifest training.coverage)."""
    coverage = bundle.manifest.training.coverage
    if coverage is None:
        return
    temp = coverage.temperature_c
    period = coverage.period or ["?", "?"]
    line = f"  trained on {len(coverage.turbines)} turbines, {period[0]} .. {period[1]}"
    if temp:
        line += (
            f"; normal temperature {temp.min:.1f} .. {temp.max:.1f} C, "
            f"{coverage.normal_hours_below_0c or 0:.0f} h below 0 C"
        )
    wind = coverage.wind_ms
    if wind:
        line += f"; wind up to {wind.max:.1f} m/s"
    print(line)
    for text in coverage.warnings:
        print(f"  WARNING: {text}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run the protocols and write a report."""
    settings = _settings(args, _MODEL_FLAGS)
    frames = _read(args.data, settings)
    members = [m for m in (args.members.split(",") if args.members else []) if m]
    device = resolve_device(settings.model.device)
    bundles = [
        load_bundle(
            b,
            device=device,
            expected=settings.preprocessing,
            threshold_override=settings.model.threshold_override,
            precision=settings.model.precision,
            cuda_graphs=settings.model.cuda_graphs,
        )
        for b in args.bundle or []
    ]
    if not members and not bundles:
        members = list(settings.evaluation.families)
    protocols = set(args.protocols.split(","))
    epochs = settings.training.pretrain_epochs + settings.training.epochs

    def factory(member: str) -> ProgressCallback:
        update, _ = progress_bar(member, epochs)
        return update

    results: list[ProtocolResult] = []
    if "time_ordered" in protocols:
        results.append(
            evaluate_time_ordered(frames, members, settings, bundles=bundles, progress=factory)
        )
    if "paper" in protocols:
        paper_members = members + [b.manifest.member for b in bundles]
        results.append(evaluate_paper(frames, paper_members, settings, progress=factory))
    context = {
        "command": " ".join(["wtbi-monitor", *sys.argv[1:]]),
        "data": str(args.data),
        "preset": settings.model.preset,
        "device": str(device),
        "package_version": __version__,
        "settings": settings.model_dump(mode="json"),
    }
    report = write_report(args.out, results, frames, context)
    print(f"report: {report}")
    print(f"results: {args.out / 'results.json'}")
    for protocol in results:
        for m in protocol.members:
            extra = ""
            if m.events:
                extra = (
                    f", episodes {m.events['episodes_detected']}/{m.events['episodes']}, "
                    f"false alarms/turbine-day {m.events['false_alarms_per_turbine_day']}"
                )
            print(f"  {protocol.name:12s} {m.member:28s} AUROC {m.window['auroc']}{extra}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run the family benchmark (resumable) and write docs/results.md."""
    settings = _settings(args, _MODEL_FLAGS)
    cache = Cache(args.cache)
    command = " ".join(["wtbi-monitor", *sys.argv[1:]])
    if not args.render_only:
        frames = _read(args.data, settings)
        episodes_file = args.data / "episodes.json"
        episodes = read_episodes(episodes_file) if episodes_file.is_file() else []
        args.out.parent.mkdir(parents=True, exist_ok=True)
        run = BenchmarkRun(frames, episodes, settings, cache, args.out.parent / "results")
        run.plots.mkdir(parents=True, exist_ok=True)
        cells = plan(settings)
        todo = [c for c in cells if c.key not in cache]
        print(f"{len(cells) - len(todo)} of {len(cells)} cells cached; running {len(todo)}")
        t_start = time.perf_counter()

        def report(cell: Cell, record: dict[str, Any], seconds: float) -> None:
            elapsed = time.perf_counter() - t_start
            print(
                f"  [{elapsed / 60:5.1f} min] {cell.key:60s} AUROC {record['auroc']} "
                f"({seconds:.0f} s)",
                flush=True,
            )
            if args.render_every and len(cache.records) % args.render_every == 0:
                render(cache, settings, args.out, command)

        for _ in run_benchmark(run, todo, on_cell=report):
            pass
    print(f"wrote {render(cache, settings, args.out, command)}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Score a file with a bundle; write one row per window."""
    settings = _settings(args, {"device": ("model", "device")})
    bundle = load_bundle(
        args.bundle,
        device=resolve_device(settings.model.device),
        expected=settings.preprocessing,
        threshold_override=settings.model.threshold_override,
        precision=settings.model.precision,
        cuda_graphs=settings.model.cuda_graphs,
    )
    frames = _read(args.data, settings)
    windows = build_windows(frames, settings.preprocessing, derived=bundle.derived)
    scored = score_chunked(bundle, windows.series.windows, len(windows))
    thresholds = window_thresholds(bundle, settings, windows.turbine)
    table = pd.DataFrame(
        {
            "turbine_id": windows.turbine,
            "time": format_times(windows.time_ms).to_numpy(),
            "time_ms": windows.time_ms,
            "score": scored.score,
            "threshold": thresholds,
            "above_threshold": scored.score > thresholds,
            "tail_probability": scored.tail_probability,
            "clip_fraction": scored.clip_fraction,
            "rule": scored.rule,
            "label": windows.label,
        }
    )
    if scored.channel_error is not None:
        top, share = top_channels(scored.channel_error, bundle.detector.channel_reference_)
        names = np.asarray([*bundle.channels, ""])
        for k in range(top.shape[1]):
            table[f"top_channel_{k + 1}"] = names[top[:, k]]  # -1: no excess (empty)
            table[f"top_share_{k + 1}"] = share[:, k]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".parquet":
        table.to_parquet(args.out, index=False)
    else:
        table.to_csv(args.out, index=False)
    above = int(table["above_threshold"].sum()) if len(table) else 0
    outside = int((table["clip_fraction"] > 0).sum()) if len(table) else 0
    print(
        f"scored {len(table):,} windows with {bundle.version}; {above:,} above the threshold; "
        f"{outside:,} outside the training data's range; wrote {args.out}"
    )
    return 0


_SERVICE_FLAGS = {
    "bundle": ("service", "bundle"),
    "bootstrap": ("kafka", "bootstrap_servers"),
    "influx_url": ("influx", "url"),
    "http_port": ("service", "http_port"),
    "group_id": ("kafka", "group_id"),
    "device": ("model", "device"),
}


def _add_service_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, help="model bundle folder (service.bundle)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (kafka.bootstrap_servers)")
    p.add_argument("--influx-url", help="InfluxDB-protocol URL (influx.url)")
    p.add_argument("--http-port", type=int, help="metrics/health port (service.http_port)")
    p.add_argument("--group-id", help="consumer group (kafka.group_id)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])


def build_processor(settings: Settings) -> StreamProcessor:
    """Load the configured bundle onto its device and wrap it in the stream processor."""
    apply_threads(settings)  # also for callers that did not come through the command line
    bundle = load_bundle(
        settings.service.bundle,
        device=resolve_device(settings.model.device),
        expected=settings.preprocessing,
        threshold_override=settings.model.threshold_override,
        precision=settings.model.precision,
        cuda_graphs=settings.model.cuda_graphs,
    )
    decoder = RecordDecoder(
        bundle.source_channels,
        max_bytes=settings.service.max_record_bytes,
        max_future_s=settings.service.max_future_s,
        valid_ranges=settings.preprocessing.valid_ranges,
    )
    return StreamProcessor(
        bundle,
        settings.preprocessing,
        settings.alarm,
        decoder,
        settings.service.score_batch_size,
        max_turbines=settings.service.max_turbines,
    )


@contextlib.asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[tuple[Service, HttpEndpoint]]:
    """Wire the adapters into a service (the only place that does); close them after."""
    processor = build_processor(settings)
    # Scoring runs in a worker thread that needs the GIL between torch ops; a short switch
    # interval keeps the event loop's Python work from delaying it (a few per cent in
    # docs/benchmarks.md; restored on exit).
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(settings.service.gil_switch_interval_ms / 1000)
    log.info(
        "starting",
        bundle=processor.bundle.version,
        device=str(processor.bundle.detector.device),
        settings=settings.model_dump(mode="json", include={"kafka", "influx", "service", "alarm"}),
    )
    if settings.kafka.create_topics:
        await ensure_topics(settings.kafka)
    outputs = KafkaOutputs(settings.kafka)
    await outputs.start()
    dead_letters = DeadLetters(outputs)
    influx = InfluxSink(
        settings.influx,
        dead_letters=dead_letters,
        dead_letter_piece_bytes=settings.kafka.max_request_bytes // 2,
    )
    metrics, health = ServiceMetrics(), Health()
    http = HttpEndpoint(metrics, health, settings.service.http_host, settings.service.http_port)
    await http.start()
    service = Service(
        processor=processor,
        source=KafkaSource(settings.kafka),
        database=influx,
        alerts=KafkaAlertSink(outputs),
        dead_letters=dead_letters,
        state=KafkaStateStore(settings.kafka, outputs),
        settings=settings.service,
        metrics=metrics,
        health=health,
    )
    try:
        yield service, http
    finally:
        sys.setswitchinterval(switch_interval)
        await http.stop()
        try:  # what is left of the shutdown budget after the drain (80 %) and the consumer
            await asyncio.wait_for(outputs.stop(), settings.service.shutdown_timeout_s * 0.15)
        except TimeoutError:
            log.warning("shutdown_step_timed_out", step="producer close")
        finally:
            influx.close()


async def serve(
    settings: Settings, stop: asyncio.Event | None = None, *, install_signals: bool = True
) -> int:
    """Run the daemon until SIGTERM/SIGINT (or until `stop` is set)."""
    stop = stop or asyncio.Event()
    set_repeat_interval(settings.service.log_repeat_interval_s)
    if install_signals:
        loop = asyncio.get_running_loop()
        budget = settings.service.shutdown_timeout_s

        def on_signal(sig: signal.Signals) -> None:
            if stop.is_set():  # a second signal: leave now
                _hard_exit(f"second {sig.name}", 128 + sig.value)
            log.info("stopping", signal=sig.name, within_s=budget)
            stop.set()
            # The graceful stop is bounded step by step; this is the guarantee on top.
            timer = threading.Timer(budget, _hard_exit, (f"{sig.name} + {budget} s", 1))
            timer.daemon = True
            timer.start()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
    async with open_service(settings) as (service, _http):
        await service.run(stop)
    return 0


def _hard_exit(why: str, status: int) -> None:
    """End the process now (the shutdown budget is spent): nothing is committed."""
    line = orjson.dumps({"event": "shutdown_forced", "level": "error", "why": why})
    os.write(2, line + b"\n")
    os._exit(status)


def cmd_serve(args: argparse.Namespace) -> int:
    """The streaming daemon."""
    settings = _settings(args, _SERVICE_FLAGS)
    return asyncio.run(serve(settings))


def cmd_replay(args: argparse.Namespace) -> int:
    """A historical file through the daemon's processing, to JSON lines or to the sinks."""
    settings = _settings(args, _SERVICE_FLAGS)
    processor = build_processor(settings)
    frames = _read(args.data, settings)
    readings = sum(len(f) for f in frames)
    results: Iterable[BatchResult]
    if args.messages:  # the daemon's exact input path: JSON messages, micro-batches
        messages = frames_to_messages(frames, processor.bundle.source_channels)
        batch = settings.service.max_batch_records
        results = replay_messages(processor, messages, batch_records=batch)
    else:
        results = replay_frames(processor, frames)
    if args.to_sinks:
        totals = asyncio.run(_replay_to_sinks(settings, results))
        where = "the database, the alert topic and the dead-letter topic"
    else:
        with JsonLinesSink(args.out) as sink:
            # To a file: dead letters are only counted (the file holds outputs).
            delivery = _delivery(settings, sink)
            totals = asyncio.run(_deliver_all(delivery, results, settings))
        where = str(args.out)
    print(
        f"replayed {readings:,} readings: {totals.windows:,} windows ({totals.outside:,} "
        f"outside the training data's range), {totals.events} alarm events, "
        f"{totals.rejected} rejected; wrote {where}"
    )
    return 0


def _delivery(
    settings: Settings,
    database: DatabaseSink,
    alerts: AlertSink | None = None,
    dead_letters: DeadLetterSink | None = None,
) -> Delivery:
    """The daemon's delivery (order, retries, drops) onto the given sinks."""
    return Delivery(
        database=database,
        alerts=alerts,
        dead_letters=dead_letters,
        retry_initial_s=settings.service.retry_initial_s,
        retry_max_s=settings.service.retry_max_s,
    )


@dataclasses.dataclass
class _Totals:
    windows: int = 0
    outside: int = 0
    events: int = 0
    rejected: int = 0


async def _deliver_all(
    delivery: Delivery, results: Iterable[BatchResult], settings: Settings
) -> _Totals:
    """Every batch through the delivery (the daemon's order and retries); count outputs."""
    totals = _Totals()
    for result in results:
        await delivery.deliver(result, give_up_after_s=settings.service.replay_give_up_s)
        totals.windows += len(result.points)
        totals.outside += int((result.points.clip_fraction > 0).sum())
        totals.events += len(result.events)
        totals.rejected += len(result.dead_letters)
    return totals


async def _replay_to_sinks(settings: Settings, results: Iterable[BatchResult]) -> _Totals:
    """Replay's outputs to the daemon's database and topics, through the daemon's delivery."""
    if settings.kafka.create_topics:
        await ensure_topics(settings.kafka)
    outputs = KafkaOutputs(settings.kafka)
    await outputs.start()
    dead_letters = DeadLetters(outputs)
    influx = InfluxSink(
        settings.influx,
        dead_letters=dead_letters,
        dead_letter_piece_bytes=settings.kafka.max_request_bytes // 2,
    )
    delivery = _delivery(settings, influx, KafkaAlertSink(outputs), dead_letters)
    try:
        return await _deliver_all(delivery, results, settings)
    finally:
        await outputs.stop()
        influx.close()


def cmd_produce(args: argparse.Namespace) -> int:
    """Publish a farm's readings to the input topic."""
    settings = _settings(args, {"bootstrap": ("kafka", "bootstrap_servers")})
    frames = _read(args.data, settings)
    messages = frames_to_messages(frames, settings.preprocessing.channels, compact=args.compact)
    if args.limit:
        messages = messages[: args.limit]

    async def run() -> float:
        if settings.kafka.create_topics:
            await ensure_topics(settings.kafka)
        return await produce_readings(settings.kafka, messages, speedup=args.speedup)

    seconds = asyncio.run(run())
    rate = len(messages) / seconds if seconds > 0 else float("inf")
    print(
        f"produced {len(messages):,} readings to {settings.kafka.input_topic} "
        f"in {seconds:.1f} s ({rate:,.0f}/s)"
    )
    return 0


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="wtbi-monitor", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"wtbi-monitor {__version__}")
    parser.add_argument(
        "--config", type=Path, help="TOML settings file (default configs/default.toml)"
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["auto", "json", "console"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a synthetic farm in the WTBI format")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--profile", choices=["wtbi", "scada10"], help="simulation.profile")
    p.add_argument("--turbines", type=int)
    p.add_argument("--days", type=float)
    p.add_argument("--start", help="first timestamp, e.g. 2015-12-10T00:00:00 (UTC)")
    p.add_argument("--seed", dest="sim_seed", type=int, help="simulation.seed")
    p.add_argument("--icing-frequency", type=float, help="simulation.icing_frequency")
    p.add_argument("--format", choices=["csv", "parquet"])
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "realism", help="statistics of a farm beside real 10-minute SCADA (docs/realism.md)"
    )
    p.add_argument("--data", type=Path, required=True, help="WTBI file or folder (any channels)")
    p.add_argument("--out", type=Path, help="report folder (default: DATA/realism)")
    p.add_argument("--title", help="report title (default: the data path)")
    p.set_defaults(func=cmd_realism)

    p = sub.add_parser("train", help="fit a model on historical normal data; save a bundle")
    p.add_argument("--data", type=Path, required=True, help="WTBI file or folder")
    p.add_argument(
        "--member",
        help="family member FAMILY[:hard|soft][+no_input_gate][+no_output_gate], e.g. "
        f"iae_lstm_kl:soft (default: model.family); FAMILY: {', '.join(FAMILIES)}",
    )
    p.add_argument("--name", help="bundle name (default: from the member)")
    p.add_argument("--out", type=Path, help="bundle folder (default: models/<name>)")
    p.add_argument(
        "--assume-normal",
        action="store_true",
        help="treat unlabelled rows as normal (ice-free history without labels)",
    )
    p.add_argument(
        "--tune",
        type=int,
        default=0,
        metavar="BUDGET",
        help="first search BUDGET hyperparameter settings on validation normal data only",
    )
    _add_model_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="run the evaluation protocols and write a report")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument(
        "--members",
        help="comma-separated members to train and evaluate (as train --member; default: "
        f"evaluation.families); FAMILY: {', '.join(FAMILIES)}",
    )
    p.add_argument(
        "--bundle", type=Path, action="append", help="evaluate a saved bundle (repeatable)"
    )
    p.add_argument(
        "--protocols", default="time_ordered,paper", help="comma-separated: time_ordered, paper"
    )
    p.add_argument("--out", type=Path, required=True, help="report folder")
    _add_model_flags(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "benchmark", help="the whole family over several seeds; writes docs/results.md"
    )
    p.add_argument("--data", type=Path, required=True, help="the synthetic farm folder")
    p.add_argument("--out", type=Path, default=Path("docs/results.md"))
    p.add_argument(
        "--cache",
        type=Path,
        default=Path("docs/results/cells.jsonl"),
        help="finished cells (the run resumes from it)",
    )
    p.add_argument("--render-only", action="store_true", help="only rebuild the document")
    p.add_argument("--render-every", type=int, default=10, help="re-render every n cells")
    _add_model_flags(p)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("score", help="score a file with a bundle; write per-window scores")
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help=".csv or .parquet")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("serve", help="run the streaming daemon (Kafka in; InfluxDB and alerts out)")
    _add_service_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("replay", help="a historical file through the daemon's processing")
    p.add_argument("--data", type=Path, required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="JSON lines of score points and alarm events")
    group.add_argument("--to-sinks", action="store_true", help="write to the database and topics")
    p.add_argument(
        "--messages",
        action="store_true",
        help="encode every reading as a Kafka message and decode it again, in the daemon's "
        "micro-batches (its exact input path; slower, same outputs)",
    )
    _add_service_flags(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("produce", help="publish a farm's readings to the input topic")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument(
        "--speedup",
        type=float,
        default=0.0,
        help="replay speed relative to real time; 0 = as fast as possible",
    )
    p.add_argument("--compact", action="store_true", help="schema 2 (array) messages")
    p.add_argument("--limit", type=int, help="only the first N readings (by time)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers")
    p.set_defaults(func=cmd_produce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `wtbi-monitor` and `python -m wtbi_monitor`."""
    args = build_parser().parse_args(argv)
    try:
        base = load_settings(args.config)
    except (WtbiError, ValidationError) as exc:
        print(f"wtbi-monitor: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or base.logging.level, args.log_format or base.logging.format)
    try:
        code: int = args.func(args)
    except ValidationError as exc:
        print(f"wtbi-monitor: invalid setting: {exc}", file=sys.stderr)
        return 2
    except WtbiError as exc:
        print(f"wtbi-monitor: {exc}", file=sys.stderr)
        return 2
    return code
