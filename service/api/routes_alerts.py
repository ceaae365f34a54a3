"""GET /v1/alerts (filters, cursor pages), GET /v1/alerts/{id}, feedback, latest scores, the price tape and status."""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response

from service.api.access import require
from service.api.alertlog import AlertFilter, LogEntry
from service.api.auth import Principal, Scope
from service.api.context import ApiContext, api_context
from service.api.followers import FRESHNESS_KEY, TAPE_KEYS, scores_stream, tape_stream
from service.api.metrics import FOLLOWER_LAG
from service.api.payloads import (
    AlertPage,
    AlertRecord,
    FeedbackIn,
    FeedbackOut,
    FeedbackVerdict,
    Name,
    PartOut,
    Problem,
    ScoresOut,
    Seq,
    StatusOut,
    SymbolsOut,
    TapeBar,
    TapeOut,
)
from service.schemas.scoring import Alert, AnomalyType, Score, Severity

router = APIRouter(prefix="/v1", tags=["alerts"])

AUTH_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "missing or invalid API key"},
    403: {"model": Problem, "description": "the key lacks the scope"},
    429: {"model": Problem, "description": "rate limit exceeded; see Retry-After"},
}
AlertId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


async def ctx_dep(request: Request) -> ApiContext:
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread (a thread hop on every request)
    return api_context(request.app)


Ctx = Annotated[ApiContext, Depends(ctx_dep)]
Subscriber = Annotated[Principal, Depends(require(Scope.SUBSCRIBE))]


def _record(entry: LogEntry, fb: FeedbackOut | None = None) -> AlertRecord:
    return AlertRecord(seq=entry.seq, alert=Alert.model_validate_json(entry.raw), feedback=fb)


