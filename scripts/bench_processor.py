"""Per-reading CPU cost of the stream processor alone (no broker, no database).

The daemon's processing of a micro-batch (decode and validate, stream state, windows,
scaling, a constant detector, alarm machines), replayed over a synthetic farm in batches of
`--batch` records, against the cost of only parsing the same messages with orjson in the
same run (the floor any decoder pays). Quick to run, so it is the loop to iterate in when
working on the per-reading cost; bench_daemon.py gives the end-to-end figure.

    python scripts/bench_processor.py                  # schema 1 (object) messages
    python scripts/bench_processor.py --compact --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from bench_daemon import ConstantDetector, paper_bundle  # scripts/ is on sys.path when run
from wtbi_monitor.cli import build_processor
from wtbi_monitor.config import Settings, SimulationSettings
from wtbi_monitor.data.synthetic import FarmSimulator
from wtbi_monitor.domain import InputRecord
from wtbi_monitor.replay import frames_to_messages


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turbines", type=int, default=8)
    parser.add_argument("--days", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="best of")
    parser.add_argument("--compact", action="store_true", help="schema 2 (array) messages")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="wtbi-bench-") as tmp:
        root = Path(tmp)
        sim = SimulationSettings(turbines=args.turbines, days=args.days, seed=3)
        frames, _ = FarmSimulator(sim).write(root / "farm")
        bundle = paper_bundle(root / "bundle", "paper", frames)
        settings = Settings.model_validate(
            {"service": {"bundle": str(bundle)}, "logging": {"level": "warning"}}
        )
        channels = Settings().preprocessing.channels
        messages = frames_to_messages(frames, channels, compact=args.compact)
        records = [InputRecord(0, i, t.encode(), m, 1) for i, (_, t, m) in enumerate(messages)]

        def processor_cpu() -> float:
            processor = build_processor(settings)
            detector = ConstantDetector()
            detector.threshold_ = 1.0
            detector.calibration_scores_ = np.zeros(100)
            detector.fitted_ = True
            processor.bundle.detector = detector
            t0 = time.process_time()
            for start in range(0, len(records), args.batch):
                processor.process(records[start : start + args.batch])
            return time.process_time() - t0

        def parse_cpu() -> float:
            t0 = time.process_time()
            for r in records:
                orjson.loads(r.value or b"null")
            return time.process_time() - t0

        processor_cpu()  # warm-up (imports, first allocations)
        full = min(processor_cpu() for _ in range(args.rounds))
        parse = min(parse_cpu() for _ in range(args.rounds))
    n = len(records)
    result = {
        "readings": n,
        "messages": "schema 2 (array)" if args.compact else "schema 1 (object)",
        "processor_us_per_reading": full / n * 1e6,
        "processor_readings_per_cpu_s": n / full,
        "parse_only_us_per_reading": parse / n * 1e6,
        "parse_share_of_processor": parse / full,
    }
    print(f"{n:,} readings ({result['messages']}), batches of {args.batch}, best of {args.rounds}")
    print(
        f"processor: {result['processor_us_per_reading']:.1f} us per reading "
        f"({result['processor_readings_per_cpu_s']:,.0f} readings per CPU-second)"
    )
    print(
        f"orjson parse only (same run): {result['parse_only_us_per_reading']:.2f} us per reading; "
        f"the processor costs {full / parse:.1f}x that"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
