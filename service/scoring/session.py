"""One onnxruntime session per loaded model: CUDA with I/O binding when present, CPU otherwise.

Why I/O binding on CUDA: without it every run copies the (constant) reference latents and the outputs through
host memory; with it the constant inputs stay on the device and only the window batch moves. On CPU a plain
`run` is already zero-copy for contiguous float32 arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("fused", "s_md", "s_trans", "s_clust", "weights", "feature_errors", "embedding")


@dataclass(frozen=True, slots=True)
class SessionOptions:
    provider: str = "auto"  # auto | cpu | cuda
    intra_threads: int = 1
    inter_threads: int = 1


class ModelSession:
    """Runs the contract graph: (windows, centres, ref_latents) -> the seven named outputs."""

    def __init__(self, model_file: Path, ref_latents: np.ndarray, options: SessionOptions | None = None) -> None:
        import onnxruntime as ort

        self.options = options or SessionOptions()
        so = ort.SessionOptions()
        if self.options.intra_threads:
            so.intra_op_num_threads = self.options.intra_threads
        if self.options.inter_threads:
            so.inter_op_num_threads = self.options.inter_threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        want_cuda = self.options.provider in ("auto", "cuda") and "CUDAExecutionProvider" in available
        if self.options.provider == "cuda" and not want_cuda:
            raise RuntimeError(f"RMAD_MODEL_PROVIDER=cuda but onnxruntime offers only {available}")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        self._sess = ort.InferenceSession(str(model_file), sess_options=so, providers=providers)
        self.provider = self._sess.get_providers()[0]
        self.cuda = self.provider == "CUDAExecutionProvider"
        names = {o.name for o in self._sess.get_outputs()}
        missing = [n for n in OUTPUT_NAMES if n not in names]
        if missing:
            raise RuntimeError(f"{model_file}: graph lacks outputs {missing}")
        self._ref = np.ascontiguousarray(ref_latents, dtype=np.float32)
        self._ref_dev: Any = None
        if self.cuda:
            self._ref_dev = ort.OrtValue.ortvalue_from_numpy(self._ref, "cuda", 0)
        self._ort = ort

    def run(self, windows: np.ndarray, centres: np.ndarray) -> dict[str, np.ndarray]:
        """Score a [B, T, F] float32 batch against the given centres; returns name -> array."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        centres = np.ascontiguousarray(centres, dtype=np.float32)
        if self.cuda:
            return self._run_bound(windows, centres)
        outs = self._sess.run(list(OUTPUT_NAMES), {"windows": windows, "centres": centres, "ref_latents": self._ref})
        return dict(zip(OUTPUT_NAMES, outs, strict=True))

    def _run_bound(self, windows: np.ndarray, centres: np.ndarray) -> dict[str, np.ndarray]:
        binding = self._sess.io_binding()
        binding.bind_cpu_input("windows", windows)
        binding.bind_cpu_input("centres", centres)
        binding.bind_ortvalue_input("ref_latents", self._ref_dev)
        for name in OUTPUT_NAMES:
            binding.bind_output(name, "cpu")
        self._sess.run_with_iobinding(binding)
        outs = binding.copy_outputs_to_cpu()
        return dict(zip(OUTPUT_NAMES, outs, strict=True))
