"""Every state script, run on Redis (its Lua) and in-process (its Python twin) side by side.

Each case drives one script through a sequence of calls on both stores, then reads back what it wrote; the replies
and the read-backs must agree. Agreement is on meaning, not spelling: numbers written as text compare as numbers
(Lua's tostring and cjson print 14 significant digits, Python's repr prints 17), JSON text compares parsed, and
stream entry ids (time-based, so different in each store) compare by their position in the store's own stream.
A script added to service.state.scripts.ALL_SCRIPTS without a case here fails `test_every_script_has_a_case`.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.features.chain_store import address_keys, clock_key, update_call
from service.schemas.chain import Chain, ChainTx
from service.state.base import FieldValue, Script, StateStore
from service.state.memory import MemoryState
from service.state.redis import RedisState
from service.state.scripts import (
    ALL_SCRIPTS,
    APPEND_ALERT,
    CENTRES_SCRIPT,
    CLAIM_SCRIPT,
    DONE_SCRIPT,
    READ_SCRIPT,
    SHARE_SCRIPT,
    TOKEN_BUCKET,
    TOKEN_BUCKETS,
    UPDATE_SCRIPT,
)
from service.state.scripts.ratelimit import bucket_takes

pytestmark = pytest.mark.integration

_SEQ = re.compile(r"^\d+-\d+$")

Call = tuple[Script, list[str], list[FieldValue]]
Inspect = Callable[[StateStore], Awaitable[dict[str, Any]]]


@dataclass
class Case:
    name: str
    calls: list[Call]
    inspect: Inspect
    streams: list[str] = field(default_factory=list)  # whose entry ids may appear in replies

    @property
    def scripts(self) -> set[str]:
        return {s.name for s, _, _ in self.calls}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _number(v: Any) -> float | None:
    try:
        return float(_text(v))
    except ValueError:
        return None


def same(a: Any, b: Any, path: str = "", *, strict: bool = True) -> None:
    """Assert `a` (Redis) and `b` (in-process) mean the same thing; the message names where they differ.

    `strict`: integer and float replies differ (a Lua number reply is always an integer); inside JSON text they do
    not (cjson writes 0.0 as 0).
    """
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            same(a[k], b[k], f"{path}.{k}", strict=strict)
        return
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        assert len(a) == len(b), f"{path}: {len(a)} items != {len(b)}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]", strict=strict)
        return
    if a is None or b is None:
        assert a is None and b is None, f"{path}: {a!r} != {b!r}"
        return
    if isinstance(a, int | float) and isinstance(b, int | float):
        assert not strict or type(a) is type(b), f"{path}: {type(a).__name__} reply != {type(b).__name__} reply"
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9), f"{path}: {a!r} != {b!r}"
        return
    assert isinstance(a, bytes | str) and isinstance(b, bytes | str), f"{path}: {a!r} vs {b!r}"
    ta, tb = _text(a), _text(b)
    if ta == tb:
        return
    na, nb = _number(ta), _number(tb)
    if na is not None and nb is not None:
        assert math.isclose(na, nb, rel_tol=1e-12, abs_tol=1e-9), f"{path}: {ta} != {tb}"
        return
    if ta[:1] in "[{" and tb[:1] in "[{":
        same(json.loads(ta), json.loads(tb), path + "<json>", strict=False)
        return
    raise AssertionError(f"{path}: {ta!r} != {tb!r}")


async def _stream_ids(state: StateStore, streams: list[str]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for s in streams:
        for i, (eid, _) in enumerate(await state.xrange(s)):
            ids[eid] = f"<{s}#{i}>"
    return ids


def _positions(value: Any, ids: dict[str, str]) -> Any:
    """Stream entry ids -> their position in the store's stream (a trimmed-away id stays distinguishable)."""
    if isinstance(value, list | tuple):
        return [_positions(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _positions(v, ids) for k, v in value.items()}
    if isinstance(value, bytes | str) and _SEQ.match(_text(value)):
        return ids.get(_text(value), "<trimmed>")
    return value


async def _ttl_class(state: StateStore, key: str) -> str:
    left = await state.ttl(key)
    return "none" if left is None else "expiring"


# --- the cases --------------------------------------------------------------------------------------------------


def _bucket_case() -> Case:
    calls: list[Call] = [(TOKEN_BUCKET, ["b"], [1_000, 2.0, 3, 1]) for _ in range(4)]
    calls += [(TOKEN_BUCKET, ["b"], [1_400, 2.0, 3, 1]), (TOKEN_BUCKET, ["b"], [9_000, 2.0, 3, 2])]

    async def inspect(s: StateStore) -> dict[str, Any]:
        return {"b": await s.hgetall("b"), "ttl": await _ttl_class(s, "b")}

    return Case("token bucket: burst, refusal with wait, refill", calls, inspect)


def _buckets_case() -> Case:
    takes = bucket_takes([(1, 2.0, 3, 1), (2, 0.5, 1, 1), (1, 2.0, 3, 1), (2, 0.5, 1, 1), (1, 2.0, 3, 2)])
    later = bucket_takes([(2, 0.5, 1, 1), (1, 2.0, 3, 3)])
    calls: list[Call] = [
        (TOKEN_BUCKETS, ["m1", "m2"], [1_000, takes]),
        (TOKEN_BUCKETS, ["m1", "m2"], [4_000, later]),
    ]

    async def inspect(s: StateStore) -> dict[str, Any]:
        return {k: await s.hgetall(k) for k in ("m1", "m2")} | {"ttl": await _ttl_class(s, "m2")}

    return Case("token buckets: many takes over two keys in one step", calls, inspect)


def _append_case() -> Case:
    def append(alert_id: str) -> Call:
        return (APPEND_ALERT, [f"alert:{alert_id}", "log"], [alert_id, f'{{"id":"{alert_id}"}}', 2, 60_000])

    calls = [append("a1"), append("a1"), append("a2"), append("a3"), append("a2")]

    async def inspect(s: StateStore) -> dict[str, Any]:
        ids = await _stream_ids(s, ["log"])
        entries = [(ids[eid], f) for eid, f in await s.xrange("log")]
        hashes = {k: _positions(await s.hgetall(f"alert:{k}"), ids) for k in ("a1", "a2", "a3")}
        return {"log": entries, "hashes": hashes, "ttl": await _ttl_class(s, "alert:a1")}

    return Case("append alert: once per id, capped log", calls, inspect, streams=["log"])


def _delivery_case() -> Case:
    keys = ["alerts:done:x1", "inflight:p0"]
    calls: list[Call] = [
        (CLAIM_SCRIPT, keys, ["x1", b'{"id":"x1"}']),
        (CLAIM_SCRIPT, ["alerts:done:x2", "inflight:p0"], ["x2", b'{"id":"x2"}']),
        (DONE_SCRIPT, keys, ["x1", 60_000]),
        (CLAIM_SCRIPT, keys, ["x1", b'{"id":"x1"}']),
        (DONE_SCRIPT, keys, ["x1", 60_000]),
    ]

    async def inspect(s: StateStore) -> dict[str, Any]:
        return {
            "done": await s.get("alerts:done:x1"),
            "done_ttl": await _ttl_class(s, "alerts:done:x1"),
            "not_done": await s.get("alerts:done:x2"),
            "inflight": await s.hgetall("inflight:p0"),
        }

    return Case("claim and done: claim, confirm, refuse a confirmed id", calls, inspect)


def _centres_case() -> Case:
    seed = json.dumps({"c": [[0.0, 0.0], [1.0, 1.0]], "n": [4, 4]})
    upd = json.dumps({"0": [2, [0.3, -0.1]], "1": [1, [1.7, 0.9]]})
    calls: list[Call] = [
        (CENTRES_SCRIPT, ["cent"], [1_000, 60_000.0, seed, "{}"]),
        (CENTRES_SCRIPT, ["cent"], [31_000, 60_000.0, seed, upd]),
        (CENTRES_SCRIPT, ["cent"], [20_000, 60_000.0, seed, upd]),  # a clock behind: no negative decay
        (CENTRES_SCRIPT, ["cent"], [90_000, 60_000.0, seed, "{}"]),
    ]

    async def inspect(s: StateStore) -> dict[str, Any]:
        return {"cent": await s.hgetall("cent")}

    return Case("centres: seed, decayed update, stale clock, no-op", calls, inspect)


def _share_case() -> Case:
    k1, k2 = "xv:BTC:1000", "xv:ETH:1000"
    calls: list[Call] = [
        (SHARE_SCRIPT, [k1, k2], ["binance-spot", "100.5", "binance-spot", "20.25", 30_000]),
        (SHARE_SCRIPT, [k1], ["bybit-spot", "100.75", 30_000]),
        (SHARE_SCRIPT, [k1, k2], ["binance-spot", "100.5", "bybit-spot", "20.5", 30_000]),
    ]

    async def inspect(s: StateStore) -> dict[str, Any]:
        return {k: await s.hgetall(k) for k in (k1, k2)} | {"ttl": await _ttl_class(s, k1)}

    return Case("share closes: write and read a group's closes", calls, inspect)


def _eth(tx_hash: str, frm: str, to: str | None, value: int, t_ms: int, created: str | None = None) -> ChainTx:
    return ChainTx(
        chain=Chain.ETHEREUM,
        address=frm,
        tx_hash=tx_hash,
        tx_index=0,
        block_number=1,
        block_hash="0xb",
        time_ms=t_ms,
        ingest_time_ms=t_ms,
        from_address=frm,
        to_address=to,
        contract_address=created,
        value=value,
        status=1,
    )


def _chain_case() -> Case:
    t0 = 1_700_000_000_000
    txs = [
        _eth("0x1", "0xa", "0xb", 10**18, t0),
        _eth("0x2", "0xa", "0xc", 3 * 10**17, t0 + 60_000),
        _eth("0x3", "0xb", "0xa", 123_456_789_123_456_789_123, t0 + 120_000),  # above 2**53 and int64
        _eth("0x4", "0xa", None, 0, t0 + 90_000, created="0xd"),  # older than the clock
        _eth("0x5", "0xa", "0xa", 5, t0 + 2 * 86_400_000),  # to itself, a day later: windows slide
    ]
    calls: list[Call] = []
    for tx in [*txs, txs[1]]:  # the repeat is refused by the applied-once marker
        call = update_call(tx)
        assert call is not None
        calls.append((UPDATE_SCRIPT, list(call.keys), list(call.args)))
    for addr in ("0xa", "0xb", "0xd", "0xnever"):
        calls.append((READ_SCRIPT, [*address_keys("ethereum", addr), clock_key("ethereum")], [86_400_000]))

    async def inspect(s: StateStore) -> dict[str, Any]:
        return {
            "clock": await s.get(clock_key("ethereum")),
            "agg_a": await s.hgetall(address_keys("ethereum", "0xa")[0]),
            "applied_ttl": await _ttl_class(s, "chain:feat:ethereum:applied:0x1"),
        }

    return Case("chain features: updates (once each), then reads", calls, inspect)


CASES = [
    _bucket_case(),
    _buckets_case(),
    _append_case(),
    _delivery_case(),
    _centres_case(),
    _share_case(),
    _chain_case(),
]


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[tuple[StateStore, StateStore]]:
    redis = RedisState(redis_url, key_prefix=f"sc{uuid.uuid4().hex[:8]}:")
    memory = MemoryState()
    yield redis, memory
    await redis.close()
    await memory.close()


def test_every_script_has_a_case() -> None:
    covered = set().union(*(c.scripts for c in CASES))
    assert {s.name for s in ALL_SCRIPTS} <= covered, (
        f"no contract case for {sorted({s.name for s in ALL_SCRIPTS} - covered)}"
    )


def test_the_comparison_sees_a_difference() -> None:
    with pytest.raises(AssertionError):
        same([1, b"2.5", b"x"], [1, "2.5", "y"])
    with pytest.raises(AssertionError):
        same([1], [1.0])  # a Lua number reply is an integer; a twin returning a float differs
    same([1, b"2", b'{"c":[0.3]}'], [1, "2.0", '{"c": [0.30000000000000004]}'])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_script_runs_alike_on_both_stores(case: Case, stores: tuple[StateStore, StateStore]) -> None:
    redis, memory = stores
    for i, (script, keys, args) in enumerate(case.calls):
        on_redis = await redis.run_script(script, keys, args)
        on_memory = await memory.run_script(script, keys, args)
        ids_r, ids_m = await _stream_ids(redis, case.streams), await _stream_ids(memory, case.streams)
        same(_positions(on_redis, ids_r), _positions(on_memory, ids_m), f"call {i} ({script.name}) reply")
    same(await case.inspect(redis), await case.inspect(memory), "read back")


async def test_batched_runs_equal_single_runs(stores: tuple[StateStore, StateStore]) -> None:
    """run_script_batch (one pipeline on Redis) answers what the same calls answer one by one."""
    from service.state.base import ScriptCall

    redis, memory = stores
    case = _delivery_case()
    calls = [ScriptCall(keys, args) for _, keys, args in case.calls if _ is CLAIM_SCRIPT]
    same(await redis.run_script_batch(CLAIM_SCRIPT, calls), await memory.run_script_batch(CLAIM_SCRIPT, calls))
    assert await redis.run_script_batch(CLAIM_SCRIPT, []) == []
    await redis.client.script_flush()  # as after a Redis restart: the cached SHA is gone, the batch reloads it
    again = await redis.run_script_batch(CLAIM_SCRIPT, calls)
    assert again == [1, 1, 1]  # nothing confirmed yet: every claim is granted again
