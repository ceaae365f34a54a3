"""POST /v1/score/transaction(s), POST /v1/score/window, GET /v1/models, POST /v1/models/{name}/reload.

A missing model is a 503 "model not loaded" (also the right answer in production before an artifact is shipped);
a window of the wrong shape is a 422 naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Response
from fastapi.exceptions import RequestValidationError

from service.api.access import require
from service.api.auth import Principal, Scope
from service.api.eventtime import check_time_ms
from service.api.metrics import SCORE_REQUESTS
from service.api.payloads import (
    BatchIn,
    BatchOut,
    ChainTxIn,
    ModelOut,
    ModelsOut,
    Problem,
    ScoreResult,
    TradeIn,
    TransactionIn,
    WindowIn,
)
from service.api.routes_alerts import AUTH_RESPONSES, Ctx
from service.api.scoring import BadWindow, ModelUnavailable, ScoringService, UnknownModel
from service.api.txscore import features_after, score_chain, score_trade, with_transaction
from service.schemas.scoring import Verdict
from service.scoring.decision import ModelFacts, decide

if TYPE_CHECKING:
    from service.scoring.scorer import WindowResult

router = APIRouter(prefix="/v1", tags=["scoring"])
Scorer_ = Annotated[Principal, Depends(require(Scope.SCORE))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "model not loaded"},
}
NO_MODEL: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no model of that name"}}
ModelName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")]


def _unavailable(exc: ModelUnavailable) -> HTTPException:
    return HTTPException(503, detail=str(exc), headers={"Retry-After": "10"})


def _result(
    svc: ScoringService | None,
    model: Any,
    r: WindowResult,
    key: str,
    window: np.ndarray,
    context: int,
    warm: bool,
    kind: str,
    window_end_ms: int | None = None,
) -> dict[str, Any]:
    """The response for one scored window: the scoring core's decision (service/scoring/decision.py) as a plain
    dict in `ScoreResult`'s field order and JSON types.

    Why a dict: this is the hot path; `orjson.dumps` of it is byte for byte `ScoreResult(...).model_dump_json()`
    (tests/api/test_scoring_parts.py checks) at a fraction of the cost of building and dumping six pydantic models.
    Routes that return models validate it (`ScoreResult.model_validate`).
    """
    n_features = svc.settings.alert_top_features if svc is not None else 3
    d = decide(
        r,
        window,
        ModelFacts.of(model),
        key=key,
        window_end_ms=window_end_ms,
        now_ms=0,
        n_features=n_features,
        cold_context=None if warm else context,
    )
    counter = _SCORED.get((kind, d.verdict))
    if counter is None:
        counter = _SCORED[(kind, d.verdict)] = SCORE_REQUESTS.labels(kind=kind, verdict=d.verdict.value)
    counter.inc()
    w = r.weights
    return {
        "key": key,
        "fused": float(r.fused),
        "branches": {"md": float(r.s_md), "trans": float(r.s_trans), "clust": float(r.s_clust)},
        "weights": {"md": float(w[0]), "trans": float(w[1]), "clust": float(w[2])},
        "threshold": float(r.threshold),
        "verdict": d.verdict.value,
        "anomaly_type": None if d.anomaly_type is None else d.anomaly_type.value,
        "severity": None if d.severity is None else d.severity.value,
        "explanation": d.explanation,
        "top_features": [c.as_dict() for c in d.top_features],
        "model_name": str(r.model_name),
        "model_version": str(r.model_version),
        "context_bars": int(context),
        "warm": bool(warm),
        "transaction": None,
    }


_SCORED: dict[tuple[str, Verdict], Any] = {}  # label children of rmad_api_scored_total


def score_json(result: dict[str, Any]) -> Response:
    """The 200 answer of POST /v1/score/transaction (also sent by service.api.fastpath)."""
    return Response(orjson.dumps(result), media_type="application/json")


async def _score_one(ctx: Any, item: TradeIn | ChainTxIn, loc: tuple[str | int, ...] = ("body",)) -> dict[str, Any]:
    svc: ScoringService = ctx.scoring
    s = ctx.settings
    check_time_ms(s, item.time_ms, (*loc, item.kind))
    if isinstance(item, TradeIn):
        model = svc.model(s.model_market)
        key = f"{item.venue}:{item.symbol}"
        live = await svc.live_context(key)
        window, context, warm = svc.market_window(model, live)
        r = await svc.score(s.model_market, window)
        tx = score_trade(None if live is None else live.prints, item.time_ms, item.price, item.size, item.side == "buy")
        return with_transaction(_result(svc, model, r, key, window, context, warm, "market"), tx, warm)
    from service.features.chain import CHAIN_FEATURES, feature_vector
    from service.features.chain_store import address_features
    from service.schemas.chain import UNIT_DECIMALS

    model = svc.model(s.model_chain)
    sender = await address_features(ctx.state, item.chain, item.from_address)
    receiver = None if item.to_address is None else await address_features(ctx.state, item.chain, item.to_address)
    unit = 10.0 ** UNIT_DECIMALS[item.chain]
    value, fee = int(item.value) / unit, int(item.fee) / unit
    tx = score_chain(sender, receiver, value, fee)
    after = features_after(sender, value, fee, item.time_ms, receiver is None or not receiver.get("first_seen_ms"))
    names = list(model.artifact.manifest.features.names)
    vec = feature_vector(after, names if set(names) <= set(after) else CHAIN_FEATURES)
    window = np.tile(np.asarray(vec, dtype=np.float32), (model.window, 1))
    key = f"{item.chain}:{item.from_address}"
    r = await svc.score(s.model_chain, window)
    seen = bool(sender.get("first_seen_ms"))
    return with_transaction(_result(svc, model, r, key, window, 0, seen, "chain"), tx, True)


@router.post(
    "/score/transaction",
    operation_id="score_transaction",
    response_model=ScoreResult,
    responses={**AUTH_RESPONSES, **UNAVAILABLE},
)
async def score_transaction(ctx: Ctx, _: Scorer_, body: TransactionIn) -> Response:
    """Score one on-chain transaction (`kind: chain`) or exchange trade (`kind: trade`) with the live model."""
    try:
        result = await _score_one(ctx, body)
    except ModelUnavailable as exc:
        raise _unavailable(exc) from None
    # built from trusted parts; serialised once (FastAPI would validate a returned model again: the hot path)
    return score_json(result)


@router.post(
    "/score/transactions",
    operation_id="score_transactions",
    response_model=BatchOut,
    responses={**AUTH_RESPONSES, **UNAVAILABLE, 413: {"model": Problem, "description": "batch too large"}},
)
async def score_transactions(ctx: Ctx, _: Scorer_, body: BatchIn) -> BatchOut:
    """Score a batch (at most RMAD_API_BATCH_MAX items), answered in the same order."""
    limit = ctx.settings.api_batch_max
    if len(body.items) > limit:
        raise RequestValidationError(
            [{"type": "too_long", "loc": ("body", "items"), "msg": f"at most {limit} items per batch", "input": None}]
        )
    import asyncio

    try:
        results = await asyncio.gather(*(_score_one(ctx, x, ("body", "items", i)) for i, x in enumerate(body.items)))
    except ModelUnavailable as exc:
        raise _unavailable(exc) from None
    return BatchOut(items=[ScoreResult.model_validate(x) for x in results])


@router.post(
    "/score/window",
    operation_id="score_window",
    response_model=ScoreResult,
    responses={**AUTH_RESPONSES, **UNAVAILABLE, **NO_MODEL},
)
async def score_window(ctx: Ctx, _: Scorer_, body: WindowIn) -> ScoreResult:
    """Score a caller-supplied window: unscaled features [T, F] in the manifest's order, or OHLCV bars."""
    svc: ScoringService = ctx.scoring
    try:
        model = svc.model(body.model)
        if body.features is not None:
            field = "features"
            try:
                window = np.asarray(body.features, dtype=np.float32)
            except ValueError:
                raise BadWindow("rows must all have the same length") from None
            if window.ndim != 2 or window.shape[1] != model.n_features:
                raise BadWindow(
                    f"expected a [T, {model.n_features}] array of numbers (the manifest's features), "
                    f"got {'x'.join(map(str, window.shape))}"
                )
            context = window.shape[0]
            window_full = window
        elif body.bars is not None:
            field = "bars"
            from service.features.bars import TimeBar
            from service.features.market import MarketFeatureState

            state = MarketFeatureState()
            interval = int(model.artifact.manifest.bar_interval_s * 1000)
            rows = []
            for b in body.bars:
                bar = TimeBar(
                    start_ms=b.start_ms, interval_ms=interval, open=b.open, high=max(b.high, b.open, b.close, b.low),
                    low=min(b.low, b.open, b.close, b.high), close=b.close, volume=b.volume,
                    quote_volume=b.volume * b.close, vwap=b.close, trades=b.trades,
                    taker_buy_volume=b.taker_buy_volume,
                    taker_sell_volume=None if b.taker_buy_volume is None else max(b.volume - b.taker_buy_volume, 0.0),
                    taker_buy_quote=None if b.taker_buy_volume is None else b.taker_buy_volume * b.close,
                    rush_orders=None, rush_sell_orders=None,
                )  # fmt: skip
                rows.append(np.asarray(state.update(bar), dtype=np.float32))
            context = len(rows)
            window_full, _warm = svc.padded(model, rows)
        else:
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body", "features"), "msg": "give `features` or `bars`", "input": None}]
            )
        if body.features is not None and window_full.shape[0] < model.window:
            window_full, _warm = svc.padded(model, list(window_full))
        elif body.features is not None:
            window_full = window_full[-model.window :]
        r = await svc.score(body.model, window_full)
    except ModelUnavailable as exc:
        raise _unavailable(exc) from None
    except UnknownModel as exc:
        raise HTTPException(404, detail=str(exc)) from None
    except BadWindow as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", field), "msg": str(exc), "input": None}]
        ) from None
    warm = context >= model.window
    kind = model.artifact.manifest.kind
    return ScoreResult.model_validate(
        _result(svc, model, r, body.key, window_full, context, warm, kind, body.window_end_ms)
    )