@router.get("/alerts", operation_id="list_alerts", response_model=AlertPage, responses=AUTH_RESPONSES)
async def list_alerts(
    ctx: Ctx,
    _: Subscriber,
    venue: Annotated[list[Name] | None, Query(description="venue (repeat for several)")] = None,
    symbol: Annotated[list[Name] | None, Query(description="symbol (repeat for several)")] = None,
    type: Annotated[list[AnomalyType] | None, Query(description="anomaly type (repeat for several)")] = None,
    min_severity: Severity | None = None,
    since_ms: Annotated[int | None, Query(ge=0, le=10**14, description="created at or after, ms UTC")] = None,
    until_ms: Annotated[int | None, Query(ge=0, le=10**14, description="created at or before, ms UTC")] = None,
    cursor: Annotated[Seq | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AlertPage:
    """Alerts from the persistent log, newest first, filtered; follow `next_cursor` for older ones."""
    flt = AlertFilter(
        venues=frozenset(venue or ()),
        symbols=frozenset(symbol or ()),
        types=frozenset(t.value for t in type or ()),
        min_severity=min_severity,
        since_ms=since_ms,
        until_ms=until_ms,
    )
    entries, nxt = await ctx.alert_log.page(flt, cursor, limit, scan_max=max(5000, limit * 20))
    return AlertPage(items=[_record(e) for e in entries], next_cursor=nxt)


@router.get(
    "/alerts/{alert_id}",
    operation_id="get_alert",
    response_model=AlertRecord,
    responses={**AUTH_RESPONSES, 404: {"model": Problem, "description": "no such alert"}},
)
async def get_alert(ctx: Ctx, _: Subscriber, alert_id: AlertId) -> AlertRecord:
    """One alert by id, with the latest analyst feedback on it."""
    entry = await ctx.alert_log.get(alert_id)
    if entry is None:
        raise HTTPException(404, detail=f"no alert {alert_id}")
    fb = await ctx.feedback.latest(alert_id)
    fb_out = FeedbackOut(**dataclasses.asdict(fb)) if fb is not None else None
    return _record(entry, fb_out)


@router.post(
    "/alerts/{alert_id}/feedback",
    operation_id="post_alert_feedback",
    response_model=FeedbackOut,
    status_code=201,
    responses={**AUTH_RESPONSES, 404: {"model": Problem, "description": "no such alert"}},
)
async def post_feedback(
    ctx: Ctx, principal: Annotated[Principal, Depends(require(Scope.FEEDBACK))], alert_id: AlertId, body: FeedbackIn
) -> FeedbackOut:
    """An analyst confirms or dismisses an alert; stored, counted in metrics and exportable for re-training."""
    entry = await ctx.alert_log.get(alert_id)
    if entry is None:
        raise HTTPException(404, detail=f"no alert {alert_id}")
    rec = await ctx.feedback.record(entry, body.verdict.value, body.note, principal.key_id)
    from service.api.desk import desk_for  # the alert's case (if any) records the verdict too

    cases = desk_for(ctx).cases
    case_id = await cases.case_of_alert(alert_id)
    if case_id is not None:
        await cases.record_feedback(case_id, principal.key_id, alert_id, rec.verdict, rec.note)
    return FeedbackOut(
        alert_id=rec.alert_id,
        verdict=FeedbackVerdict(rec.verdict),
        note=rec.note,
        key_id=rec.key_id,
        time_ms=rec.time_ms,
    )


@router.get(
    "/feedback/export",
    operation_id="export_feedback",
    response_class=Response,
    responses={**AUTH_RESPONSES, 200: {"content": {"application/x-ndjson": {}}, "description": "NDJSON"}},
)
async def export_feedback(
    ctx: Ctx,
    _: Annotated[Principal, Depends(require(Scope.FEEDBACK))],
    since_ms: Annotated[int | None, Query(ge=0, le=10**14)] = None,
) -> Response:
    """Every feedback record with its alert, one JSON object a line (for re-training and threshold calibration)."""
    lines = await ctx.feedback.export(since_ms)
    return Response(b"".join(lines), media_type="application/x-ndjson")


@router.get(
    "/scores/{venue}/{symbol}",
    operation_id="get_latest_scores",
    response_model=ScoresOut,
    tags=["scores"],
    responses=AUTH_RESPONSES,
)
async def latest_scores(
    ctx: Ctx, _: Subscriber, venue: Name, symbol: Name, limit: Annotated[int, Query(ge=1, le=5000)] = 100
) -> ScoresOut:
    """The latest scores of one market key (newest first), as the worker produced them."""
    key = f"{venue}:{symbol}"
    rows = await ctx.state.xrevrange(scores_stream(key), count=limit)
    items = [Score.model_validate_json(f["json"]) for _, f in rows if "json" in f]
    return ScoresOut(key=key, items=items)


@router.get(
    "/tape/{venue}/{symbol}", operation_id="get_tape", response_model=TapeOut, tags=["scores"], responses=AUTH_RESPONSES
)
async def tape(
    ctx: Ctx, _: Subscriber, venue: Name, symbol: Name, limit: Annotated[int, Query(ge=1, le=5000)] = 300
) -> TapeOut:
    """Recent price/volume bars of one market key (the dashboard's chart), oldest first."""
    key = f"{venue}:{symbol}"
    rows = await ctx.state.xrevrange(tape_stream(key), count=limit)
    bars = [
        TapeBar(t=int(f["t"]), o=float(f["o"]), h=float(f["h"]), l=float(f["l"]), c=float(f["c"]), v=float(f["v"]))
        for _, f in reversed(rows)
    ]
    bars.sort(key=lambda b: b.t)  # a late bar is appended late; the chart wants time order
    return TapeOut(key=key, bars=bars)


@router.get(
    "/symbols", operation_id="list_symbols", response_model=SymbolsOut, tags=["scores"], responses=AUTH_RESPONSES
)
async def symbols(ctx: Ctx, _: Subscriber) -> SymbolsOut:
    """Market keys with data in the tape, most recently active first."""
    raw = await ctx.state.hgetall(TAPE_KEYS)
    keys = sorted(raw, key=lambda k: -int(raw[k]))
    return SymbolsOut(keys=keys[:500])


def _age(now_ms: float, raw: bytes | None) -> float | None:
    if raw is None:
        return None
    v = int(raw)
    return None if v <= 0 else max(0.0, (now_ms - v) / 1000)


@router.get("/status", operation_id="get_status", response_model=StatusOut, tags=["health"], responses=AUTH_RESPONSES)
async def status_(ctx: Ctx, _: Subscriber) -> StatusOut:
    """Health of every part as the data shows it: readiness, ingest lag, consumer lag, worker freshness, model."""
    parts = await ctx.runtime.readiness()
    fresh = await ctx.state.hgetall(FRESHNESS_KEY)
    now = time.time() * 1000
    ingest_lag = int(fresh["ingest_lag_ms"]) / 1000 if "ingest_lag_ms" in fresh else None
    scored, event = fresh.get("score_scored_ms"), fresh.get("score_event_ms")
    lags: dict[str, float] = {}
    for metric in FOLLOWER_LAG.collect():
        for sample in metric.samples:
            lags[sample.labels.get("kind", "?")] = round(float(sample.value), 3)
    model_name = fresh["model_name"].decode() if "model_name" in fresh else None
    model_version = fresh["model_version"].decode() if "model_version" in fresh else None
    if model_version is None:  # no score yet: the loaded market model (the one the worker scores with)
        for info in ctx.scoring.loaded_models():
            if info.name == ctx.settings.model_market:
                model_name, model_version = info.name, info.version
    return StatusOut(
        parts={n: PartOut(ok=h.ok, detail=h.detail) for n, h in parts.items()},
        ingest_lag_s=ingest_lag,
        market_age_s=_age(now, fresh.get("ingest_record_ms")),
        score_age_s=_age(now, fresh.get("score_record_ms")),
        score_lag_s=(int(scored) - int(event)) / 1000 if scored and event and int(event) > 0 else None,
        alert_age_s=_age(now, fresh.get("alert_record_ms")),
        consumer_lag_s=lags,
        model_name=model_name,
        model_version=model_version,
        alerts_logged=await ctx.state.xlen("alerts:log"),
        subscribers=len(ctx.hub.subscribers),
    )


def parse_raw(raw: bytes) -> dict[str, object]:
    out: dict[str, object] = orjson.loads(raw)
    return out
