"""API keys with scopes, stored hashed in the state store, and per-key token-bucket rate limits.

Why keys look like `rmad_<id>_<secret>`: the id lets the server find the one record to check without scanning, and
only an HMAC of the whole key (peppered with RMAD_SECRET_KEY) is stored, so a copy of Redis yields no usable key.
Why a Lua token bucket: several API processes share one limit per key; the refill and the take happen in one atomic
step in Redis (the Python twin does the same under the in-process store's lock).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from fastapi import HTTPException, status
from fastapi.security import APIKeyHeader

from service.api.metrics import RATE_LIMITED
from service.settings import Settings
from service.state import StateStore
from service.state.scripts.ratelimit import TOKEN_BUCKETS, bucket_answers, bucket_takes


class Scope(StrEnum):
    SCORE = "score"
    SUBSCRIBE = "subscribe"
    FEEDBACK = "feedback"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)
KEY_PREFIX = "rmad"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, its name and scopes, and its own rate limit (None: the default)."""

    key_id: str
    name: str
    scopes: frozenset[Scope]
    rate_per_s: float | None = None
    burst: int | None = None

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A stored key as listed by `rmad keys list` (never the secret)."""

    key_id: str
    name: str
    scopes: list[str]
    created_ms: int
    revoked_ms: int | None
    rate_per_s: float | None
    burst: int | None


class AuthError(Exception):
    """A key was missing (401), wrong (401) or lacks a scope (403)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def parse_scopes(raw: Iterable[str]) -> frozenset[Scope]:
    out = set()
    for s in raw:
        s = s.strip()
        if not s:
            continue
        try:
            out.add(Scope(s))
        except ValueError:
            raise ValueError(f"unknown scope {s!r}; expected one of {', '.join(sorted(ALL_SCOPES))}") from None
    return frozenset(out)


class KeyStore:
    """Create, verify, revoke and list keys. Verified keys are cached for `cache_s` (the revocation lag)."""

    def __init__(self, state: StateStore, settings: Settings) -> None:
        self.state = state
        self.settings = settings
        self._pepper = settings.secret_key.get_secret_value().encode()
        self._cache: dict[str, tuple[float, Principal | None, str]] = {}
        self._clock = time.monotonic  # the cache's clock (tests move it instead of sleeping)

    def _hash(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _record(key_id: str) -> str:
        return f"apikey:{key_id}"

    async def create(
        self, name: str, scopes: Iterable[Scope], rate_per_s: float | None = None, burst: int | None = None
    ) -> tuple[str, KeyInfo]:
        """Make a new key; the plain key is returned once and never stored."""
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(24)}"
        now = int(time.time() * 1000)
        scope_list = sorted(s.value for s in scopes)
        record: dict[str, str | int | float] = {
            "hash": self._hash(key),
            "name": name,
            "scopes": ",".join(scope_list),
            "created_ms": now,
        }
        if rate_per_s is not None:
            record["rate_per_s"] = float(rate_per_s)
        if burst is not None:
            record["burst"] = int(burst)
        await self.state.hset(self._record(key_id), record)
        await self.state.hset("apikeys", {key_id: name})
        return key, KeyInfo(key_id, name, scope_list, now, None, rate_per_s, burst)

    async def revoke(self, key_id: str) -> bool:
        rec = await self.state.hgetall(self._record(key_id))
        if not rec or "revoked_ms" in rec:
            return False
        await self.state.hset(self._record(key_id), {"revoked_ms": int(time.time() * 1000)})
        self._cache.pop(key_id, None)
        return True

    async def revoked(self, key_id: str) -> bool:
        """Whether the key is revoked (or gone) now, asked of the store (no cache: open streams poll this)."""
        if key_id == "dev":
            return self._dev_principal(self.settings.api_dev_key.get_secret_value()) is None
        rec = await self.state.hgetall(self._record(key_id))
        return not rec or "revoked_ms" in rec

    async def list(self) -> list[KeyInfo]:
        out = []
        for key_id in sorted((await self.state.hgetall("apikeys")).keys()):
            rec = await self.state.hgetall(self._record(key_id))
            if rec:
                out.append(_info(key_id, rec))
        return out

    def _dev_principal(self, key: str) -> Principal | None:
        dev = self.settings.api_dev_key.get_secret_value()
        if self.settings.env == "development" and dev and hmac.compare_digest(key.encode(), dev.encode()):
            return Principal("dev", "development key", ALL_SCOPES)
        return None

    async def verify(self, key: str) -> Principal | None:
        """The key's principal, or None when it is unknown, malformed or revoked."""
        dev = self._dev_principal(key)
        if dev is not None:
            return dev
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
            return None
        key_id = parts[1]
        digest = self._hash(key)
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now and hmac.compare_digest(cached[2], digest):
            return cached[1]
        rec = await self.state.hgetall(self._record(key_id))
        stored = rec.get("hash", b"").decode()
        if not rec or not hmac.compare_digest(stored, digest) or "revoked_ms" in rec:
            return None
        info = _info(key_id, rec)
        principal = Principal(key_id, info.name, parse_scopes(info.scopes), info.rate_per_s, info.burst)
        if self.settings.api_key_cache_s > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (now + self.settings.api_key_cache_s, principal, digest)
        return principal


