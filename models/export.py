"""ONNX export of a trained RMAD model per docs/model-contract.md.

Writes model.onnx (opset 18, dynamic batch axis and dynamic reference-latent count), centres.npy,
ref_latents.npy and manifest.json into out_dir. The caller supplies the manifest fields that training does not
know (name, version, features, spec_hash, thresholds, evaluation); this fills inputs/outputs, files and training.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.rmad.model import INPUT_NAMES, OUTPUT_NAMES
from models.rmad.train import Trained

log = logging.getLogger(__name__)

OPSET = 20


def _export_dynamo(model: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    n_ref = torch.export.Dim("n_ref", min=1, max=1 << 20)
    dynamic_shapes = {"windows": {0: batch}, "centres": None, "ref_latents": {0: n_ref}}
    prog = torch.onnx.export(
        model,
        args,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        opset_version=OPSET,
        dynamo=True,
        dynamic_shapes=dynamic_shapes,
        optimize=True,
        verbose=False,
    )
    assert prog is not None
    prog.save(str(path))


def _export_legacy(model: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> None:
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        opset_version=OPSET,
        dynamo=False,
        dynamic_axes={"windows": {0: "batch"}, "ref_latents": {0: "n_ref"}, **{o: {0: "batch"} for o in OUTPUT_NAMES}},
    )


def _check(path: Path) -> None:
    """The graph must keep all three inputs, the named outputs, and a symbolic batch axis."""
    import onnx

    m = onnx.load(str(path))
    inputs = [i.name for i in m.graph.input]
    outputs = [o.name for o in m.graph.output]
    if inputs != list(INPUT_NAMES) or outputs != list(OUTPUT_NAMES):
        raise RuntimeError(f"exported graph has inputs {inputs} and outputs {outputs}")
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim0.dim_param:
        raise RuntimeError("exported graph froze the batch axis")


def export_model(trained: Trained, path: Path, *, exporter: str = "auto", batch: int = 4) -> str:
    """Write only model.onnx; returns which exporter produced it. Export batch >= 2 keeps the batch axis symbolic."""
    cfg = trained.cfg
    model = trained.model.eval()
    args = (
        torch.randn(max(batch, 2), cfg.window, cfg.n_features),
        torch.from_numpy(np.ascontiguousarray(trained.centres, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(trained.ref_latents, dtype=np.float32)),
    )
    errors: list[str] = []
    for name, fn in (("dynamo", _export_dynamo), ("torchscript", _export_legacy)):
        if exporter not in ("auto", name):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(model, args, path)
            _check(path)
            return name
        except Exception as exc:  # fall through to the next exporter, keep the reason
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            log.warning("ONNX export with %s failed: %s", name, exc)
    raise RuntimeError("ONNX export failed: " + " | ".join(errors))


def export_onnx(trained: Trained, out_dir: str | Path, manifest: dict[str, Any], *, exporter: str = "auto") -> Path:
    """Export to out_dir; returns the model.onnx path. `manifest` holds the caller's fields (see the contract)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = trained.cfg
    onnx_path = out / "model.onnx"
    used = export_model(trained, onnx_path, exporter=exporter)
    np.save(out / "centres.npy", np.ascontiguousarray(trained.centres, dtype=np.float32))
    np.save(out / "ref_latents.npy", np.ascontiguousarray(trained.ref_latents, dtype=np.float32))
    man: dict[str, Any] = {
        "name": "rmad",
        "version": time.strftime("%Y-%m-%d.1", time.gmtime()),
        "created_ms": int(time.time() * 1000),
        "kind": "market",
        "window": cfg.window,
        **manifest,
    }
    man["inputs"] = {
        "windows": [None, cfg.window, cfg.n_features],
        "centres": [cfg.K, cfg.emb_dim],
        "ref_latents": [None, cfg.latent_dim],
    }
    man["outputs"] = list(OUTPUT_NAMES)
    man["centres_file"] = "centres.npy"
    man["ref_latents_file"] = "ref_latents.npy"
    training = dict(man.get("training", {}))
    training.setdefault("seed", cfg.seed)
    training.setdefault("config", cfg.to_dict())
    fps = dict(training.get("data_fingerprints", {}))
    for k, v in trained.fingerprints.items():
        fps.setdefault(k, v)
    training["data_fingerprints"] = fps
    training.setdefault("branch_stats", trained.branch_stats)
    training.setdefault("fid", trained.fid)
    training.setdefault("exporter", used)
    training.setdefault("opset", OPSET)
    man["training"] = training
    man.setdefault("thresholds", {"alert": 0.0, "watch": 0.0, "critical": 0.0, "false_alarm_budget_per_day": 1.0})
    man.setdefault("evaluation", {})
    (out / "manifest.json").write_text(json.dumps(man, indent=2, default=str))
    return onnx_path
