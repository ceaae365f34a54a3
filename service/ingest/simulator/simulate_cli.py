"""`rmad simulate`: write a simulated market with labelled anomalies to files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from service.ingest.simulator.definitions import ANOMALY_KINDS, DEFAULT_START_MS, SimConfig
from service.ingest.simulator.files import generate_files

if TYPE_CHECKING:
    pass


# ------------------------------------------------------------------------------------------------------ CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="directory for events.jsonl.gz and labels.json/csv")
    p.add_argument("--seconds", type=float, default=3600.0, help="simulated duration")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start-ms", type=int, default=DEFAULT_START_MS, help="simulated start (epoch ms)")
    p.add_argument("--first-anomaly-s", type=float, default=600.0)
    p.add_argument("--anomaly-every-s", type=float, default=1800.0)
    p.add_argument("--kinds", default=",".join(ANOMALY_KINDS), help="anomaly kinds to inject, comma separated")
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiplies every trade rate")
    p.add_argument("--fixed-rates", action="store_true", help="constant tick rates (no intraday/volatility link)")
    p.add_argument("--no-books", action="store_true", help="leave the order books out")
    p.add_argument("--trades-csv", action="store_true", help="also write one Binance-layout trade CSV per key")


def run(args: argparse.Namespace) -> int:
    """`rmad simulate`: write a simulated market and its labels to files (replayable, scoreable)."""
    names = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in names if k not in ANOMALY_KINDS]
    kinds = tuple(k for k in ANOMALY_KINDS if k in names)
    if unknown:
        print(f"rmad simulate: unknown anomaly kinds {unknown}; known: {', '.join(ANOMALY_KINDS)}")
        return 2
    cfg = SimConfig(
        seed=args.seed,
        start_ms=args.start_ms,
        duration_s=args.seconds,
        first_anomaly_s=args.first_anomaly_s,
        anomaly_every_s=args.anomaly_every_s,
        anomaly_kinds=kinds,
        rate_scale=args.rate_scale,
        fixed_rates=args.fixed_rates,
        emit_books=not args.no_books,
    )
    t0 = time.perf_counter()
    res = generate_files(cfg, args.out, trades_csv=args.trades_csv)
    dt = time.perf_counter() - t0
    total = sum(res.counts.values())
    print(f"wrote {res.events} ({total} events: {res.counts}) in {dt:.1f} s ({total / dt:,.0f} events/s)")
    print(f"labels: {res.labels_json}, {res.labels_csv} ({len(res.labels)} labels)")
    for lab in res.labels:
        print(f"  {lab.type:14s} {lab.key:22s} start {lab.start_ms} onset {lab.onset_ms} end {lab.end_ms}")
    for key, path in res.trades_csv.items():
        print(f"trades {key}: {path}")
    return 0
