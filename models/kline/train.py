"""`rmad train market-kline`: leave-one-period-out RMAD fits (out-of-fold scores cached for `rmad evaluate`),
thresholds from validation folds only, then the shipped model on every fold, exported with the crash branch.

Budgets are fixed before any score is seen: false-alarm episodes per symbol-day on the validation folds' non-event
time (calm and stressed months alike, so calm months end up well below): `BUDGET_CRASH` for the statistical
crash branch, `BUDGET_RMAD` for the RMAD fusion score; each branch gets the lowest threshold within its budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.kline import pipeline as pl
from models.kline.data import KSeries, fingerprints, load_all
from models.kline.events import MERGE_MS, TOLERANCE_MS
from models.kline.metrics import Scored, threshold_for_budget

log = logging.getLogger("rmad.train.kline")

NAME = "market-kline"
BUDGET_CRASH = 0.10
BUDGET_RMAD = 0.05
WINDOW = 32

SMALL: dict[str, Any] = dict(
    patch=4,
    latent_dim=16,
    conv_channels=(16, 32, 32, 64),
    time_fc=128,
    freq_hidden=(64, 32, 16),
    dec_hidden=(128, 128),
    n_ref_latents=512,
    data_hidden=(64, 64, 64),
    rho_dim=16,
    n_heads=4,
    ffn_dim=128,
    cluster_hidden=(64, 64),
    emb_dim=32,
    gan_hidden=(128, 256, 256),
    disc_hidden=(256, 128),
    gan_epochs=10,
    vae_epochs=2,
    trans_epochs=2,
    recency_halflife=4.0,
)


def config(args: argparse.Namespace, n_features: int) -> Any:
    from models.rmad.config import RMADConfig

    kw: dict[str, Any] = {**SMALL, "n_features": n_features, "window": WINDOW, "seed": args.seed}
    kw["threads"] = args.threads or 1
    if args.epochs is not None:
        kw["vae_epochs"] = kw["trans_epochs"] = args.epochs
    for item in args.set:
        k, _, v = item.partition("=")
        kw[k] = json.loads(v)
    return RMADConfig(**kw)


def native(series: list[KSeries]) -> list[KSeries]:
    """Series that are scored (the 5 m resampling of 1 m months is training material only)."""
    return [s for s in series if "@" not in s.name]


def _fit(args: argparse.Namespace, train: list[KSeries], out: Path, n_normal: int) -> tuple[Any, Any]:
    from models.rmad.train import fit

    scaler = pl.fit_scaler(train, WINDOW, seed=args.seed)
    arr = pl.training_arrays(train, scaler, WINDOW, n_normal, args.seed)
    cfg = config(args, arr.X_normal.shape[2])
    trained = fit(cfg, arr.X_normal, arr.X_anom, arr.X_val, arr.y_val, out, data_fingerprints=fingerprints(train))
    trained.info["counts"] = arr.counts()
    return trained, scaler


def onnx_scorer(trained: Any, path: Path) -> pl.ModelScore:
    """Score through the exported graph with onnxruntime (what serving runs, and ~6x faster than torch here)."""
    import onnxruntime as ort

    from models.export import export_model

    export_model(trained, path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    c = np.ascontiguousarray(trained.centres, dtype=np.float32)
    r = np.ascontiguousarray(trained.ref_latents, dtype=np.float32)

    def fn(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"fused": sess.run(["fused"], {"windows": x, "centres": c, "ref_latents": r})[0]}

    return fn


def oof_path(run_dir: Path) -> Path:
    return run_dir / "oof_rmad.npz"


def run_folds(args: argparse.Namespace, series: list[KSeries], run_dir: Path) -> dict[str, np.ndarray]:
    """Out-of-fold fused RMAD scores per native series (cached in run_dir; reused when present)."""
    path = oof_path(run_dir)
    have: dict[str, np.ndarray] = {}
    if path.exists():
        z = np.load(path)
        have = {k: z[k] for k in z.files}
    for f in pl.folds(series):
        test = [s for s in native(series) if pl.fold_of(s.period) == f]
        if all(s.name in have for s in test):
            continue
        t0 = time.monotonic()
        train = [s for s in series if pl.fold_of(s.period) != f]
        trained, scaler = _fit(args, train, run_dir / "folds" / f, args.fold_windows)
        fn = onnx_scorer(trained, run_dir / "folds" / f / "model.onnx")
        for s in test:
            have[s.name] = pl.score_series(s, scaler, WINDOW, fn)
        np.savez(path, **have)
        log.info("fold %s: fit + scored %d series in %.0f s", f, len(test), time.monotonic() - t0)
    return have


def scored_sets(series: list[KSeries], oof: dict[str, np.ndarray]) -> tuple[list[Scored], list[Scored]]:
    """(crash branch, RMAD) out-of-fold Scored per native series."""
    stat, rmad = [], []
    for s in native(series):
        stat.append(pl.to_scored(s, pl.crash_scores(s.X), WINDOW))
        rmad.append(pl.to_scored(s, oof[s.name], WINDOW))
    return stat, rmad


def fold_thresholds(scored: list[Scored], budget: float) -> dict[str, float]:
    """Per held-out fold: the threshold calibrated on the other folds only."""
    out = {}
    for f in sorted({s.period for s in scored}):
        out[f] = threshold_for_budget([s for s in scored if s.period != f], budget)
    return out


def combined_scored(stat: list[Scored], rmad: list[Scored], tc: dict[str, float], tr: dict[str, float]) -> list[Scored]:
    out = []
    for a, b in zip(stat, rmad, strict=True):
        c = pl.combine(a.score, b.score, tc[a.period], tr[a.period])
        out.append(Scored(**{**a.__dict__, "score": c}))
    return out


def train_kline(args: argparse.Namespace) -> int:
    from models.export import export_onnx
    from models.kline.graph import KlineGraph
    from service.features.kline import (
        KLINE_COLUMNS,
        KLINE_FEATURES,
        KLINE_INTERVALS_MS,
        KLINE_SPEC_HASH,
        kline_spec_dict,
    )

    clock = pl.timer()
    version = args.version or datetime.now(UTC).strftime("%Y-%m-%d") + ".1"
    run_dir = args.runs / NAME / version
    run_dir.mkdir(parents=True, exist_ok=True)
    series = load_all(args.data, args.runs / "cache" / "kline")
    log.info("features of %d series ready at %.0f s", len(series), clock())
    oof = run_folds(args, series, run_dir)
    log.info("leave-one-period-out folds done at %.0f s", clock())
    stat, rmad = scored_sets(series, oof)
    tau_c = threshold_for_budget(stat, BUDGET_CRASH)
    tau_r = threshold_for_budget(rmad, BUDGET_RMAD)
    comb = [
        Scored(**{**a.__dict__, "score": pl.combine(a.score, b.score, tau_c, tau_r)})
        for a, b in zip(stat, rmad, strict=True)
    ]
    watch = threshold_for_budget(comb, (BUDGET_CRASH + BUDGET_RMAD) * 4)
    critical = threshold_for_budget(comb, (BUDGET_CRASH + BUDGET_RMAD) / 4)
    log.info(
        "thresholds (all out-of-fold scores): crash %.3f, rmad %.3f, watch %.3f, critical %.3f",
        tau_c,
        tau_r,
        watch,
        critical,
    )
    trained, scaler = _fit(args, series, run_dir / "full", args.normal_windows)
    log.info("shipped model trained at %.0f s", clock())
    center = [float(v) for v in scaler.center]
    scale = [float(v) for v in scaler.scale]
    graph = KlineGraph(trained.model, center, scale, tau_c, tau_r).eval()
    from dataclasses import replace

    art_dir = args.artifacts / NAME / version
    manifest: dict[str, Any] = {
        "name": NAME,
        "version": version,
        "created_ms": int(time.time() * 1000),
        "kind": "market",
        "feature_set": "kline",
        "window": WINDOW,
        "bar_interval_s": 60.0,
        "bar_intervals_s": [ms / 1000 for ms in KLINE_INTERVALS_MS],
        "input": {
            "formats": ["binance-kline-csv", "freqtrade-json", "feather", "events-jsonl (bar events)"],
            "columns": list(KLINE_COLUMNS),
            "ignored_columns": ["quote_volume", "trades", "taker_buy_base", "taker_buy_quote"],
            "note": "OHLCV only: the training caches carry no trade counts or taker volume",
        },
        "features": {"names": list(KLINE_FEATURES), **scaler.to_manifest()},
        "spec_hash": KLINE_SPEC_HASH,
        "feature_spec": kline_spec_dict(),
        "thresholds": {
            "alert": 1.0,
            "watch": min(watch, 1.0),
            "critical": max(critical, 1.0),
            "false_alarm_budget_per_day": BUDGET_CRASH + BUDGET_RMAD,
        },
        "fusion": {
            "formula": "max(crash / tau_crash, rmad_fused / tau_rmad)",
            "tau_crash": tau_c,
            "tau_rmad": tau_r,
            "budget_crash_per_day": BUDGET_CRASH,
            "budget_rmad_per_day": BUDGET_RMAD,
        },
        "training": {
            "data_fingerprints": fingerprints(series),
            "folds": pl.folds(series),
            "seed": args.seed,
            "counts": trained.info.get("counts"),
            "event_tolerance_ms": TOLERANCE_MS,
            "episode_merge_ms": MERGE_MS,
        },
        "evaluation": {},
    }
    export_onnx(replace(trained, model=graph), art_dir, manifest)
    dt = clock()
    (run_dir / "train_summary.json").write_text(
        json.dumps({"seconds": round(dt), "tau_crash": tau_c, "tau_rmad": tau_r, "version": version}, indent=2)
    )
    print(f"trained {NAME} {version} in {dt:.0f} s -> {art_dir}")
    return 0
