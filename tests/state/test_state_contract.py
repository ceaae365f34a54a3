"""One contract, two stores: CAS, atomic scripts under concurrency, hashes, TTL, capped streams, HLL."""

from __future__ import annotations

import asyncio

from service.state.base import CommandRunner, Script, StateStore

TRANSFER_LUA = """
local bal = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local amount = tonumber(ARGV[3])
if bal < amount then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], -amount)
redis.call('HINCRBY', KEYS[1], ARGV[2], amount)
redis.call('INCR', KEYS[2])
return 1
"""


def _transfer_py(r: CommandRunner, keys: list[str], args: list[bytes]) -> int:
    bal = int(r.call("HGET", keys[0], args[0]) or b"0")
    amount = int(args[2])
    if bal < amount:
        return 0
    r.call("HINCRBY", keys[0], args[0], -amount)
    r.call("HINCRBY", keys[0], args[1], amount)
    r.call("INCR", keys[1])
    return 1


TRANSFER = Script("test_transfer", TRANSFER_LUA, _transfer_py)


async def test_compare_and_set(state: StateStore) -> None:
    assert await state.compare_and_set("cas", None, b"v1")
    assert not await state.compare_and_set("cas", None, b"v2"), "absent-only CAS must fail when present"
    assert not await state.compare_and_set("cas", b"wrong", b"v2")
    assert await state.get("cas") == b"v1"
    assert await state.compare_and_set("cas", b"v1", b"v2")
    assert await state.get("cas") == b"v2"
    assert await state.compare_and_set("cas", b"v2", None)
    assert await state.get("cas") is None


async def test_cas_loops_do_not_lose_updates_under_concurrency(state: StateStore) -> None:
    async def bump(times: int) -> int:
        retries = 0
        for _ in range(times):
            while True:
                cur = await state.get("counter")
                nxt = str(int(cur or b"0") + 1).encode()
                if await state.compare_and_set("counter", cur, nxt):
                    break
                retries += 1
                await asyncio.sleep(0)
        return retries

    await asyncio.gather(*(bump(40) for _ in range(8)))
    assert await state.get("counter") == b"320"


async def test_script_is_atomic_under_concurrent_updaters(state: StateStore) -> None:
    await state.hset("acct", {"alice": 1000, "bob": 0})

    async def worker(src: str, dst: str) -> int:
        ok = 0
        for _ in range(60):
            ok += int(await state.run_script(TRANSFER, ["acct", "transfers"], [src, dst, 7]))
        return ok

    results = await asyncio.gather(
        *[worker("alice", "bob") for _ in range(5)], *[worker("bob", "alice") for _ in range(3)]
    )
    acct = {k: int(v) for k, v in (await state.hgetall("acct")).items()}
    assert acct["alice"] + acct["bob"] == 1000, "a transfer must never be half applied"
    assert acct["alice"] >= 0 and acct["bob"] >= 0
    assert int(await state.get("transfers") or b"0") == sum(results)


async def test_script_twins_agree_on_refusal(state: StateStore) -> None:
    await state.hset("acct2", {"a": 5})
    assert await state.run_script(TRANSFER, ["acct2", "n2"], ["a", "b", 6]) == 0
    assert await state.run_script(TRANSFER, ["acct2", "n2"], ["a", "b", 5]) == 1
    assert await state.hgetall("acct2") == {"a": b"0", "b": b"5"}


async def test_hashes(state: StateStore) -> None:
    assert await state.hset("h", {"x": 1, "y": "two", "z": 2.5}) == 3
    assert await state.hget("h", "y") == b"two"
    assert await state.hincrby("h", "x", 4) == 5
    assert await state.hdel("h", "y", "nope") == 1
    assert await state.hgetall("h") == {"x": b"5", "z": b"2.5"}
    assert await state.hgetall("missing") == {}


async def test_ttl_expires_keys(state: StateStore) -> None:
    await state.set("short", b"v", ttl_s=0.3)
    assert await state.get("short") == b"v"
    left = await state.ttl("short")
    assert left is not None and 0 < left <= 0.3
    assert not await state.set("short", b"other", nx=True)
    await asyncio.sleep(0.45)
    assert await state.get("short") is None
    assert await state.set("short", b"again", nx=True)
    assert await state.ttl("short") is None
    await state.set("plain", b"x")
    assert await state.expire("plain", 0.2)
    await asyncio.sleep(0.3)
    assert await state.get("plain") is None


async def test_capped_stream_keeps_newest_in_order(state: StateStore) -> None:
    ids = [await state.xadd("log", {"n": i, "kind": "alert"}, maxlen=10) for i in range(25)]
    assert await state.xlen("log") == 10
    entries = await state.xrange("log")
    assert [int(f["n"]) for _, f in entries] == list(range(15, 25))
    assert [i for i, _ in entries] == ids[15:]
    newest = await state.xrevrange("log", count=3)
    assert [int(f["n"]) for _, f in newest] == [24, 23, 22]
    after = await state.xrange("log", start=ids[20], count=2)
    assert [int(f["n"]) for _, f in after] == [20, 21]


async def test_hyperloglog_counts_distinct(state: StateStore) -> None:
    for i in range(300):
        await state.pfadd("hll", f"addr{i % 120}")
    count = await state.pfcount("hll")
    assert abs(count - 120) <= 3  # Redis' HLL error is ~0.81 %; in-process counts exactly


async def test_incr_and_delete(state: StateStore) -> None:
    assert await state.incr("n") == 1
    assert await state.incr("n", 9) == 10
    assert await state.delete("n", "absent") == 1
    await state.ping()
