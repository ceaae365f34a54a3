"""RMAD scoring latency and throughput: onnxruntime CPU (1 and 2 threads) beside torch eager, in one process.

Prints batch-1 latency (p50, p99) and batch-256 windows/s, the model's FLOPs per window, and the FLOP-bound
throughput of this machine from a matmul measured in the same process. With onnxruntime-gpu and a GPU present it
also runs the CUDA provider with I/O binding (inputs and outputs stay on the device); otherwise it says so.

    .venv/bin/python -m bench.model [--window 64 --features 27 --patches 1,4 --n-ref 1024]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from models.export import export_model
from models.rmad.config import RMADConfig
from models.rmad.model import RMAD, inference_parameters
from models.rmad.train import Trained

TARGET_P99_MS = 1.0


def flops_per_window(model: RMAD, cfg: RMADConfig, centres: torch.Tensor, ref: torch.Tensor) -> int:
    """FLOPs (2 x multiply-adds) of one window's forward pass, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, cfg.window, cfg.n_features)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x, centres, ref)
    return int(fc.get_total_flops())


def matmul_gflops(threads: int, n: int = 1024, reps: int = 5, trials: int = 7) -> float:
    """Sustained fp32 GEMM rate of this machine at `threads` threads (the FLOP ceiling for the model).

    Best of several short trials, so time slices lost to other processes on a shared machine do not lower the
    ceiling (which would flatter the model's fraction of it).
    """
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2.0 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def latency(fn: Callable[[], object], n: int, warmup: int = 50) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    ts = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn()
        ts[i] = time.perf_counter() - t
    return float(np.percentile(ts, 50) * 1e3), float(np.percentile(ts, 99) * 1e3)


