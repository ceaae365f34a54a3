"""Redis state store (redis-py asyncio). Scripts are loaded once and run by SHA (EVALSHA, EVAL on a miss)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.state.base import FieldValue, Script, ScriptCall, StateError, StateStore, StreamEntry, to_bytes

# Atomic compare-and-set: compare the current value (or its absence) and replace or delete.
_CAS = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if cur then return 0 end
else
  if (not cur) or cur ~= ARGV[2] then return 0 end
end
if ARGV[3] == '0' then
  redis.call('DEL', KEYS[1])
elseif ARGV[5] ~= '' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[4])
end
return 1
"""


class _CancellableConnection(aioredis.Connection):
    """A redis-py connection whose send timeout is `asyncio.timeout`, not `asyncio.wait_for`.

    Why: on Python 3.11, `wait_for` swallows a cancellation that arrives while its (instant) socket write completes
    (CPython gh-86296), so a task looping over Redis commands could absorb `task.cancel()` and never stop; a
    graceful shutdown would then hang on it. Same timeout, same errors, cancellation always delivered.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not timeout:
            await super().send_packed_command(command, check_health)
            return
        self.socket_timeout = None  # the parent then writes without wait_for; the timeout is ours
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


MAX_CONNECTIONS = 128  # per process


def _connection_class(url: str) -> dict[str, Any]:
    """Plain TCP URLs get the cancellable connection; TLS and unix-socket URLs keep redis-py's own classes."""
    return {"connection_class": _CancellableConnection} if url.startswith("redis://") else {}


def _entries(raw: list[Any]) -> list[StreamEntry]:
    out: list[StreamEntry] = []
    for entry_id, fields in raw:
        eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        out.append((eid, {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in fields.items()}))
    return out


