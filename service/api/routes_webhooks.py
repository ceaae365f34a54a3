"""Webhook subscriptions: register a URL with filters, list, inspect deliveries, redeliver, delete (scope subscribe)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from service.api.access import require
from service.api.alertlog import AlertFilter
from service.api.auth import Principal, Scope
from service.api.payloads import Accepted, DeliveryOut, Problem, RedeliverIn, WebhookCreated, WebhookIn, WebhookOut
from service.api.routes_alerts import AUTH_RESPONSES, Ctx
from service.api.webhooks import SIGNATURE_HEADER, Subscription

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
Subscriber = Annotated[Principal, Depends(require(Scope.SUBSCRIBE))]
HookId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": Problem, "description": "no such subscription"}}


def _out(sub: Subscription, status: dict[str, int | str | None] | None = None) -> WebhookOut:
    f = sub.filter
    return WebhookOut(
        id=sub.id,
        url=sub.url,
        venues=sorted(f.venues),
        symbols=sorted(f.symbols),
        types=sorted(f.types),
        min_severity=f.min_severity,
        created_ms=sub.created_ms,
        description=sub.description,
        status=status or {},
    )


async def _owned(ctx: Ctx, principal: Principal, sub_id: str) -> Subscription:
    sub = await ctx.webhooks.get(sub_id)
    if sub is None or (sub.owner != principal.key_id and not principal.allows(Scope.ADMIN)):
        raise HTTPException(404, detail=f"no webhook subscription {sub_id}")
    return sub


@router.post(
    "", operation_id="create_webhook", response_model=WebhookCreated, status_code=201, responses=AUTH_RESPONSES
)
async def create_webhook(ctx: Ctx, principal: Subscriber, body: WebhookIn) -> WebhookCreated:
    """Register a URL; matching alerts are POSTed to it, signed (HMAC-SHA256 over timestamp and body)."""
    flt = AlertFilter(
        venues=frozenset(body.venues),
        symbols=frozenset(body.symbols),
        types=frozenset(t.value for t in body.types),
        min_severity=body.min_severity,
    )
    start = await ctx.alert_log.last_seq() or "0-0"  # deliver what is logged from now on
    sub, secret = await ctx.webhooks.create(
        str(body.url), flt, principal.key_id, body.secret, body.description, start_seq=start
    )
    out = _out(sub)
    return WebhookCreated(**out.model_dump(), secret=secret, signature_header=SIGNATURE_HEADER)


@router.get("", operation_id="list_webhooks", response_model=list[WebhookOut], responses=AUTH_RESPONSES)
async def list_webhooks(ctx: Ctx, principal: Subscriber) -> list[WebhookOut]:
    """Your subscriptions (an admin key sees all), with delivery counters."""
    subs = [s for s in await ctx.webhooks.all() if s.owner == principal.key_id or principal.allows(Scope.ADMIN)]
    return [_out(s, await ctx.webhooks.status(s.id)) for s in subs]


@router.get(
    "/{sub_id}", operation_id="get_webhook", response_model=WebhookOut, responses={**AUTH_RESPONSES, **NOT_FOUND}
)
async def get_webhook(ctx: Ctx, principal: Subscriber, sub_id: HookId) -> WebhookOut:
    sub = await _owned(ctx, principal, sub_id)
    return _out(sub, await ctx.webhooks.status(sub.id))


@router.delete("/{sub_id}", operation_id="delete_webhook", status_code=204, responses={**AUTH_RESPONSES, **NOT_FOUND})
async def delete_webhook(ctx: Ctx, principal: Subscriber, sub_id: HookId) -> Response:
    sub = await _owned(ctx, principal, sub_id)
    await ctx.webhooks.delete(sub.id)
    return Response(status_code=204)


@router.get(
    "/{sub_id}/deliveries",
    operation_id="list_webhook_deliveries",
    response_model=list[DeliveryOut],
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
async def deliveries(
    ctx: Ctx, principal: Subscriber, sub_id: HookId, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[DeliveryOut]:
    """Delivery attempts, newest first: outcome (delivered, retry, failed), HTTP status, error."""
    sub = await _owned(ctx, principal, sub_id)
    return [DeliveryOut(**dataclasses.asdict(r)) for r in await ctx.webhooks.deliveries(sub.id, limit)]


@router.post(
    "/{sub_id}/redeliver",
    operation_id="redeliver_webhook",
    response_model=Accepted,
    status_code=202,
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
async def redeliver(ctx: Ctx, principal: Subscriber, sub_id: HookId, body: RedeliverIn) -> Accepted:
    """Send one alert again (same body, same alert id, fresh signature timestamp)."""
    sub = await _owned(ctx, principal, sub_id)
    entry = await ctx.alert_log.get(body.alert_id)
    if entry is None:
        raise HTTPException(404, detail=f"no alert {body.alert_id}")
    if not ctx.dispatcher.running:
        raise HTTPException(503, detail="webhook dispatcher not running in this process")
    ctx.dispatcher.redeliver(sub, entry)
    return Accepted(accepted=True, detail="delivering")