def _info(key_id: str, rec: dict[str, bytes]) -> KeyInfo:
    scopes = [s for s in rec.get("scopes", b"").decode().split(",") if s]
    return KeyInfo(
        key_id=key_id,
        name=rec.get("name", b"").decode(),
        scopes=scopes,
        created_ms=int(rec.get("created_ms", b"0")),
        revoked_ms=int(rec["revoked_ms"]) if "revoked_ms" in rec else None,
        rate_per_s=float(rec["rate_per_s"]) if "rate_per_s" in rec else None,
        burst=int(rec["burst"]) if "burst" in rec else None,
    )


# --- token bucket -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_s: int
    remaining: int


@dataclass(slots=True)
class _Take:
    bucket: str
    rate: float
    burst: int
    cost: int
    future: asyncio.Future[RateDecision]


class RateLimiter:
    """Per-key token bucket in the state store (shared by every API process), takes coalesced into one round trip.

    Why coalesced: one script call per request made the Redis round trip (and redis-py's per-command work) a large
    share of a scored request's CPU. Takes that arrive while a call is in flight wait for the next one, which carries
    all of them (TOKEN_BUCKETS applies them in arrival order, atomically, at one `now`), so a busy process makes one
    call per round trip instead of one per request, and an idle one answers a lone take at once. The bucket stays in
    the store: every API process still shares one limit per key.
    """

    MAX_TAKES = 512  # per script call

    def __init__(self, state: StateStore, settings: Settings) -> None:
        self.state = state
        self.settings = settings
        self.calls = 0  # script calls made (tests check that concurrent takes share them)
        self._pending: list[_Take] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def take(self, principal: Principal, cost: int = 1) -> RateDecision:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests run several): nothing of the old one carries over
            self._loop, self._pending, self._flusher = loop, [], None
        rate = principal.rate_per_s or self.settings.api_rate_per_s
        burst = principal.burst or self.settings.api_rate_burst
        fut: asyncio.Future[RateDecision] = loop.create_future()
        self._pending.append(_Take(f"ratelimit:{principal.key_id}", rate, burst, cost, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        batch: list[_Take] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.MAX_TAKES], self._pending[self.MAX_TAKES :]
                index: dict[str, int] = {}
                takes = bucket_takes(
                    (index.setdefault(t.bucket, len(index) + 1), t.rate, t.burst, t.cost) for t in batch
                )
                self.calls += 1
                try:
                    reply = await self.state.run_script(TOKEN_BUCKETS, list(index), [int(time.time() * 1000), takes])
                    answers = bucket_answers(reply)
                except Exception as exc:
                    for t in batch:
                        if not t.future.done():
                            t.future.set_exception(exc)
                    continue
                for t, (allowed, wait_ms, left) in zip(batch, answers, strict=True):
                    if not t.future.done():
                        t.future.set_result(RateDecision(bool(allowed), max(1, math.ceil(wait_ms / 1000)), left))
        except BaseException:  # cancelled (shutdown): nobody may wait for an answer that will not come
            for t in [*batch, *self._pending]:
                if not t.future.done():
                    t.future.cancel()
            self._pending = []
            raise


# --- FastAPI dependencies -----------------------------------------------------------------------------------------

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key (`rmad keys create`); also `Authorization: Bearer`."
)


def presented_key(request_headers: dict[str, str] | object, query: dict[str, str] | object) -> str | None:
    """The key from X-API-Key, `Authorization: Bearer`, or (browsers' WebSocket/EventSource) `?api_key=`."""
    headers = request_headers if isinstance(request_headers, dict) else dict(request_headers)  # type: ignore[call-overload]
    key = headers.get("x-api-key")
    if not key:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    if not key:
        params = query if isinstance(query, dict) else dict(query)  # type: ignore[call-overload]
        key = params.get("api_key")
    return key or None


async def authenticate(keys: KeyStore, limiter: RateLimiter, key: str | None, scope: Scope) -> Principal:
    """Check the key, its scope and its rate limit; raise AuthError (401/403) or HTTPException (429)."""
    if not key:
        raise AuthError(status.HTTP_401_UNAUTHORIZED, "missing API key: send X-API-Key or Authorization: Bearer")
    principal = await keys.verify(key)
    if principal is None:
        raise AuthError(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key")
    if not principal.allows(scope):
        raise AuthError(status.HTTP_403_FORBIDDEN, f"this key lacks the {scope.value!r} scope")
    decision = await limiter.take(principal)
    if not decision.allowed:
        RATE_LIMITED.inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"rate limit of key {principal.key_id} exceeded; retry after {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
        )
    return principal
