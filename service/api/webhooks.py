"""Signed webhooks: subscriptions with filters, a dispatcher that follows the alert log, retries with backoff.

Signature: `X-RMAD-Signature: t=<unix ms>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`. The timestamp is inside
the MAC, so a captured delivery cannot be replayed later with a fresh time; receivers check the MAC and that t is
recent. The secret is the subscription's own (given at registration) or derived from RMAD_SECRET_KEY and the
subscription id (returned once at registration; never stored). The body is the alert's stored JSON, byte for byte,
so every retry and every redelivery carries the same alert id.
Why a lease: several API processes may run; only the holder of `webhooks:lease` dispatches, so each alert is posted
once per subscription (at-least-once: a crash between post and cursor save may post again, with the same id).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from service.api.alertlog import AlertFilter, AlertLog, LogEntry
from service.api.metrics import WEBHOOK_DELIVERIES, WEBHOOK_LATENCY
from service.api.retry import RetryState
from service.runtime import Health, cancel_and_wait
from service.settings import Settings
from service.state import StateStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-RMAD-Signature"
SUBS_KEY = "webhooks"


def cursor_key(sub_id: str) -> str:
    """Where a subscription's delivery position in the alert log is kept."""
    return f"webhook:{sub_id}:cursor"


LEASE_KEY = "webhooks:lease"


