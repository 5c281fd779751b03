"""Scoring calls with all cores' threads against one thread, on idle cores and beside a busy one.

The paper-size IAE-LSTM-KL (random weights, calibrated on a synthetic farm) scores real
windows through `Bundle.score_windows`, the daemon's call, for several windows-per-call
sizes: with torch's default threads (one per core) and with one thread (`model.threads =
1`), first on idle cores, then with a busy loop in another process taking one core. The
idle default is the baseline of each row, measured in the same run.

    python scripts/bench_threads.py
    python scripts/bench_threads.py --sizes 1 16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_daemon import paper_bundle  # scripts/ is on sys.path when run
from wtbi_monitor.config import PreprocessingSettings, SimulationSettings
from wtbi_monitor.data.synthetic import FarmSimulator
from wtbi_monitor.model import load_bundle
from wtbi_monitor.model.bundle import Bundle
from wtbi_monitor.training.dataset import build_windows


def per_call_ms(bundle: Bundle, windows: np.ndarray[Any, Any], threads: int) -> float:
    """Mean milliseconds of one `score_windows` call (after a warm-up call)."""
    torch.set_num_threads(threads)
    bundle.score_windows(windows, channels_at=0.0)
    reps = max(3, 100 // windows.shape[0])
    start = time.perf_counter()
    for _ in range(reps):
        bundle.score_windows(windows, channels_at=0.0)
    return (time.perf_counter() - start) / reps * 1000


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 512])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="wtbi-bench-") as tmp:
        root = Path(tmp)
        frames, _ = FarmSimulator(SimulationSettings(turbines=2, days=0.2, seed=3)).write(
            root / "farm"
        )
        bundle = load_bundle(paper_bundle(root / "bundle", "paper", frames))
        series = build_series(frames, bundle)
        rows: list[dict[str, Any]] = []
        for busy in (False, True):
            loop = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                rows.extend(
                    {
                        "busy_core": busy,
                        "windows": n,
                        "threads": threads,
                        "ms": per_call_ms(bundle, series[:n], threads),
                    }
                    for n in args.sizes
                    for threads in (cores, 1)
                )
            finally:
                if loop is not None:
                    loop.kill()
                    loop.wait()
    base = {r["windows"]: r["ms"] for r in rows if not r["busy_core"] and r["threads"] == cores}
    print(f"{cores} cores; ms per score_windows call (x: against {cores} threads on idle cores)")
    for r in rows:
        where = "one core busy" if r["busy_core"] else "idle cores   "
        print(
            f"{where} threads {r['threads']} windows {r['windows']:4d}: {r['ms']:8.1f} ms "
            f"({r['ms'] / base[r['windows']]:.2f}x)"
        )
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "rows": rows}, indent=2))


def build_series(frames: list[Any], bundle: Bundle) -> np.ndarray[Any, Any]:
    """The first 600 smoothed windows of the farm (the daemon's input to scoring)."""
    windows = build_windows(frames, PreprocessingSettings(), derived=bundle.derived)
    return windows.series.windows(np.arange(600))


if __name__ == "__main__":
    main()