class RedisState(StateStore):
    kind = "redis"

    def __init__(self, url: str, key_prefix: str = "", socket_timeout_s: float = 5.0) -> None:
        self.url = url
        self.prefix = key_prefix
        # A blocking pool: past MAX_CONNECTIONS a command waits (up to the socket timeout) for a free connection.
        # redis-py's default pool refuses at once ("Too many connections", 100), which turned a burst of 200
        # stream subscribers, each checking its API key, into HTTP 500s (tests/faults: the API burst case).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=socket_timeout_s,
            decode_responses=False,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=min(socket_timeout_s, 2.0),
            health_check_interval=30,
            retry_on_timeout=False,
            **_connection_class(url),
        )
        self._r = aioredis.Redis.from_pool(pool)
        self._shas: dict[str, str] = {}

    @property
    def client(self) -> aioredis.Redis:
        """The raw client, for components needing commands outside the contract (pipelines, blocking reads)."""
        return self._r

    def k(self, key: str) -> str:
        return self.prefix + key

    async def ping(self, timeout_s: float = 2.0) -> None:
        try:
            await asyncio.wait_for(self._r.ping(), timeout_s)
        except (TimeoutError, RedisError, OSError) as exc:
            raise StateError(f"Redis at {_safe_url(self.url)} not answering: {exc}") from exc

    async def close(self) -> None:
        await self._r.aclose()

    async def _do(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise StateError(f"redis: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        return await self._do(self._r.get(self.k(key)))  # type: ignore[no-any-return]

    async def set(self, key: str, value: FieldValue, ttl_s: float | None = None, *, nx: bool = False) -> bool:
        px = int(ttl_s * 1000) if ttl_s is not None else None
        res = await self._do(self._r.set(self.k(key), to_bytes(value), px=px, nx=nx))
        return bool(res)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return int(await self._do(self._r.delete(*[self.k(k) for k in keys])))

    async def compare_and_set(
        self, key: str, expected: bytes | None, new: FieldValue | None, ttl_s: float | None = None
    ) -> bool:
        args = [
            "0" if expected is None else "1",
            expected or b"",
            "0" if new is None else "1",
            b"" if new is None else to_bytes(new),
            "" if ttl_s is None else str(int(ttl_s * 1000)),
        ]
        res = await self._eval("__cas__", _CAS, [self.k(key)], args)
        return bool(res)

    async def incr(self, key: str, amount: int = 1) -> int:
        return int(await self._do(self._r.incrby(self.k(key), amount)))

    async def expire(self, key: str, ttl_s: float) -> bool:
        return bool(await self._do(self._r.pexpire(self.k(key), int(ttl_s * 1000))))

    async def ttl(self, key: str) -> float | None:
        ms = int(await self._do(self._r.pttl(self.k(key))))
        return None if ms < 0 else ms / 1000

    async def hset(self, key: str, mapping: Mapping[str, FieldValue]) -> int:
        if not mapping:
            return 0
        return int(await self._do(self._r.hset(self.k(key), mapping={f: to_bytes(v) for f, v in mapping.items()})))

    async def hget(self, key: str, field: str) -> bytes | None:
        return await self._do(self._r.hget(self.k(key), field))  # type: ignore[no-any-return]

    async def hgetall(self, key: str) -> dict[str, bytes]:
        raw = await self._do(self._r.hgetall(self.k(key)))
        return {k.decode(): v for k, v in raw.items()}

    async def hincrby(self, key: str, field: str, amount: int = 1) -> int:
        return int(await self._do(self._r.hincrby(self.k(key), field, amount)))

    async def hdel(self, key: str, *fields: str) -> int:
        if not fields:
            return 0
        return int(await self._do(self._r.hdel(self.k(key), *fields)))

    async def xadd(self, stream: str, fields: Mapping[str, FieldValue], maxlen: int | None = None) -> str:
        res = await self._do(
            self._r.xadd(self.k(stream), {f: to_bytes(v) for f, v in fields.items()}, maxlen=maxlen, approximate=False)
        )
        return res.decode() if isinstance(res, bytes) else str(res)

    async def xrange(
        self, stream: str, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[StreamEntry]:
        return _entries(await self._do(self._r.xrange(self.k(stream), min=start, max=end, count=count)))

    async def xrevrange(
        self, stream: str, end: str = "+", start: str = "-", count: int | None = None
    ) -> list[StreamEntry]:
        return _entries(await self._do(self._r.xrevrange(self.k(stream), max=end, min=start, count=count)))

    async def xlen(self, stream: str) -> int:
        return int(await self._do(self._r.xlen(self.k(stream))))

    async def pfadd(self, key: str, *values: FieldValue) -> int:
        return int(await self._do(self._r.pfadd(self.k(key), *[to_bytes(v) for v in values])))

    async def pfcount(self, key: str) -> int:
        return int(await self._do(self._r.pfcount(self.k(key))))

    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[FieldValue]) -> Any:
        return await self._eval(script.name, script.lua, [self.k(k) for k in keys], [to_bytes(a) for a in args])

    async def run_script_batch(self, script: Script, calls: Sequence[ScriptCall]) -> list[Any]:
        """EVALSHA per call, all sent in one write and read back in order: each script stays atomic.

        Why by hand: redis-py's generic command packing cost more CPU than the rest of the chain ingest path per
        transaction; this is the same pipelining (one round trip) with a plain RESP encoder. Calls answered
        NOSCRIPT (Redis restarted between loading and running) are sent again, alone and in order, after a reload;
        any other error is raised once every reply has been read, so the connection stays in step.
        """
        if not calls:
            return []
        sha = self._shas.get(script.name)
        if sha is None:
            sha = self._shas[script.name] = str(await self._do(self._r.script_load(script.lua)))
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _attempt in range(2):
            replies = await self._pipeline(sha.encode(), [calls[i] for i in todo])
            missing: list[int] = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, ResponseError):
                    if isinstance(reply, NoScriptError):
                        missing.append(i)
                        continue
                    raise StateError(f"script {script.name} failed: {reply}") from reply
                results[i] = reply
            if not missing:
                return results
            todo = missing
            sha = self._shas[script.name] = str(await self._do(self._r.script_load(script.lua)))
        raise StateError(f"script {script.name}: Redis lost it again right after loading")

    async def _pipeline(self, sha: bytes, calls: Sequence[ScriptCall]) -> list[Any]:
        """Send EVALSHA `sha` for every call in one write; the replies in order (errors as ResponseError values)."""
        prefix = self.prefix.encode()
        packed = b"".join(
            _resp(
                [b"EVALSHA", sha, b"%d" % len(c.keys), *[prefix + k.encode() for k in c.keys], *map(to_bytes, c.args)]
            )
            for c in calls
        )
        pool = self._r.connection_pool
        try:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        except RedisError as exc:
            raise StateError(f"redis: {exc}") from exc
        replies: list[Any] = []
        try:
            await conn.send_packed_command(packed)
            for _ in calls:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException as exc:
            await conn.disconnect()
            if isinstance(exc, RedisError):
                raise StateError(f"redis: {exc}") from exc
            raise
        finally:
            await pool.release(conn)
        return replies

    async def _eval(self, name: str, lua: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        sha = self._shas.get(name)
        try:
            if sha is None:
                sha = str(await self._r.script_load(lua))
                self._shas[name] = sha
            try:
                return await self._r.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:  # Redis restarted and lost its script cache
                self._shas[name] = str(await self._r.script_load(lua))
                return await self._r.evalsha(self._shas[name], len(keys), *keys, *args)
        except ResponseError as exc:
            raise StateError(f"script {name} failed: {exc}") from exc
        except RedisError as exc:
            raise StateError(f"redis: {exc}") from exc


def _resp(args: Sequence[bytes]) -> bytes:
    """One command in the Redis protocol (RESP2 array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out += (b"$%d\r\n" % len(a), a, b"\r\n")
    return b"".join(out)


def _safe_url(url: str) -> str:
    """The URL without a password, for error messages."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
