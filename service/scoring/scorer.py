"""`Scorer.score_windows`: the one place feature windows become scores (worker, offline `rmad score`, REST API).

Why one entry point: the streaming worker, the offline command and the API's POST /v1/score/* must give the same
number for the same window. All three hand unscaled feature windows (as service/features computes them) to this
class, which applies the manifest's scaling, runs the model's session against the given (or seed) centres, and
returns plain results.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.features.chain import signed_log1p
from service.features.scaling import RobustScaler
from service.schemas.scoring import BranchScores, Score
from service.scoring import metrics
from service.scoring.registry import LoadedModel, ModelRegistry

Windows = Sequence[np.ndarray] | Sequence[Sequence[Sequence[float]]] | np.ndarray


class WindowShapeError(ValueError):
    """A window does not have the model's [T, F] shape (the API answers 422 with this message)."""


@dataclass(frozen=True, slots=True)
class WindowResult:
    """The model's outputs for one window, plus what is needed to judge and explain them."""

    fused: float
    s_md: float
    s_trans: float
    s_clust: float
    weights: tuple[float, float, float]
    feature_errors: np.ndarray  # float32 [F]
    embedding: np.ndarray  # float32 [D]
    last_values: np.ndarray  # float32 [F]: the window's last row, unscaled
    threshold: float
    model_name: str
    model_version: str

    @property
    def is_anomalous(self) -> bool:
        """At or above the calibrated alert threshold (before hysteresis and cool-down)."""
        return self.fused >= self.threshold

    @property
    def branches(self) -> BranchScores:
        return BranchScores(md=self.s_md, trans=self.s_trans, clust=self.s_clust)

    @property
    def branch_weights(self) -> BranchScores:
        return BranchScores(md=self.weights[0], trans=self.weights[1], clust=self.weights[2])

    def to_score(
        self, key: str, window_end_ms: int, last_event_ms: int, incomplete: bool = False, scored_ms: int | None = None
    ) -> Score:
        return Score(
            key=key,
            window_end_ms=window_end_ms,
            fused=self.fused,
            branches=self.branches,
            weights=self.branch_weights,
            threshold=self.threshold,
            model_name=self.model_name,
            model_version=self.model_version,
            incomplete=incomplete,
            last_event_ms=last_event_ms,
            scored_ms=int(time.time() * 1000) if scored_ms is None else scored_ms,
        )


def scaler_for(model: LoadedModel) -> RobustScaler:
    a = model.artifact
    return RobustScaler(center=a.center, scale=a.scale, clip=a.clip)


class Scorer:
    """Scores batches of unscaled [T, F] feature windows with the registry's current model."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._scalers: dict[tuple[str, str], RobustScaler] = {}

    def model(self, model_name: str) -> LoadedModel:
        """The serving model (raises service.scoring.registry.ModelNotFoundError)."""
        return self.registry.get(model_name)

    def stack(self, model: LoadedModel, windows: Windows) -> np.ndarray:
        """Check shapes and stack into float32 [B, T, F] (unscaled)."""
        t, f = model.window, model.n_features
        if isinstance(windows, np.ndarray) and windows.ndim == 3:
            arr = windows.astype(np.float32, copy=False)
        else:
            try:
                arr = (
                    np.stack([np.asarray(w, dtype=np.float32) for w in windows])
                    if len(windows)
                    else np.zeros((0, t, f), np.float32)
                )
            except ValueError as exc:
                raise WindowShapeError(f"windows must all be [{t}, {f}] arrays of numbers: {exc}") from None
        if arr.ndim != 3 or arr.shape[1:] != (t, f):
            raise WindowShapeError(
                f"model {model.name}/{model.version} takes windows of {t} bars x {f} features "
                f"({', '.join(model.artifact.manifest.features.names[:3])}, ...), got shape {tuple(arr.shape)}"
            )
        return arr

    def score_windows(
        self,
        model_name: str,
        windows: Windows,
        *,
        centres: np.ndarray | None = None,
        model: LoadedModel | None = None,
    ) -> list[WindowResult]:
        """Score unscaled windows; `centres` defaults to the manifest's seed centres (the worker passes the
        shared online ones), `model` pins a model version for a whole batch."""
        m = model or self.registry.get(model_name)
        arr = self.stack(m, windows)
        if len(arr) == 0:
            return []
        key = (m.name, m.version)
        scaler = self._scalers.get(key)
        if scaler is None:
            scaler = self._scalers[key] = scaler_for(m)
        if m.artifact.manifest.features.transform == "signed_log1p":
            arr = signed_log1p(arr)
        x = scaler.transform(arr)
        c = m.artifact.centres if centres is None else centres
        t0 = time.perf_counter()
        out = m.session.run(x, c)
        metrics.INFERENCE_SECONDS.labels(model=m.name).observe(time.perf_counter() - t0)
        metrics.BATCH_SIZE.labels(model=m.name).observe(len(arr))
        metrics.WINDOWS_SCORED.labels(model=m.name).inc(len(arr))
        fused, md, tr, cl = out["fused"], out["s_md"], out["s_trans"], out["s_clust"]
        score_hist = metrics.FUSED_SCORE.labels(model=m.name)
        for value in fused.tolist():
            score_hist.observe(value)
        w, fe, emb = out["weights"], out["feature_errors"], out["embedding"]
        thr = m.threshold
        return [
            WindowResult(
                fused=float(fused[i]),
                s_md=float(md[i]),
                s_trans=float(tr[i]),
                s_clust=float(cl[i]),
                weights=(float(w[i, 0]), float(w[i, 1]), float(w[i, 2])),
                feature_errors=fe[i],
                embedding=emb[i],
                last_values=arr[i, -1],
                threshold=thr,
                model_name=m.name,
                model_version=m.version,
            )
            for i in range(len(arr))
        ]

    async def score_windows_async(
        self,
        model_name: str,
        windows: Windows,
        *,
        centres: np.ndarray | None = None,
        model: LoadedModel | None = None,
    ) -> list[WindowResult]:
        """`score_windows` in a worker thread, so an event loop keeps serving during inference."""
        return await asyncio.to_thread(self.score_windows, model_name, windows, centres=centres, model=model)
