"""Live alert streams: WebSocket /v1/alerts/stream and Server-Sent Events /v1/alerts/sse.

Both: filters per subscriber (venue, symbol, type, min_severity; repeatable), resume with `last_id` (an alert id or
a log sequence; SSE also honours Last-Event-ID) without gaps or repeats, heartbeats every
RMAD_API_STREAM_HEARTBEAT_S, a bounded queue per subscriber. A subscriber whose queue fills, or whose socket does
not take a message within RMAD_API_STREAM_SEND_TIMEOUT_S, gets a final `error` message saying why and is closed
(WebSocket close code 4008); the hub never waits for it, so the others are not slowed.

Messages (JSON; SSE puts the same object in `data:` with `event:` = type and `id:` = seq):
  {"type":"alert","seq":"<log seq>","alert":{...}}
  {"type":"heartbeat","time_ms":...,"position":"<seq>"}
  {"type":"error","reason":"..."}
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from service.api.access import require
from service.api.alertlog import AlertFilter, LogEntry
from service.api.auth import AuthError, Principal, Scope, authenticate, presented_key
from service.api.context import ApiContext, api_context
from service.api.hub import SHUTDOWN_REASON, SubscriberCut, Subscription, backlog
from service.api.metrics import STREAM_CUT, STREAM_SENT, SUBSCRIBERS
from service.api.payloads import Name, Problem
from service.api.routes_alerts import AUTH_RESPONSES
from service.schemas.scoring import AnomalyType, Severity

router = APIRouter(prefix="/v1", tags=["streams"])

KEY_SUBPROTOCOL = "rmad-key."
WS_CLOSE_SLOW = 4008
WS_CLOSE_RESTART = 1012  # service restart: the server is shutting down; reconnect with last_id
WS_CLOSE_UNAUTHORIZED = 4401
WS_CLOSE_FORBIDDEN = 4403
WS_CLOSE_NOT_FOUND = 4404
WS_CLOSE_UNAVAILABLE = 4503


def alert_message(entry: LogEntry) -> bytes:
    return b'{"type":"alert","seq":"' + entry.seq.encode() + b'","alert":' + entry.raw + b"}"


def heartbeat_message(position: str | None) -> bytes:
    return orjson.dumps({"type": "heartbeat", "time_ms": int(time.time() * 1000), "position": position})


def error_message(reason: str) -> bytes:
    return orjson.dumps({"type": "error", "reason": reason})


def _filter(
    venue: list[str] | None, symbol: list[str] | None, type_: list[AnomalyType] | None, min_severity: Severity | None
) -> AlertFilter:
    return AlertFilter(
        venues=frozenset(venue or ()),
        symbols=frozenset(symbol or ()),
        types=frozenset(t.value for t in type_ or ()),
        min_severity=min_severity,
    )


async def _open(ctx: ApiContext, flt: AlertFilter, last_id: str | None) -> tuple[Subscription, list[LogEntry]]:
    """Register with the hub, then read what the subscriber missed (raises LookupError for an unknown last_id)."""
    resume: str | None = None
    if last_id:
        resume = await ctx.alert_log.resolve(last_id)
        if resume is None:
            raise LookupError(f"unknown last_id {last_id!r}: not in the alert log (expired or never seen)")
    sub = ctx.hub.subscribe(flt)
    try:
        missed = await backlog(ctx.alert_log, sub, resume, ctx.settings.api_stream_backlog_max) if resume else []
    except Exception:
        sub.close()
        raise
    return sub, missed


async def _pump(
    ctx: ApiContext,
    sub: Subscription,
    missed: list[LogEntry],
    send: Callable[[bytes, str | None], Awaitable[None]],
    transport: str,
) -> str:
    """Send the backlog then live alerts and heartbeats until cut; returns the reason the stream ended."""
    s = ctx.settings

    async def guarded(data: bytes, seq: str | None) -> None:
        await sub.guarded(asyncio.ensure_future(send(data, seq)), s.api_stream_send_timeout_s)

    for old in missed:
        await guarded(alert_message(old), old.seq)
        sub.last_seq = old.seq
        STREAM_SENT.labels(transport=transport).inc()
    while True:
        if sub.lagging and sub.queue.empty():
            for old in await sub.catch_up(ctx.alert_log, ctx.hub.page, s.api_stream_max_lag_s):
                await guarded(alert_message(old), old.seq)
                sub.last_seq = old.seq
                STREAM_SENT.labels(transport=transport).inc()
            continue
        entry = await sub.next(s.api_stream_heartbeat_s)
        if entry is None:
            await guarded(heartbeat_message(sub.last_seq or ctx.hub.position), None)
            continue
        await guarded(alert_message(entry), entry.seq)
        sub.last_seq = entry.seq
        STREAM_SENT.labels(transport=transport).inc()


@router.websocket("/alerts/stream")
async def alerts_stream(
    websocket: WebSocket,
    venue: Annotated[list[Name] | None, Query()] = None,
    symbol: Annotated[list[Name] | None, Query()] = None,
    type: Annotated[list[AnomalyType] | None, Query()] = None,
    min_severity: Severity | None = None,
    last_id: Annotated[str | None, Query(max_length=64)] = None,
) -> None:
    """WebSocket alert stream (scope `subscribe`).

    Auth: an X-API-Key / Authorization header; or, from a browser (which cannot set headers on a WebSocket), the
    subprotocol `rmad-key.<key>` (echoed back on accept, kept out of URLs and access logs); or `?api_key=`.
    """
    ctx = api_context(websocket.app)
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    proto = next((p for p in offered if p.startswith(KEY_SUBPROTOCOL)), None)
    await websocket.accept(subprotocol=proto)
    key = presented_key(dict(websocket.headers), dict(websocket.query_params))
    if not key and proto is not None:
        key = proto[len(KEY_SUBPROTOCOL) :]
    try:
        principal = await authenticate(ctx.keys, ctx.limiter, key, Scope.SUBSCRIBE)
    except AuthError as err:
        code = WS_CLOSE_UNAUTHORIZED if err.status_code == 401 else WS_CLOSE_FORBIDDEN
        await _close_with(websocket, code, err.detail)
        return
    except HTTPException as err:  # 429
        await _close_with(websocket, 4429, str(err.detail))
        return
    if not ctx.hub.running:
        await _close_with(websocket, WS_CLOSE_UNAVAILABLE, "alert hub not running")
        return
    try:
        sub, missed = await _open(ctx, _filter(venue, symbol, type, min_severity), last_id)
    except LookupError as err:
        await _close_with(websocket, WS_CLOSE_NOT_FOUND, str(err))
        return
    SUBSCRIBERS.labels(transport="ws").inc()

    async def send(data: bytes, _seq: str | None) -> None:
        await websocket.send_text(data.decode())

    async def watch_client() -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                await websocket.receive_text()  # clients may send anything (e.g. pings); a close ends the stream

    pump = asyncio.create_task(_pump(ctx, sub, missed, send, "ws"))
    watcher = asyncio.create_task(watch_client())
    revoked = asyncio.create_task(key_revoked(ctx, principal))
    try:
        done, _ = await asyncio.wait({pump, watcher, revoked}, return_when=asyncio.FIRST_COMPLETED)
        if revoked in done:
            STREAM_CUT.labels(transport="ws", reason="revoked").inc()
            await _close_with(websocket, WS_CLOSE_UNAUTHORIZED, revoked.result())
        elif pump in done:
            exc = pump.exception()
            if isinstance(exc, SubscriberCut):
                STREAM_CUT.labels(transport="ws", reason="slow" if "slow" in exc.reason else "server").inc()
                code = WS_CLOSE_RESTART if exc.reason.startswith(SHUTDOWN_REASON) else WS_CLOSE_SLOW
                await _close_with(websocket, code, exc.reason)
    finally:
        for t in (pump, watcher, revoked):
            t.cancel()
        for t in (pump, watcher, revoked):
            with contextlib.suppress(BaseException):
                await t
        sub.close()
        SUBSCRIBERS.labels(transport="ws").dec()


async def key_revoked(ctx: ApiContext, principal: Principal) -> str:
    """Return (with the reason) once the stream's key is revoked; checked every RMAD_API_STREAM_REVOKE_CHECK_S
    against the store, so a revocation from any process (`rmad keys revoke`) ends the stream within that time."""
    while True:
        await asyncio.sleep(ctx.settings.api_stream_revoke_check_s)
        try:
            gone = await ctx.keys.revoked(principal.key_id)
        except Exception:  # the store is down: the stream stays; the next check decides
            continue
        if gone:
            return f"API key {principal.key_id} was revoked"


async def _close_with(websocket: WebSocket, code: int, reason: str) -> None:
    """Tell the subscriber why (an error message, then the close frame's reason) and close; never block long."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.send_text(error_message(reason).decode()), 1.0)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code=code, reason=reason[:120]), 1.0)


@router.get(
    "/alerts/sse",
    operation_id="alerts_sse",
    response_class=StreamingResponse,
    responses={
        **AUTH_RESPONSES,
        200: {"content": {"text/event-stream": {}}, "description": "an endless event stream"},
        404: {"model": Problem, "description": "unknown last_id"},
        503: {"model": Problem, "description": "alert hub not running"},
    },
)
async def alerts_sse(
    request: Request,
    principal: Annotated[Principal, Depends(require(Scope.SUBSCRIBE))],
    venue: Annotated[list[Name] | None, Query()] = None,
    symbol: Annotated[list[Name] | None, Query()] = None,
    type: Annotated[list[AnomalyType] | None, Query()] = None,
    min_severity: Severity | None = None,
    last_id: Annotated[str | None, Query(max_length=64, description="resume after this alert id or seq")] = None,
) -> StreamingResponse:
    """Server-Sent Events alert stream (scope `subscribe`; EventSource may pass the key as `api_key`)."""
    ctx = api_context(request.app)
    if not ctx.hub.running:
        raise HTTPException(503, detail="alert hub not running")
    resume = request.headers.get("last-event-id") or last_id
    if resume is not None and len(resume) > 64:
        raise HTTPException(422, detail="last_id: at most 64 characters")
    try:
        sub, missed = await _open(ctx, _filter(venue, symbol, type, min_severity), resume)
    except LookupError as err:
        raise HTTPException(404, detail=str(err)) from None

    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)

    async def send(data: bytes, seq: str | None) -> None:
        kind = b"alert" if seq else b"heartbeat"
        head = b"id: " + seq.encode() + b"\n" if seq else b""
        await queue.put(head + b"event: " + kind + b"\ndata: " + data + b"\n\n")

    async def events() -> AsyncIterator[bytes]:
        SUBSCRIBERS.labels(transport="sse").inc()
        pump = asyncio.create_task(_pump(ctx, sub, missed, send, "sse"))
        revoked = asyncio.create_task(key_revoked(ctx, principal))
        try:
            yield b"retry: 2000\n\n"
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, pump, revoked}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    yield get.result()
                    continue
                get.cancel()
                if revoked in done:
                    STREAM_CUT.labels(transport="sse", reason="revoked").inc()
                    yield b"event: error\ndata: " + error_message(revoked.result()) + b"\n\n"
                    return
                exc = pump.exception()
                reason = exc.reason if isinstance(exc, SubscriberCut) else f"stream ended: {exc!r}"
                STREAM_CUT.labels(transport="sse", reason="slow" if "slow" in reason else "server").inc()
                yield b"event: error\ndata: " + error_message(reason) + b"\n\n"
                return
        finally:
            for t in (pump, revoked):
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
            sub.close()
            SUBSCRIBERS.labels(transport="sse").dec()

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