def sign(secret: str, body: bytes, timestamp_ms: int | None = None) -> str:
    """The signature header value for `body` at `timestamp_ms` (now when None)."""
    t = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300.0, now_ms: int | None = None) -> bool:
    """What a receiver does: the MAC matches and the timestamp is within `tolerance_s` of now."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
        given = parts["v1"]
    except (ValueError, KeyError):
        return False
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now - t) > tolerance_s * 1000:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    url: str
    filter: AlertFilter
    created_ms: int
    owner: str
    own_secret: str | None = None
    description: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "url": self.url,
                "filter": self.filter.to_dict(),
                "created_ms": self.created_ms,
                "owner": self.owner,
                "own_secret": self.own_secret,
                "description": self.description,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Subscription:
        d = orjson.loads(raw)
        return cls(
            d["id"],
            d["url"],
            AlertFilter.from_dict(d.get("filter") or {}),
            int(d["created_ms"]),
            d.get("owner", ""),
            d.get("own_secret"),
            d.get("description", ""),
        )


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    alert_id: str
    seq: str
    attempt: int
    outcome: str  # delivered | retry | failed
    http_status: int | None
    error: str
    time_ms: int


class WebhookStore:
    """Subscriptions and their delivery records in the state store."""

    def __init__(self, state: StateStore, settings: Settings) -> None:
        self.state = state
        self._master = settings.secret_key.get_secret_value().encode()

    def derived_secret(self, sub_id: str) -> str:
        return hmac.new(self._master, f"webhook:{sub_id}".encode(), hashlib.sha256).hexdigest()

    def secret_for(self, sub: Subscription) -> str:
        return sub.own_secret or self.derived_secret(sub.id)

    async def create(
        self,
        url: str,
        flt: AlertFilter,
        owner: str,
        secret: str | None,
        description: str = "",
        *,
        start_seq: str | None = None,
    ) -> tuple[Subscription, str]:
        """Register; delivery starts after `start_seq` (the log's end at registration, so nothing is sent twice)."""
        sub = Subscription("wh_" + secrets.token_hex(8), url, flt, int(time.time() * 1000), owner, secret, description)
        if start_seq is not None:
            await self.state.set(cursor_key(sub.id), start_seq)
        await self.state.hset(SUBS_KEY, {sub.id: sub.to_json()})
        return sub, self.secret_for(sub)

    async def get(self, sub_id: str) -> Subscription | None:
        raw = await self.state.hget(SUBS_KEY, sub_id)
        return Subscription.from_json(raw) if raw else None

    async def all(self) -> list[Subscription]:
        return [Subscription.from_json(v) for _, v in sorted((await self.state.hgetall(SUBS_KEY)).items())]

    async def delete(self, sub_id: str) -> bool:
        gone = bool(await self.state.hdel(SUBS_KEY, sub_id))
        await self.state.delete(cursor_key(sub_id))
        return gone

    async def record(self, sub_id: str, rec: DeliveryRecord) -> None:
        fields: dict[str, str | int] = {
            "alert_id": rec.alert_id,
            "seq": rec.seq,
            "attempt": rec.attempt,
            "outcome": rec.outcome,
            "http_status": rec.http_status or 0,
            "error": rec.error[:500],
            "time_ms": rec.time_ms,
        }
        await self.state.xadd(f"webhook:{sub_id}:deliveries", fields, maxlen=1000)
        await self.state.hincrby(f"webhook:{sub_id}:status", rec.outcome)
        await self.state.hset(f"webhook:{sub_id}:status", {"last_outcome": rec.outcome, "last_time_ms": rec.time_ms})

    async def deliveries(self, sub_id: str, limit: int) -> list[DeliveryRecord]:
        rows = await self.state.xrevrange(f"webhook:{sub_id}:deliveries", count=limit)
        out = []
        for _, f in rows:
            status = int(f.get("http_status", b"0"))
            out.append(
                DeliveryRecord(
                    f["alert_id"].decode(),
                    f["seq"].decode(),
                    int(f["attempt"]),
                    f["outcome"].decode(),
                    status or None,
                    f.get("error", b"").decode(),
                    int(f["time_ms"]),
                )
            )
        return out

    async def status(self, sub_id: str) -> dict[str, Any]:
        raw = await self.state.hgetall(f"webhook:{sub_id}:status")
        return {
            "delivered": int(raw.get("delivered", b"0")),
            "retries": int(raw.get("retry", b"0")),
            "failed": int(raw.get("failed", b"0")),
            "last_outcome": raw["last_outcome"].decode() if "last_outcome" in raw else None,
            "last_time_ms": int(raw["last_time_ms"]) if "last_time_ms" in raw else None,
        }


class WebhookDispatcher:
    """A component: one worker per subscription follows the alert log from that subscription's persisted cursor
    and posts its matching alerts, in order, retrying with backoff."""

    name = "api-webhooks"

    def __init__(self, store: WebhookStore, log_: AlertLog, state: StateStore, settings: Settings) -> None:
        self.store = store
        self.log = log_
        self.state = state
        self.settings = settings
        self.poll_s = max(settings.api_stream_poll_s, 0.05)
        self._retry = RetryState("webhook dispatcher", log, base_s=self.poll_s, max_s=5.0)
        self.owner = secrets.token_hex(8)
        self._task: asyncio.Task[None] | None = None
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._redeliveries: set[asyncio.Task[bool]] = set()
        self._client: httpx.AsyncClient | None = None
        self._leader = False
        self._error: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.settings.api_webhook_timeout_s, follow_redirects=False)
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._workers.values(), *self._redeliveries) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            await cancel_and_wait(t)
        self._task = None
        self._workers.clear()
        if self._leader:
            with contextlib.suppress(Exception):
                await self.state.compare_and_set(LEASE_KEY, self.owner.encode(), None)
        if self._client is not None:
            await self._client.aclose()

    def health(self) -> Health:
        if self._task is None or self._task.done():
            return Health(False, "not running")
        if self._error:
            return Health(False, self._error)
        role = "dispatching" if self._leader else "standby (another process holds the lease)"
        return Health(True, f"{role}, {len(self._workers)} subscriptions active")

    async def _hold_lease(self) -> bool:
        ttl = 10.0
        mine = self.owner.encode()
        if await self.state.compare_and_set(LEASE_KEY, mine, mine, ttl_s=ttl):
            return True
        return await self.state.set(LEASE_KEY, mine, ttl_s=ttl, nx=True)

    async def _run(self) -> None:
        last_lease = 0.0
        while True:
            try:
                if time.monotonic() - last_lease > 3.0 or not self._leader:
                    self._leader = await self._hold_lease()
                    last_lease = time.monotonic()
                n = await self._sync_workers()
                self._error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error = f"webhook dispatcher: {exc}"
                await asyncio.sleep(self._retry.failed(exc))
                continue
            self._retry.ok()
            if n == 0:
                await asyncio.sleep(self.poll_s)

    async def _sync_workers(self) -> int:
        """One worker per subscription while this process holds the lease; none otherwise."""
        if not self._leader:
            for sub_id in list(self._workers):
                await cancel_and_wait(self._workers.pop(sub_id))
            return 0
        subs = {s.id for s in await self.store.all()}
        for sub_id in list(self._workers):
            task = self._workers[sub_id]
            if sub_id not in subs or task.done():
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.warning("webhook %s worker stopped: %r; restarting", sub_id, task.exception())
                await cancel_and_wait(self._workers.pop(sub_id))
        for sub_id in subs - set(self._workers):
            self._workers[sub_id] = asyncio.create_task(self._worker(sub_id), name=f"webhook-{sub_id}")
        return 0

    async def _worker(self, sub_id: str) -> None:
        """Deliver this subscription's alerts in log order from its own persisted cursor (at-least-once).

        The cursor moves past an alert only once its delivery finished (delivered, or failed after the last
        attempt), so a restart or a lease hand-over re-sends at most the one in flight, with the same alert id.
        """
        key = cursor_key(sub_id)
        retry = RetryState(f"webhook {sub_id} worker", log, base_s=self.poll_s, max_s=5.0)
        while True:
            try:
                sub = await self.store.get(sub_id)
                if sub is None:
                    return
                raw = await self.state.get(key)
                cursor = raw.decode() if raw is not None else (await self.log.last_seq() or "0-0")
                if raw is None:
                    await self.state.set(key, cursor)
                entries = await self.log.after(cursor, 100)
                retry.ok()
                if not entries:
                    await asyncio.sleep(self.poll_s)
                    continue
                for entry in entries:
                    if sub.filter.matches(entry.alert):
                        await self.deliver(sub, entry)
                    await self.state.set(key, entry.seq)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: back off, log once per change
                await asyncio.sleep(retry.failed(exc))

    def redeliver(self, sub: Subscription, entry: LogEntry) -> None:
        """Send one alert again now, outside the subscription's order (same body and alert id)."""
        task = asyncio.create_task(self.deliver(sub, entry), name=f"webhook-redeliver-{sub.id}")
        self._redeliveries.add(task)
        task.add_done_callback(self._redeliveries.discard)

    async def deliver(self, sub: Subscription, entry: LogEntry) -> bool:
        """POST one alert until a 2xx or `api_webhook_max_attempts`; every attempt is recorded."""
        assert self._client is not None
        s = self.settings
        secret = self.store.secret_for(sub)
        alert_id = str(entry.alert.get("id", ""))
        delay = s.api_webhook_backoff_s
        for attempt in range(1, s.api_webhook_max_attempts + 1):
            headers = {
                "content-type": "application/json",
                SIGNATURE_HEADER: sign(secret, entry.raw),
                "X-RMAD-Alert-Id": alert_id,
                "X-RMAD-Delivery-Attempt": str(attempt),
                "X-RMAD-Subscription": sub.id,
            }
            status: int | None = None
            error = ""
            started = time.perf_counter()
            try:
                resp = await self._client.post(sub.url, content=entry.raw, headers=headers)
                status = resp.status_code
                ok = 200 <= status < 300
                if not ok:
                    error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                ok = False
                error = f"{type(exc).__name__}: {exc}"
            WEBHOOK_LATENCY.observe(time.perf_counter() - started)
            last = attempt == s.api_webhook_max_attempts
            outcome = "delivered" if ok else ("failed" if last else "retry")
            WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()
            await self.store.record(
                sub.id, DeliveryRecord(alert_id, entry.seq, attempt, outcome, status, error, int(time.time() * 1000))
            )
            if ok:
                return True
            if last:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, s.api_webhook_backoff_max_s)
        return False