def throughput(fn: Callable[[], object], batch: int, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def ort_session(path: Path, threads: int, disable_sln: bool, providers: list[str] | None = None):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    disabled = ["SkipLayerNormFusion"] if disable_sln else []
    return ort.InferenceSession(
        str(path), so, providers=providers or ["CPUExecutionProvider"], disabled_optimizers=disabled
    )


def bench_one(
    args: argparse.Namespace, patch: int, peaks: dict[int, float], tmp: Path
) -> list[tuple[str, int, float, float, float, float]]:
    """All rows for one model size: onnxruntime (SkipLayerNormFusion on/off) and torch eager at 1 and 2 threads."""
    import onnxruntime as ort

    cfg = RMADConfig(n_features=args.features, window=args.window, patch=patch)
    torch.manual_seed(0)
    model = RMAD(cfg).eval()
    centres = torch.randn(cfg.K, cfg.emb_dim)
    ref = torch.randn(args.n_ref, cfg.latent_dim)
    trained = Trained(cfg, model, centres.numpy(), ref.numpy(), {"loc": [0.0] * 3, "scale": [1.0] * 3})
    flops = flops_per_window(model, cfg, centres, ref)
    label = f"patch {patch} ({cfg.window // patch}+1 tokens, {flops / 1e6:.1f} MFLOP)"
    print(
        f"model {label}: T={cfg.window} F={cfg.n_features} M={args.n_ref} K={cfg.K}; "
        f"{inference_parameters(model) / 1e6:.3f} M inference parameters"
    )
    path = args.onnx or tmp / f"model_p{patch}.onnx"
    if args.onnx is None:
        export_model(trained, path)
    x1 = np.random.default_rng(0).standard_normal((1, cfg.window, cfg.n_features)).astype(np.float32)
    xb = np.random.default_rng(1).standard_normal((args.batch, cfg.window, cfg.n_features)).astype(np.float32)
    c_np, r_np = centres.numpy(), ref.numpy()
    rows: list[tuple[str, int, float, float, float, float]] = []
    for threads in (1, 2):
        bound = peaks[threads] * 1e9 / flops
        for disable in (False, True):
            sess = ort_session(path, threads, disable)
            feeds1 = {"windows": x1, "centres": c_np, "ref_latents": r_np}
            feedsb = {"windows": xb, "centres": c_np, "ref_latents": r_np}
            p50, p99 = latency(partial(sess.run, None, feeds1), args.iters)
            wps = throughput(partial(sess.run, None, feedsb), args.batch, args.seconds)
            name = "onnxruntime CPU" + (", SkipLayerNormFusion off" if disable else "")
            rows.append((f"{label}, {name}", threads, p50, p99, wps, bound))
        torch.set_num_threads(threads)
        xt1, xtb = torch.from_numpy(x1), torch.from_numpy(xb)
        with torch.inference_mode():
            p50, p99 = latency(partial(model, xt1, centres, ref), max(200, args.iters // 4))
            wps = throughput(partial(model, xtb, centres, ref), args.batch, args.seconds)
        rows.append((f"{label}, torch eager", threads, p50, p99, wps, bound))
    if "CUDAExecutionProvider" in ort.get_available_providers():
        gpu_bench(path, x1, xb, c_np, r_np, args, label)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--features", type=int, default=27, help="F (27: the market model's feature count)")
    ap.add_argument("--patches", default="1,4", help="bars per token to bench (1 = the paper; 4 = the shipped size)")
    ap.add_argument("--n-ref", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=2000, help="batch-1 calls per latency measurement")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per batch-256 throughput measurement")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--onnx", type=Path, default=None, help="bench this model.onnx (with --patches N matching it)")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()}")
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, providers {ort.get_available_providers()}")
    peaks = {t: matmul_gflops(t) for t in (1, 2)}
    for t, g in peaks.items():
        print(f"matmul 1024^3 fp32 at {t} thread(s): {g:.1f} GFLOP/s (best of 7)")
    if peaks[2] < peaks[1]:  # the second core was busy while measuring: 2 threads can always do what 1 does
        print("note: the 2-thread matmul measured below the 1-thread one (a busy core); using the 1-thread ceiling")
        peaks[2] = peaks[1]
    rows: list[tuple[str, int, float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for patch in (int(p) for p in args.patches.split(",")):
            rows += bench_one(args, patch, peaks, Path(tmp))
    print()
    print(
        f"| model, runtime | threads | batch-1 p50 ms | batch-1 p99 ms | batch-{args.batch} windows/s "
        "| FLOP-bound windows/s | of bound |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, threads, p50, p99, wps, bound in rows:
        print(f"| {name} | {threads} | {p50:.3f} | {p99:.3f} | {wps:,.0f} | {bound:,.0f} | {wps / bound:.0%} |")
    ort_rows = [r for r in rows if "onnxruntime" in r[0]]
    best = min(ort_rows, key=lambda r: r[3])
    print(
        f"\nbest onnxruntime CPU batch-1 p99 {best[3]:.3f} ms ({best[0]}, {best[1]} thread(s); target <= "
        f"{TARGET_P99_MS} ms): {'met' if best[3] <= TARGET_P99_MS else 'NOT met'}"
    )
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(
            f"note: load average {load:.1f} on {os.cpu_count()} cpus while measuring: other processes held the "
            "cores, so p99 mostly measures scheduling delay; rerun on an idle machine for the target check"
        )
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("GPU: not measured (onnxruntime-gpu / CUDAExecutionProvider not available on this machine)")
    return 0


def gpu_bench(
    path: Path, x1: np.ndarray, xb: np.ndarray, c: np.ndarray, r: np.ndarray, args: argparse.Namespace, label: str
) -> None:
    """CUDA provider with I/O binding: inputs copied to the device once, outputs left there."""
    import onnxruntime as ort

    sess = ort_session(path, 1, False, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]

    def bound(x: np.ndarray) -> ort.IOBinding:
        io = sess.io_binding()
        for name, arr in (("windows", x), ("centres", c), ("ref_latents", r)):
            io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
        for o in outs:
            io.bind_output(o, "cuda", 0)
        return io

    io1, iob = bound(x1), bound(xb)
    p50, p99 = latency(partial(sess.run_with_iobinding, io1), args.iters)
    results = {}
    for batch in (args.batch, 4096):
        xbig = np.repeat(xb, max(1, batch // len(xb)), axis=0)[:batch]
        iob = bound(xbig)
        results[batch] = throughput(partial(sess.run_with_iobinding, iob), batch, args.seconds)
    print(
        f"GPU {label}, onnxruntime CUDA + I/O binding: batch-1 p50 {p50:.3f} ms p99 {p99:.3f} ms; "
        + ", ".join(f"batch-{b} {w:,.0f} windows/s" for b, w in results.items())
    )


if __name__ == "__main__":
    raise SystemExit(main())
