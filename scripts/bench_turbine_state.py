"""Memory of the per-turbine streaming state, measured: bytes per tracked turbine.

    python scripts/bench_turbine_state.py --bundle models/iae_lstm_kl-soft \
        [--turbines 50] [--readings 400] [--json FILE]

Feeds `--readings` readings to each of `--turbines` turbine ids (copies of one simulated
turbine's readings, so every turbine has full windows and alarm history), then measures
what the processor keeps for each turbine: the deep size of its state objects (Python
objects and numpy buffers; what it shares with every other turbine, such as settings and
the model, is not counted) and the size of its snapshot. The figure for a fresh turbine
(one reading) is printed beside it as the baseline: `service.max_turbines` bounds the
product of the cap and the figure (docs/operations.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from wtbi_monitor.codec import RecordDecoder
from wtbi_monitor.config import Settings, SimulationSettings
from wtbi_monitor.data.synthetic import FarmSimulator
from wtbi_monitor.domain import InputRecord
from wtbi_monitor.model import load_bundle
from wtbi_monitor.replay import frames_to_messages
from wtbi_monitor.scoring import StreamProcessor


def readings(channels: tuple[str, ...], n: int) -> list[bytes]:
    """`n` consecutive readings of one simulated turbine, as input messages."""
    frames, _ = FarmSimulator(SimulationSettings(turbines=1, days=0.5, seed=3)).generate()
    return [m for _t, _tid, m in frames_to_messages(frames, channels)[:n]]


def deep_size(obj: Any, seen: set[int]) -> int:
    """Bytes reachable from `obj` that are not in `seen` (which it extends)."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        base = obj.base if obj.base is not None else None
        return (
            sys.getsizeof(obj)
            + (0 if base is not None else obj.nbytes)
            + (deep_size(base, seen) if base is not None else 0)
        )
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset | deque):
        size += sum(deep_size(v, seen) for v in obj)
    elif hasattr(obj, "__dict__"):
        size += deep_size(vars(obj), seen)
    if hasattr(obj, "__slots__"):
        for name in obj.__slots__:
            if hasattr(obj, name):
                size += deep_size(getattr(obj, name), seen)
    return size


def measure(bundle_path: Path, turbines: int, n: int) -> dict[str, float]:
    """Bytes held per turbine after feeding `turbines` ids `n` readings each."""
    settings = Settings()
    bundle = load_bundle(bundle_path, expected=settings.preprocessing)
    decoder = RecordDecoder(
        bundle.source_channels,
        max_future_s=1e12,
        valid_ranges=settings.preprocessing.valid_ranges,
    )
    proc = StreamProcessor(bundle, settings.preprocessing, settings.alarm, decoder, 512)
    docs = [orjson.loads(m) for m in readings(bundle.source_channels, n)]
    for k in range(turbines):
        tid = f"T{k:06d}"
        batch = []
        for i, doc in enumerate(docs):
            doc["turbine_id"] = tid
            batch.append(InputRecord(k % 4, i, tid.encode(), orjson.dumps(doc), 0, "in"))
        proc.process(batch)
    doc = {**docs[0], "turbine_id": "fresh"}
    proc.process([InputRecord(0, 0, b"fresh", orjson.dumps(doc), 0, "in")])
    # Shared with every turbine: never counted.
    shared: set[int] = set()
    for common in (proc.bundle, proc.context, proc.alarm_settings, proc.pre, proc.derived):
        deep_size(common, shared)
    sizes = [deep_size(proc.turbines[f"T{k:06d}"], set(shared)) for k in range(turbines)]
    return {
        "bytes_per_turbine": float(np.mean(sizes)),
        "max_bytes_per_turbine": float(np.max(sizes)),
        "fresh_turbine_bytes": float(deep_size(proc.turbines["fresh"], set(shared))),
        "snapshot_bytes": float(len(proc.snapshot(f"T{turbines - 1:06d}"))),
    }


def main() -> int:
    """Print the figures (and write them as JSON with --json)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/iae_lstm_kl-soft"))
    parser.add_argument("--turbines", type=int, default=50)
    parser.add_argument("--readings", type=int, default=400)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    found = measure(args.bundle, args.turbines, args.readings)
    figures = {
        "bundle": str(args.bundle),
        "readings_per_turbine": args.readings,
        "turbines": args.turbines,
        **{k: round(v) for k, v in found.items()},
        "ratio_to_fresh_turbine": round(
            found["bytes_per_turbine"] / found["fresh_turbine_bytes"], 1
        ),
        "mb_per_10000_turbines": round(found["bytes_per_turbine"] * 10_000 / 1e6, 1),
    }
    for key, value in figures.items():
        print(f"{key:>28}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
