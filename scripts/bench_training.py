"""Training throughput of IAE-LSTM-KL (paper preset) against the device's fp32 matmul bound.

One joint-training step is the product's own: `joint_loss` (SVDD + reconstruction + KL),
backward, Adam step, on random windows of the paper's shape (26 x 26). FLOPs per window
for training are 3x the forward FLOPs with the decoder (the usual estimate: the backward
pass costs about twice the forward), counted from the layer shapes (`scoring_flops`); the
fraction of the bound is conservative (elementwise work is not counted).

For each batch size, fp32 and, with --bf16, bfloat16 autocast, are measured interleaved with
the matmul bound, best of `--rounds` rounds each, in the same run. Printed: windows/s,
GFLOP/s, fraction of the bound, and the time of a 30,000-window, 50-epoch joint fit at that
rate (`--fit-windows`, `--fit-epochs`; pretraining epochs not included).

    python scripts/bench_training.py                        # paper preset, best device
    python scripts/bench_training.py --batch-sizes 128,512 --bf16 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from bench_scoring import matmul_gflops, random_weights_detector, sync
from wtbi_monitor.model import resolve_device
from wtbi_monitor.model.networks import scoring_flops


def step_rate(
    detector: Any, batch: torch.Tensor, seconds: float, device: torch.device, *, bf16: bool
) -> float:
    """Windows/s of repeated joint-training steps on one batch."""
    opt = torch.optim.Adam(detector.module.parameters(), lr=1e-4)
    detector.module.train()
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    )

    def step() -> None:
        with autocast:
            loss = detector.joint_loss(batch).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += batch.shape[0]
    sync(device)
    return n / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=["paper", "small"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-sizes", default="128,512")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bf16", action="store_true", help="also measure bfloat16 autocast")
    parser.add_argument("--fit-windows", type=int, default=30_000)
    parser.add_argument("--fit-epochs", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    detector = random_weights_detector(args.preset, device)
    forward = scoring_flops(detector.spec, with_decoder=True)
    train_flops = 3 * forward
    peak, peak_n = matmul_gflops(device, args.seconds, (1024, 2048))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {device} ({name}), threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    print(
        f"model: iae_lstm_kl:soft, preset {args.preset}; forward with decoder "
        f"{forward / 1e6:.1f} MFLOP/window, training step ~{train_flops / 1e6:.1f} MFLOP/window"
    )
    modes = ["fp32", "bf16"] if args.bf16 else ["fp32"]
    rows: list[dict[str, Any]] = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        batch = torch.rand(bs, 26, 26, device=device)
        best = dict.fromkeys(modes, 0.0)
        for _ in range(args.rounds):
            peak = max(peak, matmul_gflops(device, args.seconds, (peak_n,))[0])
            for mode in modes:
                rate = step_rate(detector, batch, args.seconds, device, bf16=mode == "bf16")
                best[mode] = max(best[mode], rate)
        rows.extend({"batch": bs, "mode": mode, "windows_per_s": best[mode]} for mode in modes)
    print(f"fp32 matmul bound, best of every round: {peak:.1f} GFLOP/s (n = {peak_n})")
    print()
    print(
        f"{'batch':>6} {'mode':>5} {'windows/s':>10} {'GFLOP/s':>8} {'of bound':>9} "
        f"{'vs fp32':>8} {'fit ' + str(args.fit_windows) + ' x ' + str(args.fit_epochs):>16}"
    )
    for row in rows:
        gflops = row["windows_per_s"] * train_flops / 1e9
        fp32 = next(
            r["windows_per_s"] for r in rows if r["batch"] == row["batch"] and r["mode"] == "fp32"
        )
        fit_s = args.fit_windows * args.fit_epochs / row["windows_per_s"]
        row.update(
            gflops=gflops,
            fraction_of_bound=gflops / peak,
            vs_fp32=row["windows_per_s"] / fp32,
            fit_seconds=fit_s,
        )
        print(
            f"{row['batch']:>6} {row['mode']:>5} {row['windows_per_s']:>10,.0f} {gflops:>8.1f} "
            f"{gflops / peak:>9.1%} {row['vs_fp32']:>7.2f}x {fit_s / 60:>13,.1f} min"
        )
    best_row = max(rows, key=lambda r: r["fraction_of_bound"])
    print()
    print(
        f"best: batch {best_row['batch']} {best_row['mode']}, {best_row['fraction_of_bound']:.1%} "
        f"of the fp32 matmul bound (target >= 50 %): "
        f"{'MET' if best_row['fraction_of_bound'] >= 0.5 else 'NOT MET'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": str(device),
                    "device_name": name,
                    "threads": torch.get_num_threads(),
                    "preset": args.preset,
                    "forward_flops_per_window": forward,
                    "train_flops_per_window": train_flops,
                    "matmul_gflops": peak,
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
