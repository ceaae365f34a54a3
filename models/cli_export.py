"""`rmad export`: re-export a trained market model (runs/market/<version>/full) to ONNX with its manifest, keeping
the manifest's thresholds and evaluation, and check onnxruntime against torch on real windows."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from models.cli_train import ROOT

log = logging.getLogger("rmad.export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default="market", choices=["market"])
    parser.add_argument("--version", required=False, default=None)
    parser.add_argument("--artifacts", type=Path, default=ROOT / "models" / "artifacts")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "legacy"])
    parser.add_argument("--parity-windows", type=int, default=1000)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from models.cli_evaluate import newest_version
    from models.export import export_onnx
    from models.rmad.train import Trained

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    version = args.version or newest_version(args.artifacts, args.model)
    if version is None:
        print("rmad export: no trained model; run `rmad train market` first")
        return 2
    run_dir = args.runs / args.model / version / "full"
    art = args.artifacts / args.model / version
    if not (run_dir / "model.pt").exists():
        print(f"rmad export: {run_dir} has no torch state (train on this machine first)")
        return 2
    trained = Trained.load(run_dir)
    old = json.loads((art / "manifest.json").read_text()) if (art / "manifest.json").exists() else {}
    keep = {k: v for k, v in old.items() if k not in ("inputs", "outputs", "centres_file", "ref_latents_file")}
    export_onnx(trained, art, keep, exporter=args.exporter)
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.parity_windows, trained.cfg.window, trained.cfg.n_features)).astype(np.float32)
    sess = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"windows": x, "centres": trained.centres.astype(np.float32), "ref_latents": trained.ref_latents}
    (fused,) = sess.run(["fused"], feeds)
    ref = trained.score(x)["fused"]
    err = float(np.max(np.abs(fused - ref)))
    print(f"exported {art}; max |onnx - torch| fused over {len(x)} windows = {err:.2e}")
    return 0 if err <= 1e-4 else 1
