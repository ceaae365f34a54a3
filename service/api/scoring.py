"""REST scoring: the worker's features and the same `Scorer` (same ONNX session code) behind the /v1/score routes.

Why a micro-batcher: one ONNX call per HTTP request would cap the API at one inference per request on a 2-core box;
requests arriving within `scoring_max_wait_ms` of each other are stacked into one call (up to
`scoring_batch_size`, the worker's micro-batcher: service/scoring/batcher.py `BatchRunner`), run in a worker
thread, and each request gets its own row back. Latency stays within a
couple of milliseconds while throughput follows the batch.
Why live market state here: a trade is scored in the context of its symbol's recent bars. The api keeps, per key,
the same bar builder and `MarketFeatureState` as the worker, fed by the trades it follows; a scored trade is added
to a copy of the open bar, so scoring never changes the live state. A key without enough history is padded with the
model's typical (training median) values and answered with `warm: false`.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.runtime import Runtime

if TYPE_CHECKING:
    from service.scoring.batcher import BatchRunner
    from service.scoring.registry import LoadedModel, ModelRegistry
    from service.scoring.scorer import Scorer, WindowResult

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """No model of that name is loaded (the API answers 503 "model not loaded")."""


class UnknownModel(LookupError):
    """A model name that is neither configured nor loadable (the API answers 404)."""


class BadWindow(ValueError):
    """The caller's window does not fit the model (the API answers 422 naming the field)."""


@dataclass
class LiveMarket:
    """One key's bar builder, feature state and the last `window` feature rows (closed bars)."""

    builder: Any
    state: Any
    rows: deque[np.ndarray]
    last_bar: Any = None
    _stacked: np.ndarray | None = None  # `rows` as one [n, F] array, made on first use after they change

    def stacked(self) -> np.ndarray | None:
        """The live rows as one array (None when there are none); rows change once a bar, requests come often."""
        if self._stacked is None and self.rows:
            self._stacked = np.stack(self.rows)
        return self._stacked


