"""Model registry: the newest good artifact version per model name, hot-reloaded in the background.

Why swap atomically and keep the old one on failure: a worker must never stop scoring because someone copied a
half-written or incompatible artifact into the model directory. A candidate is loaded and self-checked off to
the side (in a thread, so the event loop keeps serving); only a model that passes replaces the current one, in a
single reference assignment, so a batch sees either the old model or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.scoring import metrics
from service.scoring.manifest import Artifact, ManifestError, load_artifact, load_manifest
from service.scoring.session import ModelSession, SessionOptions

log = logging.getLogger(__name__)


class ModelNotFoundError(LookupError):
    """No servable artifact of that name (none present, or every version failed to load)."""


@dataclass(frozen=True)
class LoadedModel:
    """Everything needed to score with one artifact version; immutable so it can be shared across tasks."""

    artifact: Artifact
    session: ModelSession
    loaded_ms: int

    @property
    def name(self) -> str:
        return self.artifact.manifest.name

    @property
    def version(self) -> str:
        return self.artifact.manifest.version

    @property
    def threshold(self) -> float:
        return float(self.artifact.manifest.thresholds.alert)

    @property
    def window(self) -> int:
        return self.artifact.manifest.window

    @property
    def n_features(self) -> int:
        return self.artifact.manifest.n_features


def self_check(model: LoadedModel) -> None:
    """Run a tiny batch through the graph and check shapes and finiteness; raise ManifestError when it fails."""
    m = model.artifact.manifest
    t, f = m.window, m.n_features
    batch = np.zeros((2, t, f), dtype=np.float32)
    a = model.artifact
    batch[1] = np.clip((a.normal - a.center) / a.scale, -a.clip, a.clip)
    try:
        out = model.session.run(batch, model.artifact.centres)
    except Exception as exc:
        raise ManifestError(f"{model.artifact.path}: self-check inference failed: {exc}") from exc
    d = model.artifact.centres.shape[1]
    want = {
        "fused": (2,),
        "s_md": (2,),
        "s_trans": (2,),
        "s_clust": (2,),
        "weights": (2, 3),
        "feature_errors": (2, f),
        "embedding": (2, d),
    }
    for name, shape in want.items():
        got = out[name].shape
        if tuple(got) != shape:
            raise ManifestError(f"{model.artifact.path}: self-check output {name} has shape {got}, expected {shape}")
        if not np.all(np.isfinite(out[name])):
            raise ManifestError(f"{model.artifact.path}: self-check output {name} is not finite")


def load_model(path: Path, options: SessionOptions | None = None, *, check_features: bool = True) -> LoadedModel:
    """Load one version directory, build its session and self-check it (raises ManifestError)."""
    artifact = load_artifact(path, check_features=check_features)
    try:
        session = ModelSession(artifact.model_file, artifact.ref_latents, options)
    except Exception as exc:
        raise ManifestError(f"{artifact.model_file}: onnxruntime cannot load it: {exc}") from exc
    model = LoadedModel(artifact, session, int(time.time() * 1000))
    self_check(model)
    return model


def _fingerprint(path: Path) -> tuple[float, ...]:
    """Modification times of the files that define a version, so an edited version is tried again."""
    out = []
    for name in ("manifest.json", "model.onnx"):
        try:
            out.append((path / name).stat().st_mtime)
        except OSError:
            out.append(0.0)
    return tuple(out)


def _candidates(model_dir: Path, name: str) -> list[Path]:
    """Version directories of a model, newest first (manifest created_ms, then version string)."""
    root = model_dir / name
    if not root.is_dir():
        return []
    found: list[tuple[int, str, Path]] = []
    for d in root.iterdir():
        if not (d / "manifest.json").is_file():
            continue
        try:
            m = load_manifest(d)
            found.append((m.created_ms, m.version, d))
        except ManifestError:
            found.append((0, d.name, d))  # still a candidate: loading it records the failure
    found.sort(key=lambda x: (x[0], x[1]), reverse=True)
    return [p for _, _, p in found]


@dataclass
class ModelRegistry:
    """Current model per name; `refresh` looks for newer versions, `start` does it periodically."""

    model_dir: Path
    options: SessionOptions = field(default_factory=SessionOptions)
    reload_interval_s: float = 10.0
    check_features: bool = True
    on_swap: list[Callable[[LoadedModel, LoadedModel | None], None]] = field(default_factory=list)
    _models: dict[str, LoadedModel] = field(default_factory=dict)
    _failed: dict[Path, tuple[tuple[float, ...], str]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _names: set[str] = field(default_factory=set)

    def get(self, name: str) -> LoadedModel:
        """The model serving now (a stable reference: keep it for a whole batch)."""
        model = self._models.get(name)
        if model is None:
            if name not in self._names:
                self.refresh(name)
                model = self._models.get(name)
            if model is None:
                raise ModelNotFoundError(self._why_missing(name))
        return model

    def maybe(self, name: str) -> LoadedModel | None:
        try:
            return self.get(name)
        except ModelNotFoundError:
            return None

    def names(self) -> list[str]:
        return sorted(self._models)

    def failures(self) -> dict[str, str]:
        """Version path -> why it was refused (for health and logs)."""
        return {str(p): why for p, (_, why) in self._failed.items()}

    def _why_missing(self, name: str) -> str:
        root = self.model_dir / name
        fails = [why for p, (_, why) in self._failed.items() if p.parent == root]
        if fails:
            return f"model {name!r}: no version under {root} could be served: " + "; ".join(fails)
        return f"model {name!r}: no artifact under {root} (expected <version>/manifest.json + model.onnx)"

    def refresh(self, name: str) -> bool:
        """Load the newest loadable version of `name` when it differs from the serving one; True on a swap.

        Versions are tried newest first; a failing one is remembered (with its file times) and skipped until its
        files change, and the next older version is tried, so the serving model is the newest that works.
        """
        self._names.add(name)
        current = self._models.get(name)
        for path in _candidates(self.model_dir, name):
            if current is not None and path == current.artifact.path:
                return False  # the newest loadable is already serving
            fp = _fingerprint(path)
            failed = self._failed.get(path)
            if failed is not None and failed[0] == fp:
                continue
            try:
                model = load_model(path, self.options, check_features=self.check_features)
            except Exception as exc:
                why = str(exc)
                self._failed[path] = (fp, why)
                metrics.MODEL_RELOADS.labels(model=name, outcome="failed").inc()
                log.error("model %s: refusing %s: %s", name, path, why)
                continue
            self._failed.pop(path, None)
            self._models[name] = model  # the atomic swap
            metrics.MODEL_RELOADS.labels(model=name, outcome="loaded").inc()
            metrics.MODEL_INFO.labels(model=name).info({"version": model.version, "provider": model.session.provider})
            log.info("model %s: serving version %s from %s (%s)", name, model.version, path, model.session.provider)
            for cb in self.on_swap:
                cb(model, current)
            return True
        return False

    async def refresh_async(self, name: str) -> bool:
        """`refresh` in a thread: loading a graph takes long enough to stall the event loop."""
        return await asyncio.to_thread(self.refresh, name)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval_s)
            for name in sorted(self._names):
                try:
                    await self.refresh_async(name)
                except Exception:
                    log.exception("model %s: reload check failed", name)

    def start(self) -> None:
        if self.reload_interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="model-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
