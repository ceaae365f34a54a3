"""In-process state store with Redis semantics for the commands the service uses.

Every operation, scripts included, runs under one lock, which gives scripts the same all-or-nothing isolation
that Lua has inside Redis. `call()` speaks Redis command names so a script's Python twin reads like its Lua.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.state.base import FieldValue, Script, StateError, StateStore, StreamEntry, to_bytes


@dataclass
class _Entry:
    value: Any
    expires_at: float | None = None


def _sid(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _bound(raw: str, low: bool) -> tuple[int, int]:
    if raw == "-":
        return (-1, -1)
    if raw == "+":
        return (1 << 63, 1 << 63)
    ms, sep, seq = raw.partition("-")
    if sep:
        return int(ms), int(seq)
    return (int(ms), 0) if low else (int(ms), 1 << 63)


def _num(b: bytes | None) -> float:
    return float(b) if b is not None else 0.0


def _fmt_float(x: float) -> bytes:
    # Redis prints INCRBYFLOAT results without a trailing ".0" for integral values
    return (str(int(x)) if x == int(x) and abs(x) < 1e17 else repr(x)).encode()


class MemoryState(StateStore):
    kind = "memory"

    def __init__(self) -> None:
        self._data: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._last_stream_id: dict[str, tuple[int, int]] = {}

    # -- lifecycle
    async def ping(self, timeout_s: float = 2.0) -> None:
        if self._closed:
            raise StateError("in-process state store is closed")

    async def close(self) -> None:
        self._closed = True

    # -- the command core
    def _live(self, key: str) -> _Entry | None:
        e = self._data.get(key)
        if e is not None and e.expires_at is not None and e.expires_at <= time.monotonic():
            del self._data[key]
            return None
        return e

    def _typed(self, key: str, kind: type, create: bool) -> Any:
        e = self._live(key)
        if e is None:
            if not create:
                return None
            e = _Entry(kind())
            self._data[key] = e
        if not isinstance(e.value, kind):
            raise StateError(f"WRONGTYPE Operation against a key holding the wrong kind of value: {key}")
        return e.value

    def call(self, command: str, *args: FieldValue) -> Any:
        """Run one Redis-shaped command atomically (also the API a script's Python twin uses)."""
        with self._lock:
            handler = getattr(self, "_cmd_" + command.lower(), None)
            if handler is None:
                raise StateError(f"unsupported command {command}")
            return handler(*args)

    # strings
    def _cmd_get(self, key: str) -> bytes | None:
        v = self._typed(key, bytes, False)
        return v  # type: ignore[no-any-return]

    def _cmd_set(self, key: str, value: FieldValue, *opts: FieldValue) -> bytes | None:
        nx = xx = False
        ttl: float | None = None
        it = iter(opts)
        for o in it:
            name = str(o).upper()
            if name == "NX":
                nx = True
            elif name == "XX":
                xx = True
            elif name == "EX":
                ttl = float(next(it))
            elif name == "PX":
                ttl = float(next(it)) / 1000
        exists = self._live(key) is not None
        if (nx and exists) or (xx and not exists):
            return None
        self._data[key] = _Entry(to_bytes(value), time.monotonic() + ttl if ttl is not None else None)
        return b"OK"

    def _cmd_del(self, *keys: str) -> int:
        n = 0
        for k in keys:
            if self._live(k) is not None:
                del self._data[k]
                n += 1
        return n

    def _cmd_exists(self, *keys: str) -> int:
        return sum(1 for k in keys if self._live(k) is not None)

    def _cmd_incrby(self, key: str, amount: FieldValue) -> int:
        e = self._live(key)
        cur = int(e.value) if e is not None else 0
        new = cur + int(amount)
        if e is None:
            self._data[key] = _Entry(str(new).encode())
        else:
            e.value = str(new).encode()
        return new

    def _cmd_incr(self, key: str) -> int:
        return self._cmd_incrby(key, 1)

    def _cmd_incrbyfloat(self, key: str, amount: FieldValue) -> bytes:
        e = self._live(key)
        new = _num(e.value if e else None) + float(amount)
        if e is None:
            self._data[key] = _Entry(_fmt_float(new))
        else:
            e.value = _fmt_float(new)
        return _fmt_float(new)

    def _cmd_expire(self, key: str, seconds: FieldValue) -> int:
        return self._cmd_pexpire(key, float(seconds) * 1000)

    def _cmd_pexpire(self, key: str, ms: FieldValue) -> int:
        e = self._live(key)
        if e is None:
            return 0
        e.expires_at = time.monotonic() + float(ms) / 1000
        return 1

    def _cmd_pttl(self, key: str) -> int:
        e = self._live(key)
        if e is None:
            return -2
        if e.expires_at is None:
            return -1
        return max(0, int((e.expires_at - time.monotonic()) * 1000))

    def _cmd_ttl(self, key: str) -> int:
        ms = self._cmd_pttl(key)
        return ms if ms < 0 else (ms + 500) // 1000

    # hashes
    def _cmd_hset(self, key: str, *pairs: FieldValue) -> int:
        h = self._typed(key, dict, True)
        added = 0
        for f, v in zip(pairs[::2], pairs[1::2], strict=True):
            fk = to_bytes(f).decode()
            added += fk not in h
            h[fk] = to_bytes(v)
        return added

    def _cmd_hget(self, key: str, field: FieldValue) -> bytes | None:
        h = self._typed(key, dict, False)
        return None if h is None else h.get(to_bytes(field).decode())

    def _cmd_hmget(self, key: str, *fields: FieldValue) -> list[bytes | None]:
        return [self._cmd_hget(key, f) for f in fields]

    def _cmd_hgetall(self, key: str) -> dict[str, bytes]:
        h = self._typed(key, dict, False)
        return dict(h) if h else {}

    def _cmd_hincrby(self, key: str, field: FieldValue, amount: FieldValue) -> int:
        h = self._typed(key, dict, True)
        fk = to_bytes(field).decode()
        new = int(h.get(fk, b"0")) + int(amount)
        h[fk] = str(new).encode()
        return new

    def _cmd_hincrbyfloat(self, key: str, field: FieldValue, amount: FieldValue) -> bytes:
        h = self._typed(key, dict, True)
        fk = to_bytes(field).decode()
        new = _num(h.get(fk)) + float(amount)
        h[fk] = _fmt_float(new)
        return h[fk]  # type: ignore[no-any-return]

    def _cmd_hdel(self, key: str, *fields: FieldValue) -> int:
        h = self._typed(key, dict, False)
        if not h:
            return 0
        n = 0
        for f in fields:
            n += h.pop(to_bytes(f).decode(), None) is not None
        if not h:
            del self._data[key]
        return n

    def _cmd_hexists(self, key: str, field: FieldValue) -> int:
        return int(self._cmd_hget(key, field) is not None)

    def _cmd_hlen(self, key: str) -> int:
        h = self._typed(key, dict, False)
        return len(h) if h else 0

    # HyperLogLog, counted exactly
    def _cmd_pfadd(self, key: str, *values: FieldValue) -> int:
        s = self._typed(key, set, True)
        before = len(s)
        s.update(to_bytes(v) for v in values)
        return int(len(s) != before)

    def _cmd_pfcount(self, *keys: str) -> int:
        union: set[bytes] = set()
        for k in keys:
            s = self._typed(k, set, False)
            if s:
                union |= s
        return len(union)

    # sorted sets (sliding windows)
    def _cmd_zadd(self, key: str, *pairs: FieldValue) -> int:
        z = self._typed(key, _ZSet, True)
        added = 0
        for score, member in zip(pairs[::2], pairs[1::2], strict=True):
            added += z.add(to_bytes(member), float(score))
        return added

    def _cmd_zrem(self, key: str, *members: FieldValue) -> int:
        z = self._typed(key, _ZSet, False)
        return sum(z.remove(to_bytes(m)) for m in members) if z else 0

    def _cmd_zcard(self, key: str) -> int:
        z = self._typed(key, _ZSet, False)
        return len(z.scores) if z else 0

    def _cmd_zscore(self, key: str, member: FieldValue) -> bytes | None:
        z = self._typed(key, _ZSet, False)
        if not z or to_bytes(member) not in z.scores:
            return None
        return _fmt_float(z.scores[to_bytes(member)])

    def _cmd_zrangebyscore(self, key: str, low: FieldValue, high: FieldValue) -> list[bytes]:
        z = self._typed(key, _ZSet, False)
        return z.range(_score(low), _score(high)) if z else []

    def _cmd_zremrangebyscore(self, key: str, low: FieldValue, high: FieldValue) -> int:
        z = self._typed(key, _ZSet, False)
        if not z:
            return 0
        gone = z.range(_score(low), _score(high))
        for m in gone:
            z.remove(m)
        return len(gone)

    # streams
    def _cmd_xadd(self, stream: str, *args: FieldValue) -> bytes:
        items = list(args)
        maxlen: int | None = None
        if items and str(items[0]).upper() == "MAXLEN":
            items.pop(0)
            if str(items[0]) in ("=", "~"):
                items.pop(0)
            maxlen = int(items.pop(0))
        entry_id = str(items.pop(0))
        entries = self._typed(stream, list, True)
        last = self._last_stream_id.get(stream, (0, 0))
        if entry_id == "*":
            now = int(time.time() * 1000)
            new = (now, 0) if now > last[0] else (last[0], last[1] + 1)
        else:
            new = _sid(entry_id)
            if new <= last:
                raise StateError("ERR The ID specified in XADD is equal or smaller than the target stream top item")
        self._last_stream_id[stream] = new
        fields = {to_bytes(f).decode(): to_bytes(v) for f, v in zip(items[::2], items[1::2], strict=True)}
        entries.append((new, fields))
        if maxlen is not None and len(entries) > maxlen:
            del entries[: len(entries) - maxlen]
        return f"{new[0]}-{new[1]}".encode()

    def _cmd_xlen(self, stream: str) -> int:
        e = self._typed(stream, list, False)
        return len(e) if e else 0

    def _cmd_xrange(self, stream: str, start: str, end: str, *opts: FieldValue) -> list[StreamEntry]:
        entries = self._typed(stream, list, False) or []
        lo, hi = _bound(str(start), True), _bound(str(end), False)
        count = int(opts[1]) if len(opts) >= 2 and str(opts[0]).upper() == "COUNT" else None
        out = [(f"{i[0]}-{i[1]}", dict(f)) for i, f in entries if lo <= i <= hi]
        return out[:count] if count is not None else out

    def _cmd_xrevrange(self, stream: str, end: str, start: str, *opts: FieldValue) -> list[StreamEntry]:
        out = self._cmd_xrange(stream, start, end)[::-1]
        count = int(opts[1]) if len(opts) >= 2 and str(opts[0]).upper() == "COUNT" else None
        return out[:count] if count is not None else out

    # -- the async interface
    async def get(self, key: str) -> bytes | None:
        return self.call("GET", key)  # type: ignore[no-any-return]

    async def set(self, key: str, value: FieldValue, ttl_s: float | None = None, *, nx: bool = False) -> bool:
        opts: list[FieldValue] = []
        if ttl_s is not None:
            opts += ["PX", int(ttl_s * 1000)]
        if nx:
            opts.append("NX")
        return self.call("SET", key, value, *opts) is not None

    async def delete(self, *keys: str) -> int:
        return self.call("DEL", *keys)  # type: ignore[no-any-return]

    async def compare_and_set(
        self, key: str, expected: bytes | None, new: FieldValue | None, ttl_s: float | None = None
    ) -> bool:
        with self._lock:
            if self._cmd_get(key) != expected:
                return False
            if new is None:
                self._cmd_del(key)
            else:
                px: list[FieldValue] = ["PX", int(ttl_s * 1000)] if ttl_s is not None else []
                self._cmd_set(key, new, *px)
            return True

    async def incr(self, key: str, amount: int = 1) -> int:
        return self.call("INCRBY", key, amount)  # type: ignore[no-any-return]

    async def expire(self, key: str, ttl_s: float) -> bool:
        return bool(self.call("PEXPIRE", key, int(ttl_s * 1000)))

    async def ttl(self, key: str) -> float | None:
        ms = self.call("PTTL", key)
        return None if ms < 0 else ms / 1000

    async def hset(self, key: str, mapping: Mapping[str, FieldValue]) -> int:
        flat: list[FieldValue] = [x for kv in mapping.items() for x in kv]
        return self.call("HSET", key, *flat)  # type: ignore[no-any-return]

    async def hget(self, key: str, field: str) -> bytes | None:
        return self.call("HGET", key, field)  # type: ignore[no-any-return]

    async def hgetall(self, key: str) -> dict[str, bytes]:
        return self.call("HGETALL", key)  # type: ignore[no-any-return]

    async def hincrby(self, key: str, field: str, amount: int = 1) -> int:
        return self.call("HINCRBY", key, field, amount)  # type: ignore[no-any-return]

    async def hdel(self, key: str, *fields: str) -> int:
        return self.call("HDEL", key, *fields)  # type: ignore[no-any-return]

    async def xadd(self, stream: str, fields: Mapping[str, FieldValue], maxlen: int | None = None) -> str:
        flat: list[FieldValue] = [x for kv in fields.items() for x in kv]
        cap: list[FieldValue] = ["MAXLEN", maxlen] if maxlen is not None else []
        return bytes(self.call("XADD", stream, *cap, "*", *flat)).decode()

    async def xrange(
        self, stream: str, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[StreamEntry]:
        opts: list[FieldValue] = ["COUNT", count] if count is not None else []
        return self.call("XRANGE", stream, start, end, *opts)  # type: ignore[no-any-return]

    async def xrevrange(
        self, stream: str, end: str = "+", start: str = "-", count: int | None = None
    ) -> list[StreamEntry]:
        opts: list[FieldValue] = ["COUNT", count] if count is not None else []
        return self.call("XREVRANGE", stream, end, start, *opts)  # type: ignore[no-any-return]

    async def xlen(self, stream: str) -> int:
        return self.call("XLEN", stream)  # type: ignore[no-any-return]

    async def pfadd(self, key: str, *values: FieldValue) -> int:
        return self.call("PFADD", key, *values)  # type: ignore[no-any-return]

    async def pfcount(self, key: str) -> int:
        return self.call("PFCOUNT", key)  # type: ignore[no-any-return]

    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[FieldValue]) -> Any:
        if self._closed:
            raise StateError("in-process state store is closed")
        with self._lock:
            return script.python(self, list(keys), [to_bytes(a) for a in args])


def _score(raw: FieldValue) -> float:
    s = str(raw.decode() if isinstance(raw, bytes) else raw)
    if s in ("-inf", "+inf", "inf"):
        return float(s)
    return float(s.lstrip("("))


class _ZSet:
    """Members ordered by (score, member), as Redis orders them."""

    def __init__(self) -> None:
        self.scores: dict[bytes, float] = {}
        self._order: list[tuple[float, bytes]] = []

    def add(self, member: bytes, score: float) -> int:
        old = self.scores.get(member)
        if old is not None:
            self._order.remove((old, member))
        self.scores[member] = score
        bisect.insort(self._order, (score, member))
        return int(old is None)

    def remove(self, member: bytes) -> int:
        old = self.scores.pop(member, None)
        if old is None:
            return 0
        self._order.remove((old, member))
        return 1

    def range(self, low: float, high: float) -> list[bytes]:
        i = bisect.bisect_left(self._order, (low, b""))
        out = []
        while i < len(self._order) and self._order[i][0] <= high:
            out.append(self._order[i][1])
            i += 1
        return out