class ScoringService:
    """Models (a registry of its own, hot-reloaded), micro-batched scoring, live market context per key."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self._registry: ModelRegistry | None = None
        self._scorer: Scorer | None = None
        self._batchers: dict[str, BatchRunner[np.ndarray, WindowResult]] = {}
        self.markets: dict[str, LiveMarket] = {}
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

    # --- live market context
    def _new_market(self, model: LoadedModel) -> LiveMarket:
        from service.features.bars import TradeBarBuilder
        from service.features.market import MarketFeatureState

        interval = int(model.artifact.manifest.bar_interval_s * 1000)
        return LiveMarket(TradeBarBuilder(interval), MarketFeatureState(), deque(maxlen=model.window))

    def observe_trade(self, key: str, ts_ms: int, price: float, size: float, taker_buy: bool) -> None:
        """Feed one live trade (from the api's market follower) into the key's live state."""
        reg = self._registry
        if reg is None:
            return
        model = reg.maybe(getattr(self.settings, "model_market", "market"))
        if model is None:
            return
        mk = self.markets.get(key)
        if mk is None:
            if len(self.markets) >= 10_000:
                self.markets.pop(next(iter(self.markets)))
            mk = self.markets[key] = self._new_market(model)
        for bar in mk.builder.add_trade(ts_ms, price, size, taker_buy):
            mk.rows.append(np.asarray(mk.state.update(bar), dtype=np.float32))
            mk.last_bar = bar
            mk._stacked = None

    def trade_window(
        self, model: LoadedModel, key: str, ts_ms: int, price: float, size: float, buy: bool
    ) -> tuple[np.ndarray, int, bool]:
        """The window the trade would make: live rows + the open bar with this trade (on copies)."""
        live = self.markets.get(key)
        if live is None:
            mk = self._new_market(model)
            rows = None
        else:
            rows = live.stacked()
            mk = LiveMarket(fast_clone(live.builder), fast_clone(live.state), deque(), live.last_bar)
        closed = mk.builder.add_trade(ts_ms, price, size, buy)
        new = [np.asarray(mk.state.update(bar), dtype=np.float32) for bar in [*closed, *mk.builder.flush()]]
        context = (0 if rows is None else len(rows)) + len(new)
        window, warm = self._window(model, rows, new)
        return window, context, warm

    def _window(self, model: LoadedModel, rows: np.ndarray | None, new: list[np.ndarray]) -> tuple[np.ndarray, bool]:
        """`padded(model, [*rows, *new])` without stacking the live rows again: the last `window` of them, padded in
        front with the model's typical values when there are fewer."""
        t, f = model.window, model.n_features
        out = np.empty((t, f), dtype=np.float32)
        k = min(len(new), t)
        n = 0 if rows is None else min(len(rows), t - k)
        pad = t - k - n
        if pad:
            out[:pad] = np.asarray(model.artifact.normal, dtype=np.float32)
        if n:
            assert rows is not None
            out[pad : pad + n] = rows[len(rows) - n :]
        for i, row in enumerate(new[len(new) - k :]):
            out[t - k + i] = row
        return out, pad == 0


_ATOM_TYPES = frozenset({int, float, str, bytes, bool, type(None), tuple, frozenset, np.float32, np.float64, np.int64})
_SLOT_NAMES: dict[type, tuple[str, ...]] = {}


def _slot_names(cls: type) -> tuple[str, ...]:
    names = _SLOT_NAMES.get(cls)
    if names is None:
        found: list[str] = []
        for klass in cls.__mro__:
            slots = getattr(klass, "__slots__", ())
            found.extend([slots] if isinstance(slots, str) else slots)
        names = _SLOT_NAMES[cls] = tuple(n for n in found if n not in ("__dict__", "__weakref__"))
    return names


def fast_clone(obj: Any) -> Any:
    """A deep copy of the feature and bar state, many times faster than `copy.deepcopy`.

    Why: scoring a trade adds it to copies of its key's bar builder and feature state (the live state must not
    change), once per request; deepcopy's memo bookkeeping made that the most expensive step of a request. The
    states are trees of small objects (slots or dict) holding numbers, lists of numbers, dicts and tuples of
    numbers, with no shared or cyclic references; tuples and frozen dataclasses are immutable and shared. Each
    feature class gets a copier of its own, generated once from its slot names (straight-line attribute copies,
    no per-attribute lookups by name). Anything else falls back to deepcopy.
    """
    t = type(obj)
    if t in _ATOM_TYPES:
        return obj
    if t is list:
        if not obj or type(obj[0]) in _ATOM_TYPES:
            return obj[:]
        return [fast_clone(x) for x in obj]
    if t is dict:
        return {k: v if type(v) in _ATOM_TYPES else fast_clone(v) for k, v in obj.items()}
    if t is deque:
        return deque((fast_clone(x) for x in obj), maxlen=obj.maxlen)
    if t is np.ndarray:
        return obj.copy()
    copier = _COPIERS.get(t)
    if copier is None:
        copier = _COPIERS[t] = _make_copier(t)
    return copier(obj)


_COPIERS: dict[type, Callable[[Any], Any]] = {}


def _make_copier(t: type) -> Callable[[Any], Any]:
    """The copy function of one class: shared when immutable, generated for feature classes, else deepcopy."""
    if not t.__module__.startswith("service.features"):
        return copy.deepcopy
    params = getattr(t, "__dataclass_params__", None)
    if params is not None and params.frozen:
        return lambda obj: obj
    names = _slot_names(t)
    if not all(n.isidentifier() and not n.startswith("__") for n in names):
        return copy.deepcopy
    lines = ["def copier(o):", "    n = new(T)"]
    for name in names:  # a slot may be unset: copied only when set
        lines += [
            "    try:",
            f"        v = o.{name}",
            "    except AttributeError:",
            "        pass",
            "    else:",
            f"        setattr_(n, {name!r}, v if type(v) in ATOMS else clone(v))",
        ]
    if "__dict__" in dir(t) or not names:
        lines += [
            "    d = getattr(o, '__dict__', None)",
            "    if d:",
            "        n.__dict__.update({k: v if type(v) in ATOMS else clone(v) for k, v in d.items()})",
        ]
    lines.append("    return n")
    scope: dict[str, Any] = {
        "new": object.__new__,
        "T": t,
        "ATOMS": _ATOM_TYPES,
        "clone": fast_clone,
        "setattr_": object.__setattr__,
    }
    exec("\n".join(lines), scope)  # source built here from the class's own slot names
    copier: Callable[[Any], Any] = scope["copier"]
    return copier


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
