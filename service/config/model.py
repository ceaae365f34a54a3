"""Settings owned by the model part (fields are read as RMAD_<FIELD>)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class ModelSettings(BaseModel):
    """Where the ONNX artifacts live and how onnxruntime runs them; composed into service.settings.Settings.

    Why these knobs: the same artifact runs on a 2-core laptop (CPU, one intra-op thread per worker so several
    workers do not fight over cores) and on a GPU node (CUDA provider with I/O binding); the operator picks
    without rebuilding anything.
    """

    model_dir: Path = Field(
        default=Path("models/artifacts"), description="root of <name>/<version>/{model.onnx,manifest.json}"
    )
    model_market: str = Field(default="market", description="model name the worker scores market windows with")
    model_chain: str = Field(default="chain", description="model name for chain address windows (skipped if absent)")
    model_provider: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA with I/O binding when onnxruntime offers it, else CPU"
    )
    model_intra_threads: int = Field(default=1, ge=0, le=256, description="onnxruntime intra-op threads (0 = ort)")
    model_inter_threads: int = Field(default=1, ge=0, le=256, description="onnxruntime inter-op threads (0 = ort)")
    model_reload_interval_s: float = Field(
        default=10.0, ge=0, description="how often the registry looks for a new artifact version (0 = never)"
    )
