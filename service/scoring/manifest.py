"""Load and validate a model artifact's manifest.json (docs/model-contract.md).

Why refuse at load: a model trained on a different feature list or feature parameters still runs, but scores
garbage. Comparing the manifest's feature names and spec hash with service/features at load time turns that silent
drift into a clear error naming both sides, before the model ever serves.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REQUIRED_OUTPUTS = ("fused", "s_md", "s_trans", "s_clust", "weights", "feature_errors", "embedding")
REQUIRED_INPUTS = ("windows", "centres", "ref_latents")


class ManifestError(ValueError):
    """The artifact cannot be served; the message says which file and what is wrong."""


class FeatureBlock(BaseModel):
    names: list[str]
    center: list[float]
    scale: list[float]
    normal: list[float]
    clip: float | None = None
    # applied to raw features before the robust scaling (chain models: amounts spanning many orders of magnitude)
    transform: Literal["none", "signed_log1p"] = "none"

    @model_validator(mode="after")
    def _same_length(self) -> FeatureBlock:
        n = len(self.names)
        if not (len(self.center) == len(self.scale) == len(self.normal) == n):
            raise ValueError(
                f"features: names/center/scale/normal lengths differ "
                f"({n}/{len(self.center)}/{len(self.scale)}/{len(self.normal)})"
            )
        if any(s <= 0 for s in self.scale):
            raise ValueError("features.scale must be > 0 everywhere")
        return self


class Thresholds(BaseModel):
    """Score tiers. Each present tier must lie strictly above the one before (note < watch < alert < critical): a
    manifest where `watch` sat above `alert` made every watch an alert's superset backwards; it is refused at load."""

    model_config = ConfigDict(extra="allow")

    alert: float
    note: float | None = None
    watch: float | None = None
    critical: float | None = None
    false_alarm_budget_per_day: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        tiers = [(n, getattr(self, n)) for n in ("note", "watch", "alert", "critical")]
        present = [(n, v) for n, v in tiers if v is not None]
        for (n0, v0), (n1, v1) in itertools.pairwise(present):
            if not v0 < v1:
                raise ValueError(
                    f"thresholds must be ordered note < watch < alert < critical: {n0} {v0:g} >= {n1} {v1:g}"
                )
        return self


