"""REST scoring: the worker's features and the same `Scorer` (same ONNX session code) behind the /v1/score routes.

Why a micro-batcher: one ONNX call per HTTP request would cap the API at one inference per request on a 2-core box;
requests arriving within `scoring_max_wait_ms` of each other are stacked into one call (up to
`scoring_batch_size`, the worker's micro-batcher: service/scoring/batcher.py `BatchRunner`), run in a worker
thread, and each request gets its own row back. Latency stays within a
couple of milliseconds while throughput follows the batch.
Why no market state here: a trade is scored in the context of its symbol's recent bars and trades, and those are
what the scoring worker publishes after each batch (service/scoring/live_state.py): the API reads them from the
state store instead of following trades and building bars a second time. A key the worker has not published (or a
model of another shape) is scored against the model's typical (training median) values, `warm: false`.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.runtime import Runtime

if TYPE_CHECKING:
    from service.scoring.batcher import BatchRunner
    from service.scoring.live_state import LiveContext
    from service.scoring.registry import LoadedModel, ModelRegistry
    from service.scoring.scorer import Scorer, WindowResult

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """No model of that name is loaded (the API answers 503 "model not loaded")."""


class UnknownModel(LookupError):
    """A model name that is neither configured nor loadable (the API answers 404)."""


class BadWindow(ValueError):
    """The caller's window does not fit the model (the API answers 422 naming the field)."""


class ScoringService:
    """Models (a registry of its own, hot-reloaded), micro-batched scoring, live market context per key."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self._registry: ModelRegistry | None = None
        self._scorer: Scorer | None = None
        self._batchers: dict[str, BatchRunner[np.ndarray, WindowResult]] = {}
        self._started = False
        self.import_error: str | None = None

    # --- models
    def registry(self) -> ModelRegistry | None:
        if self._registry is None and self.import_error is None:
            try:
                from service.scoring.scorer import Scorer
                from service.scoring.worker import build_registry
            except ImportError as exc:  # onnxruntime missing: the API still serves everything else
                self.import_error = f"scoring is unavailable in this install: {exc}"
                return None
            self._registry = build_registry(self.settings)  # the worker's model directory and session options
            self._scorer = Scorer(self._registry)
        return self._registry

    def model_names(self) -> list[str]:
        s: Any = self.settings
        return [getattr(s, "model_market", "market"), getattr(s, "model_chain", "chain")]

    def loaded_models(self) -> list[LoadedModel]:
        reg = self._registry
        if reg is None:
            return []
        return [m for m in (reg.maybe(n) for n in reg.names()) if m is not None]

    def ensure_loaded(self) -> None:
        """Look for every configured model once (quick when none is present) and start hot reload."""
        reg = self.registry()
        if reg is None or self._started:
            return
        self._started = True
        for name in self.model_names():
            try:
                reg.refresh(name)
            except Exception as exc:
                log.warning("model %s: %s", name, exc)
        try:
            reg.start()
        except RuntimeError:
            pass

    def model(self, name: str) -> LoadedModel:
        self.ensure_loaded()
        reg = self.registry()
        if reg is None:
            raise ModelUnavailable(f"model not loaded: {self.import_error}")
        m = reg.maybe(name)
        if m is None:
            if name in self.model_names():
                raise ModelUnavailable(f"model not loaded: no servable {name!r} model under {reg.model_dir}")
            raise UnknownModel(f"no model named {name!r} (configured: {', '.join(self.model_names())})")
        return m

    async def reload(self, name: str) -> tuple[bool, LoadedModel | None, str]:
        reg = self.registry()
        if reg is None:
            raise ModelUnavailable(f"model not loaded: {self.import_error}")
        swapped = await reg.refresh_async(name)
        model = reg.maybe(name)
        failures = [why for p, why in reg.failures().items() if Path(p).parent.name == name]
        return swapped, model, "; ".join(failures)

    async def stop(self) -> None:
        if self._registry is not None:
            await self._registry.stop()
        self._started = False

    async def start(self) -> None:
        """Load the configured models off the event loop and start hot reload (the `api-models` component)."""
        reg = self.registry()
        if reg is None or self._started:
            return
        self._started = True
        for name in self.model_names():
            try:
                await reg.refresh_async(name)
            except Exception as exc:
                log.warning("model %s: %s", name, exc)
        reg.start()

    # --- scoring
    async def score(self, model_name: str, window: np.ndarray) -> WindowResult:
        model = self.model(model_name)
        if window.shape != (model.window, model.n_features):
            raise BadWindow(
                f"model {model.name}/{model.version} takes {model.window} bars x {model.n_features} features, "
                f"got {window.shape[0]} x {window.shape[1] if window.ndim == 2 else '?'}"
            )
        b = self._batchers.get(model_name)
        if b is None:
            from service.scoring.batcher import BatchRunner

            s: Any = self.settings
            b = self._batchers[model_name] = BatchRunner(
                functools.partial(self._score_batch, model_name),
                int(getattr(s, "scoring_batch_size", 256)),
                float(getattr(s, "scoring_max_wait_ms", 2.0)) / 1000,
            )
        return await b.submit(window.astype(np.float32, copy=False))

    async def _score_batch(self, model_name: str, windows: list[np.ndarray]) -> list[WindowResult]:
        """One inference call for a micro-batch of requests' windows (all of one model version)."""
        scorer = self._scorer
        assert scorer is not None
        model = scorer.model(model_name)
        stacked = np.stack(windows)
        if len(windows) <= 4:  # tiny batches: a thread hop costs more than the inference
            return scorer.score_windows(model_name, stacked, model=model)
        return await scorer.score_windows_async(model_name, stacked, model=model)

    def padded(self, model: LoadedModel, rows: list[np.ndarray]) -> tuple[np.ndarray, bool]:
        """The last `window` rows, padded in front with the model's typical values when there are fewer."""
        t, f = model.window, model.n_features
        out = np.empty((t, f), dtype=np.float32)
        rows = rows[-t:]
        pad = t - len(rows)
        if pad:
            out[:pad] = np.asarray(model.artifact.normal, dtype=np.float32)
        if rows:
            out[pad:] = np.stack(rows)
        return out, pad == 0

    # --- live context (published by the scoring worker: service/scoring/live_state.py)
    async def live_context(self, key: str) -> LiveContext | None:
        """The key's newest scored window and recent trades, or None when the worker has published none."""
        from service.scoring.live_state import read_live

        return await read_live(self.runtime.state, key)

    def market_window(self, model: LoadedModel, live: LiveContext | None) -> tuple[np.ndarray, int, bool]:
        """The window that gives a trade its market context: the worker's newest window for the key when it fits
        this model (warm when the key's features had warmed up), else the model's typical values (cold)."""
        if live is not None and live.window.shape == (model.window, model.n_features):
            return live.window, model.window, live.scorable
        return self.padded(model, [])[0], 0, False


def now_ms() -> int:
    return int(time.time() * 1000)


class ModelsComponent:
    """The api role's model component: loads the models at start (so live market context is kept from the first
    trade, not from the first scoring request), hot-reloads them, and says which are serving."""

    name = "api-models"

    def __init__(self, service: ScoringService) -> None:
        self.service = service

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()

    def health(self) -> Any:
        from service.runtime import Health

        if self.service.import_error:
            return Health(True, self.service.import_error)
        models = self.service.loaded_models()
        if not models:
            # not a readiness failure: everything but scoring works, and scoring answers 503 "model not loaded"
            return Health(True, "no model loaded; scoring answers 503")
        return Health(True, ", ".join(f"{m.name}/{m.version}" for m in models))
