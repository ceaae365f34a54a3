"""`rmad evaluate`: every table in one run — the market model, its ablations and every baseline on the last 12
pump events (with and without the no-pump-visible files) and the quiet test months; then the chain model and NAB
when their pipelines are present. Writes card.md, PNGs and manifest.evaluation of the market artifact."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from pathlib import Path

from models.cli_train import DEFAULT_DATA, ROOT

log = logging.getLogger("rmad.evaluate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", default="all", choices=["all", "market", "market-kline", "chain", "nab"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="../shared/data root")
    parser.add_argument("--version", default=None, help="market artifact version (default: the newest)")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "models" / "artifacts")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--quiet-stride", type=int, default=None, help="override the trained scoring stride")
    parser.add_argument("--kline-stride", type=int, default=None)
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--only", action="append", default=None, help="evaluate only these baselines/ablations")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse per-method results already computed for this version under runs/ (same data, same code)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the market results here")


def newest_version(artifacts: Path, name: str = "market") -> str | None:
    d = artifacts / name
    if not d.is_dir():
        return None
    vs = sorted(p.name for p in d.iterdir() if (p / "manifest.json").exists())
    return vs[-1] if vs else None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rc = 0
    if args.what in ("all", "market"):
        from models.evaluation.market import evaluate_market, tables

        version = args.version or newest_version(args.artifacts)
        if version is None:
            print("rmad evaluate: no market artifact; run `rmad train market` first")
            rc = 2
        else:
            res = evaluate_market(
                args.data,
                args.artifacts / "market" / version,
                args.runs / "market" / version,
                args.runs / "cache",
                quiet_stride=args.quiet_stride,
                kline_stride=args.kline_stride,
                baselines=not args.no_baselines,
                ablations=not args.no_ablations,
                only=set(args.only) if args.only else None,
                reuse=args.reuse,
            )
            print(f"\n## Market model {version}\n")
            print(tables(res))
            if args.json:
                args.json.write_text(json.dumps(res, indent=2, default=str))
    if args.what in ("all", "market-kline"):
        from models.kline.evaluate import evaluate_kline

        kline_args = argparse.Namespace(
            **{**vars(args), "version": args.version if args.what == "market-kline" else None}
        )
        rc = max(rc, evaluate_kline(kline_args))
    for what, module, func in (
        ("chain", "models.chain.pipeline", "evaluate_chain"),
        ("nab", "models.nab.evaluate", "evaluate_nab"),
    ):
        if args.what not in ("all", what):
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            print(f"\n({what}: {module} not available yet)")
            continue
        fn = getattr(mod, func, None)
        if fn is None:
            print(f"\n({what}: {module}.{func} not available yet)")
            continue
        rc = max(rc, int(fn(args) or 0))
    return rc