class Manifest(BaseModel):
    """manifest.json as the runtime reads it (unknown keys are kept, not refused: training may add more)."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    created_ms: int = 0
    kind: Literal["market", "chain"] = "market"
    # which service/features set a market model takes: 5 s trade bars ("market") or exchange klines ("kline")
    feature_set: Literal["market", "kline"] = "market"
    window: int = Field(ge=1)
    bar_interval_s: float = Field(default=5.0, gt=0)
    # kline models: the candle intervals they take (None: the one `bar_interval_s`)
    bar_intervals_s: list[float] | None = None
    features: FeatureBlock
    spec_hash: str
    inputs: dict[str, list[int | None]]
    outputs: list[str]
    centres_file: str = "centres.npy"
    ref_latents_file: str = "ref_latents.npy"
    thresholds: Thresholds
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)

    @field_validator("bar_interval_s", mode="before")
    @classmethod
    def _no_bars(cls, v: object) -> object:
        """Chain models have no bars (null in their manifest); the field keeps a number for the market path."""
        return 5.0 if v is None else v

    @model_validator(mode="after")
    def _io(self) -> Manifest:
        missing_in = [n for n in REQUIRED_INPUTS if n not in self.inputs]
        missing_out = [n for n in REQUIRED_OUTPUTS if n not in self.outputs]
        if missing_in or missing_out:
            raise ValueError(f"manifest lacks inputs {missing_in} / outputs {missing_out} of the model contract")
        w = self.inputs["windows"]
        if len(w) != 3 or w[1] not in (None, self.window) or w[2] not in (None, len(self.features.names)):
            raise ValueError(
                f"inputs.windows {w} does not match window={self.window} and {len(self.features.names)} features"
            )
        return self

    @property
    def n_features(self) -> int:
        return len(self.features.names)


@dataclass(frozen=True)
class Artifact:
    """A manifest plus the arrays that go with it, all read from one version directory."""

    path: Path
    manifest: Manifest
    centres: np.ndarray  # float32 [K, D]: seed centres
    ref_latents: np.ndarray  # float32 [M, Z]
    center: np.ndarray  # float32 [F]: scaling (x - center) / scale
    scale: np.ndarray  # float32 [F]
    normal: np.ndarray  # float32 [F]: training medians, unscaled
    clip: float = 20.0  # scaled values are clipped to [-clip, clip] (service/features SCALED_CLIP)

    @property
    def model_file(self) -> Path:
        return self.path / "model.onnx"


def expected_spec(kind: str, feature_set: str = "market") -> tuple[list[str], str]:
    """The feature names and spec hash the runtime computes for a model kind (service/features decides)."""
    if kind == "market":
        from service.features.sets import feature_set as get_set

        fs = get_set(feature_set)
        return list(fs.names), fs.spec_hash
    from service.features import chain as chain_features

    return list(chain_features.CHAIN_FEATURES), chain_features.CHAIN_SPEC_HASH


def check_spec(manifest: Manifest, names: list[str], spec_hash: str, where: str = "") -> None:
    """Raise ManifestError when the manifest's features differ from what the runtime computes."""
    label = where or f"{manifest.name}/{manifest.version}"
    if manifest.features.names != names:
        extra = [n for n in manifest.features.names if n not in names]
        lacking = [n for n in names if n not in manifest.features.names]
        raise ManifestError(
            f"model {label} was trained on other features than service/features computes "
            f"(only in the model: {extra}; only in service/features: {lacking}; or a different order); "
            "retrain/export it against the current feature spec"
        )
    if manifest.spec_hash != spec_hash:
        raise ManifestError(
            f"model {label} spec_hash {manifest.spec_hash[:12]}... differs from service/features "
            f"{spec_hash[:12]}... (feature parameters changed); retrain/export it against the current spec"
        )
    if manifest.kind == "chain":
        from service.features.chain import CHAIN_MODEL_TRANSFORM

        if manifest.features.transform != CHAIN_MODEL_TRANSFORM:
            raise ManifestError(
                f"model {label}: chain models take features.transform {CHAIN_MODEL_TRANSFORM!r}, "
                f"the manifest says {manifest.features.transform!r}"
            )


def load_manifest(path: Path) -> Manifest:
    file = path / "manifest.json" if path.is_dir() else path
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{file}: no manifest.json") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{file}: unreadable manifest: {exc}") from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{file}: invalid manifest: {exc}") from None


def _npy(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot read {what}: {exc}") from None
    if arr.ndim != 2:
        raise ManifestError(f"{path}: {what} must be 2-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_artifact(path: Path, *, check_features: bool = True) -> Artifact:
    """Read and validate one version directory; with `check_features`, refuse a feature-spec mismatch."""
    manifest = load_manifest(path)
    if check_features:
        names, spec = expected_spec(manifest.kind, manifest.feature_set)
        check_spec(manifest, names, spec, where=str(path))
    if not (path / "model.onnx").is_file():
        raise ManifestError(f"{path}: no model.onnx")
    centres = _npy(path / manifest.centres_file, "centres")
    ref = _npy(path / manifest.ref_latents_file, "ref_latents")
    want_c = manifest.inputs["centres"]
    if len(want_c) == 2 and want_c[1] is not None and centres.shape[1] != want_c[1]:
        raise ManifestError(f"{path}: centres have D={centres.shape[1]}, manifest says {want_c[1]}")
    f = manifest.features
    return Artifact(
        path=path,
        manifest=manifest,
        centres=centres,
        ref_latents=ref,
        center=np.asarray(f.center, dtype=np.float32),
        scale=np.asarray(f.scale, dtype=np.float32),
        normal=np.asarray(f.normal, dtype=np.float32),
        clip=float(f.clip) if f.clip is not None else _default_clip(),
    )


def _default_clip() -> float:
    from service.features.spec import SCALED_CLIP

    return float(SCALED_CLIP)
