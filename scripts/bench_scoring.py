"""Scoring throughput of IAE-LSTM-KL against the device's matmul bound.

Prints, for batch sizes 1, 64 and 512 (by default): windows/s of the product's scoring
path (folded BatchNorm, channels-last; model only, tensors already on the device) and of
the eager eval-mode network as a baseline measured in the same run; the device's matmul
throughput in the scoring precision; FLOPs per window from the layer shapes; and the
fraction of the FLOP bound reached. Also times the full `Detector.score` call (numpy in,
numpy out).

`--precision bf16` scores under bf16 autocast (`model.precision`), the eager baseline too,
against a bf16 matmul bound (the fp32 bound is measured beside it). fp32 is strict fp32:
TF32 is switched off in matmuls and in cuDNN convolutions (torch allows TF32 in
convolutions by default, so the product's default CUDA scoring may be faster than this).
On CUDA the product path replays CUDA graphs per batch-size bucket (`model.cuda_graphs`),
and the same path without graphs (padded, eager) is measured beside it.

The bound and the model are measured interleaved, best of `--rounds` rounds each, in the
same run: on a shared machine a bound measured once, at another moment than the model,
can come out low and give a fraction above 100 %.

    python scripts/bench_scoring.py                      # paper preset, best device
    python scripts/bench_scoring.py --preset small --device cpu --seconds 2
    python scripts/bench_scoring.py --precision bf16 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wtbi_monitor.config import ModelSettings
from wtbi_monitor.model import build_detector, resolve_device
from wtbi_monitor.model.networks import scoring_flops
from wtbi_monitor.model.neural import SVDDDetector


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(fn: Callable[[], object], items: int, seconds: float, device: torch.device) -> float:
    """Items per second of repeated fn() calls after a warm-up."""
    for _ in range(3):
        fn()
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += items
    sync(device)
    return n / (time.perf_counter() - start)


def matmul_gflops(
    device: torch.device,
    seconds: float,
    sizes: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
) -> tuple[float, int]:
    """Best square-matmul GFLOP/s in `dtype` (fp32 by default) over the given sizes."""
    torch.backends.cuda.matmul.allow_tf32 = False  # an fp32 bound, not TF32
    best, best_n = 0.0, 0
    for n in sizes:
        a = torch.rand(n, n, device=device, dtype=dtype)
        b = torch.rand(n, n, device=device, dtype=dtype)
        rate = throughput(lambda a=a, b=b: a @ b, 1, seconds, device)
        gflops = 2 * n**3 * rate / 1e9
        if gflops > best:
            best, best_n = gflops, n
    return best, best_n


def random_weights_detector(preset: str, device: torch.device) -> SVDDDetector:
    """IAE-LSTM-KL with random weights, ready to score (also used by bench_daemon.py).

    Scoring speed does not depend on the weights' values: the network gets BatchNorm
    statistics and a centre from random windows instead of being trained.
    """
    torch.manual_seed(0)
    detector = build_detector(
        "iae_lstm_kl:soft", ModelSettings(preset=preset), window_length=26, n_channels=26
    )
    if not isinstance(detector, SVDDDetector):
        raise TypeError(type(detector))
    detector.to(device)
    warm = torch.rand(512, 26, 26, device=device)
    detector.module.train()
    with torch.no_grad():
        detector.net.embed(warm)
    detector.prepare_joint(warm, 256)
    # The fused score's normalisation statistics (fitted after training in the product);
    # without them every score is NaN, which hides nothing of the speed but breaks the
    # calibration and the hot share of bench_daemon.py.
    detector.fit_score_stats(warm)
    detector.fitted_ = True
    detector.module.eval()
    return detector


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=["paper", "small"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-sizes", default="1,64,512")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.backends.cudnn.allow_tf32 = False  # strict fp32 convolutions, like the bound
    device = resolve_device(args.device)
    bf16 = args.precision == "bf16"
    cuda = device.type == "cuda"
    detector = random_weights_detector(args.preset, device).set_inference(precision=args.precision)
    # The same weights (same seed) scored without graphs: padded to the buckets, eager.
    no_graphs = (
        random_weights_detector(args.preset, device).set_inference(
            precision=args.precision, cuda_graphs=False
        )
        if cuda
        else None
    )
    # The product score fuses the SVDD distance with the reconstruction error, so every
    # scored window also runs the decoder; the paper's score (distance only) does not.
    decodes = detector.product and detector.net.decoder is not None
    flops = scoring_flops(detector.spec, with_decoder=decodes)
    dtype = torch.bfloat16 if bf16 else torch.float32
    # The best matmul size once; then that size again in every round, beside the model.
    peak, peak_n = matmul_gflops(device, args.seconds, (1024, 2048, 4096), dtype)
    peak32 = matmul_gflops(device, args.seconds, (peak_n,))[0] if bf16 else peak

    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(
        f"device: {device} ({name}), threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    print(
        f"model: iae_lstm_kl:soft, preset {args.preset}, {flops / 1e6:.1f} MFLOP/window "
        f"(scoring path: encoder + LSTM + projection{' + decoder' if decodes else ''}), "
        f"precision {args.precision}{', CUDA graphs' if cuda else ''}"
    )
    print(f"{args.precision} matmul bound, first measurement: {peak:.1f} GFLOP/s (n = {peak_n})")
    print()
    header = (
        f"{'batch':>6} {'product win/s':>14} {'GFLOP/s':>8} {'of bound':>9} "
        f"{'eager win/s':>12} {'speed-up':>9} {'score() win/s':>14}"
    )
    if cuda:
        header += f" {'no-graph win/s':>15} {'graphs':>7}"
    print(header)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def eager_net(x: torch.Tensor) -> torch.Tensor:
        """The eval-mode network as written: the same layers, nothing folded."""
        with autocast():
            z = detector.net.embed(x)
            return detector.net.decode(z) if decodes else z

    rows = []

    def model_rate(det: SVDDDetector, x: torch.Tensor) -> float:
        """Windows/s of the product path's batch scoring, tensors already on the device."""
        return throughput(
            lambda: det._score_batch(x, with_channels=False), x.shape[0], args.seconds, device
        )

    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        x = torch.rand(bs, 26, 26, device=device)
        x_np = np.random.default_rng(0).random((bs, 26, 26), dtype=np.float32)
        product = eager = end_to_end = plain = 0.0
        for _ in range(args.rounds):
            peak = max(peak, matmul_gflops(device, args.seconds, (peak_n,), dtype)[0])
            if bf16:
                peak32 = max(peak32, matmul_gflops(device, args.seconds, (peak_n,))[0])
            with torch.inference_mode():
                product = max(product, model_rate(detector, x))
                eager = max(eager, throughput(lambda x=x: eager_net(x), bs, args.seconds, device))
                if no_graphs is not None:
                    plain = max(plain, model_rate(no_graphs, x))
            end_to_end = max(
                end_to_end,
                throughput(lambda x_np=x_np: detector.score(x_np), bs, args.seconds, device),
            )
        gflops = product * flops / 1e9
        row: dict[str, Any] = {
            "batch": bs,
            "product_windows_per_s": product,
            "gflops": gflops,
            "fraction_of_bound": gflops / peak,  # recomputed below against the final bound
            "eager_windows_per_s": eager,
            "speedup_vs_eager": product / eager,
            "score_call_windows_per_s": end_to_end,
        }
        line = (
            f"{bs:>6} {product:>14.0f} {gflops:>8.1f} {gflops / peak:>9.1%} "
            f"{eager:>12.0f} {product / eager:>8.2f}x {end_to_end:>14.0f}"
        )
        if cuda:
            row["no_graph_windows_per_s"] = plain
            row["speedup_graphs_vs_no_graphs"] = product / plain
            line += f" {plain:>15.0f} {product / plain:>6.2f}x"
        rows.append(row)
        print(line)
    for row in rows:  # against the best bound of the whole run
        row["fraction_of_bound"] = row["gflops"] / peak
        if bf16:
            row["fraction_of_fp32_bound"] = row["gflops"] / peak32
    best = max(rows, key=lambda r: r["fraction_of_bound"])
    print()
    print(f"{args.precision} matmul bound, best of every round: {peak:.1f} GFLOP/s (n = {peak_n})")
    if bf16:
        print(f"fp32 matmul bound, best of every round: {peak32:.1f} GFLOP/s (n = {peak_n})")
    for row in rows:
        extra = f" ({row['fraction_of_fp32_bound']:.1%} of the fp32 bound)" if bf16 else ""
        print(f"  batch {row['batch']:>4}: {row['fraction_of_bound']:.1%} of that bound{extra}")
    print(
        f"best: batch {best['batch']}, {best['fraction_of_bound']:.1%} of the "
        f"{args.precision} matmul bound"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": str(device),
                    "device_name": name,
                    "threads": torch.get_num_threads(),
                    "preset": args.preset,
                    "precision": args.precision,
                    "cuda_graphs": cuda,
                    "flops_per_window": flops,
                    "matmul_gflops": peak,
                    "matmul_gflops_fp32": peak32,
                    "rounds": args.rounds,
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