def _model_out(m: Any) -> ModelOut:
    man = m.artifact.manifest
    card_path = FsPath(m.artifact.path) / "card.md"
    card = card_path.read_text(encoding="utf-8", errors="replace")[:200_000] if card_path.is_file() else None
    th = man.thresholds.model_dump()
    calibration = man.evaluation.get("calibration") if isinstance(man.evaluation, dict) else None
    return ModelOut(
        name=man.name,
        version=man.version,
        kind=man.kind,
        window=man.window,
        features=list(man.features.names),
        thresholds={k: (float(v) if isinstance(v, int | float) else None) for k, v in th.items()},
        created_ms=man.created_ms,
        provider=str(getattr(m.session, "provider", "")),
        loaded_ms=m.loaded_ms,
        card=card,
        calibration=json.loads(
            json.dumps(calibration if isinstance(calibration, dict) else {"thresholds": th}, default=str)
        ),
    )


@router.get("/models", operation_id="list_models", response_model=ModelsOut, tags=["models"], responses=AUTH_RESPONSES)
async def list_models(ctx: Ctx, _: Annotated[Principal, Depends(require(Scope.SUBSCRIBE))]) -> ModelsOut:
    """Serving models: version, manifest facts, model card, calibration; and versions refused, with why."""
    svc: ScoringService = ctx.scoring
    svc.ensure_loaded()
    reg = svc.registry()
    return ModelsOut(
        models=[_model_out(m) for m in svc.loaded_models()], failures=reg.failures() if reg is not None else {}
    )


@router.post(
    "/models/{name}/reload",
    operation_id="reload_model",
    response_model=ModelOut,
    tags=["models"],
    responses={**AUTH_RESPONSES, **UNAVAILABLE, **NO_MODEL},
)
async def reload_model(ctx: Ctx, _: Admin, name: ModelName) -> ModelOut:
    """Look for a newer version of `name` now and swap to it when it loads and passes its self-check (admin)."""
    svc: ScoringService = ctx.scoring
    try:
        svc.ensure_loaded()
        _swapped, model, why = await svc.reload(name)
    except ModelUnavailable as exc:
        raise _unavailable(exc) from None
    if model is None:
        if name in svc.model_names():
            raise HTTPException(503, detail=f"model not loaded: {why or f'no artifact for {name!r}'}")
        raise HTTPException(404, detail=f"no model named {name!r}: {why or 'no artifact under the model directory'}")
    return _model_out(model)
