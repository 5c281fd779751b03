"""Replay throughput: a file's readings through the stream processor, two ways in.

`wtbi-monitor replay` sends each turbine's readings to the processor as arrays in large
chunks (`replay_frames`); `replay --messages` encodes every reading as the daemon's JSON
message and decodes it again in micro-batches (`replay_messages`, the baseline, measured in
the same run). Both run the same processor (stream state, windows, scaling, the model,
alarm machines) and give the same outputs (tests/streaming/test_processor.py); writing
the outputs is not timed. Also timed: `wtbi-monitor score`'s batch path (windows of the
whole file, `score_chunked`). Two detectors: a constant one (the cost without a model)
and the paper-size IAE-LSTM-KL with random weights (speed does not depend on them).

    python scripts/bench_replay.py                         # both detectors, best device
    python scripts/bench_replay.py --only trivial --turbines 8 --days 1 --json out.json
    python scripts/bench_replay.py --device cuda --precision bf16 --paper-days 2   # a GPU

Target (issue 13, on an H100/H200-class GPU): >= 125,000 readings/s with the paper model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_daemon import ConstantDetector, paper_bundle  # scripts/ is on sys.path when run
from wtbi_monitor.cli import build_processor
from wtbi_monitor.config import Settings, SimulationSettings
from wtbi_monitor.data.synthetic import FarmSimulator
from wtbi_monitor.data.wtbi import TurbineFrame
from wtbi_monitor.model.bundle import score_chunked
from wtbi_monitor.replay import frames_to_messages, replay_frames, replay_messages
from wtbi_monitor.scoring import StreamProcessor
from wtbi_monitor.training.dataset import build_windows


def timed(run: Callable[[], int], rounds: int) -> tuple[float, float, int]:
    """Best (wall, CPU) seconds of `rounds` runs, and the windows the run scored."""
    best_wall = best_cpu = float("inf")
    windows = 0
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        windows = run()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu, windows


def case(
    settings: Settings, frames: list[TurbineFrame], *, trivial: bool, rounds: int
) -> dict[str, Any]:
    """Fast replay, message replay and batch scoring of one detector."""

    def fresh() -> StreamProcessor:
        processor = build_processor(settings)
        if trivial:
            detector = ConstantDetector()
            detector.threshold_ = 1.0
            detector.calibration_scores_ = np.zeros(100)
            detector.fitted_ = True
            processor.bundle.detector = detector
        return processor

    channels = settings.preprocessing.channels
    batch = settings.service.max_batch_records

    # A fresh processor per run (a replay starts without state), loaded before the clock.
    processors = iter([fresh() for _ in range(3 * rounds + 1)])

    def fast() -> int:
        return sum(len(r.points) for r in replay_frames(next(processors), frames))

    def messages() -> int:
        msgs = frames_to_messages(frames, channels)  # part of the message path's cost
        results = replay_messages(next(processors), msgs, batch_records=batch)
        return sum(len(r.points) for r in results)

    def batch_score() -> int:
        bundle = next(processors).bundle
        windows = build_windows(frames, settings.preprocessing, derived=bundle.derived)
        return len(score_chunked(bundle, windows.series.windows, len(windows)).score)

    fast()  # warm-up: imports, first allocations, oneDNN kernels
    readings = sum(len(f) for f in frames)
    out: dict[str, Any] = {"readings": readings}
    for name, run in (("replay", fast), ("replay_messages", messages), ("score", batch_score)):
        wall, cpu, windows = timed(run, rounds)
        out[name] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "windows": windows,
            "readings_per_s": readings / wall,
            "readings_per_cpu_s": readings / cpu,
        }
    out["speedup_vs_messages"] = (
        out["replay"]["readings_per_s"] / (out["replay_messages"]["readings_per_s"])
    )
    return out


def report(name: str, result: dict[str, Any]) -> None:
    """Print one detector's figures."""
    print(f"{name}: {result['readings']:,} readings")
    for path in ("replay", "replay_messages", "score"):
        r = result[path]
        print(
            f"  {path:16s} {r['readings_per_s']:>10,.0f} readings/s wall "
            f"({r['readings_per_cpu_s']:,.0f} per CPU-second, {r['windows']:,} windows)"
        )
    print(f"  replay vs replay --messages (same run): {result['speedup_vs_messages']:.2f}x")


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turbines", type=int, default=4)
    parser.add_argument("--days", type=float, default=0.5)
    parser.add_argument("--paper-days", type=float, default=0.1, help="data for the model case")
    parser.add_argument("--only", choices=["trivial", "model"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=2, help="best of")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    results: dict[str, Any] = {
        "device": args.device,
        "precision": args.precision,
        "torch_threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory(prefix="wtbi-bench-") as tmp:
        root = Path(tmp)
        cases = [("trivial", args.days), ("model", args.paper_days)]
        for name, days in cases:
            if args.only not in (None, name):
                continue
            sim = SimulationSettings(turbines=args.turbines, days=days, seed=3)
            frames, _ = FarmSimulator(sim).write(root / f"farm-{name}")
            bundle = paper_bundle(root / f"bundle-{name}", "paper", frames)
            settings = Settings.model_validate(
                {
                    "service": {"bundle": str(bundle)},
                    "model": {"device": args.device, "precision": args.precision},
                    "logging": {"level": "warning"},
                }
            )
            results[name] = case(settings, frames, trivial=name == "trivial", rounds=args.rounds)
            report("constant detector" if name == "trivial" else "paper IAE-LSTM-KL", results[name])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
