"""API keys (hashed in Redis, scopes, revocation, the development key, the verified-key cache), 401/403, token-bucket
429 + Retry-After (also with concurrent requests, whose takes are coalesced into shared script calls), the Lua buckets
against their Python twins, and `rmad keys`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from service.api.auth import KeyStore, Principal, RateLimiter, Scope
from service.config.api import DEV_API_KEY
from service.state.base import StateError
from service.state.memory import MemoryState
from service.state.redis import RedisState
from service.state.scripts.ratelimit import TOKEN_BUCKET, TOKEN_BUCKETS, bucket_answers, bucket_takes
from tests.api.conftest import Harness, api_settings, harness


async def test_keys_are_stored_hashed_and_revocable(api: Harness) -> None:
    store = api.ctx.keys
    key, info = await store.create("desk-1", [Scope.SUBSCRIBE, Scope.FEEDBACK])
    assert key.startswith(f"rmad_{info.key_id}_")
    raw = await api.runtime.state.hgetall(f"apikey:{info.key_id}")
    assert key.encode() not in b"".join(raw.values()), "the plain key must never be stored"
    assert raw["hash"] != key.encode() and len(raw["hash"]) == 64
    principal = await store.verify(key)
    assert principal is not None and principal.scopes == {Scope.SUBSCRIBE, Scope.FEEDBACK}
    assert await store.verify(key[:-1] + ("x" if key[-1] != "x" else "y")) is None
    assert await store.verify("rmad_nope_nope") is None and await store.verify("garbage") is None
    assert [i.key_id for i in await store.list() if i.name == "desk-1"] == [info.key_id]
    assert await store.revoke(info.key_id) is True
    assert await store.revoke(info.key_id) is False
    # a fresh store (another API process) refuses it at once; this one within the cache time
    assert await KeyStore(api.runtime.state, api.settings).verify(key) is None


async def test_key_cache_drops_a_revoked_key(api: Harness) -> None:
    here, other = api.ctx.keys, KeyStore(api.runtime.state, api.settings)
    clock = [1000.0]
    other._clock = lambda: clock[0]
    key, info = await here.create("cached", [Scope.SCORE])
    assert (await here.verify(key)) is not None and (await other.verify(key)) is not None  # both cache it now
    assert await here.revoke(info.key_id) is True
    # the process that revoked drops it from its cache at once
    assert await here.verify(key) is None
    # another process answers from its cache for at most RMAD_API_KEY_CACHE_S, then asks Redis again
    clock[0] += api.settings.api_key_cache_s * 0.5
    assert (await other.verify(key)) is not None
    clock[0] += api.settings.api_key_cache_s * 0.6
    assert await other.verify(key) is None
    # a cached key never admits a different secret with the same id
    assert await other.verify(key[:-1] + ("x" if key[-1] != "x" else "y")) is None


async def test_missing_wrong_and_unscoped_keys(api: Harness) -> None:
    c = api.client
    r = await c.get("/v1/alerts")
    assert r.status_code == 401 and "missing API key" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "ApiKey"
    assert (await c.get("/v1/alerts", headers={"X-API-Key": "rmad_abc_def"})).status_code == 401
    assert (await c.get("/v1/alerts", headers={"Authorization": f"Bearer {api.keys['subscribe']}"})).status_code == 200
    r = await c.get("/v1/alerts", headers=api.h("score"))
    assert r.status_code == 403 and "subscribe" in r.json()["detail"]
    assert (await c.post("/v1/models/market/reload", headers=api.h("subscribe"))).status_code == 403
    # admin holds every scope
    assert (await c.get("/v1/alerts", headers=api.h("admin"))).status_code == 200
    # the development key is refused outside RMAD_ENV=development
    assert (await c.get("/v1/alerts", headers={"X-API-Key": DEV_API_KEY})).status_code == 401


async def test_dev_key_only_in_development(redis_url: str, unique: str) -> None:
    async with harness(api_settings(redis_url, unique, env="development"), components=False) as h:
        assert (await h.client.get("/v1/alerts", headers={"X-API-Key": DEV_API_KEY})).status_code == 200
        page = (await h.client.get("/")).text
        assert DEV_API_KEY in page
    async with harness(
        api_settings(redis_url, unique + "p", env="production", secret_key="s" * 40), components=False
    ) as h:
        assert (await h.client.get("/v1/alerts", headers={"X-API-Key": DEV_API_KEY})).status_code == 401
        assert DEV_API_KEY not in (await h.client.get("/")).text


async def test_rate_limit_answers_429_with_retry_after(redis_url: str, unique: str) -> None:
    async with harness(api_settings(redis_url, unique, api_rate_burst=5, api_rate_per_s=0.5), components=False) as h:
        codes = [(await h.client.get("/v1/alerts", headers=h.h("subscribe"))).status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
        r = await h.client.get("/v1/alerts", headers=h.h("subscribe"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # another key has its own bucket
        assert (await h.client.get("/v1/alerts", headers=h.h("admin"))).status_code == 200
        # a key with its own, larger limit
        key, _ = await h.ctx.keys.create("big", [Scope.SUBSCRIBE], rate_per_s=100, burst=50)
        codes = [(await h.client.get("/v1/alerts", headers={"X-API-Key": key})).status_code for _ in range(20)]
        assert set(codes) == {200}
        metrics = (await h.client.get("/metrics")).text
        assert "rmad_api_rate_limited_total" in metrics


async def test_token_bucket_lua_matches_python_twin_under_concurrency(redis_url: str, unique: str) -> None:
    redis = RedisState(redis_url, f"t{unique}:")
    mem = MemoryState()
    try:
        for store in (redis, mem):
            now = 1_000_000
            # 30 concurrent takers against a bucket of 10: exactly 10 pass
            res = await asyncio.gather(*(store.run_script(TOKEN_BUCKET, ["b"], [now, 2.0, 10, 1]) for _ in range(30)))
            assert sum(int(r[0]) for r in res) == 10
            denied = [r for r in res if int(r[0]) == 0]
            assert all(int(r[1]) == 500 for r in denied)  # 1 token at 2/s -> 500 ms
            later = await store.run_script(TOKEN_BUCKET, ["b"], [now + 1500, 2.0, 10, 1])
            assert [int(x) for x in later] == [1, 0, 2]  # 3 tokens refilled, one taken
    finally:
        await redis.close()


async def test_concurrent_requests_get_429_at_the_limit(redis_url: str, unique: str) -> None:
    async with harness(api_settings(redis_url, unique, api_rate_burst=8, api_rate_per_s=0.01), components=False) as h:
        rs = await asyncio.gather(*(h.client.get("/v1/alerts", headers=h.h("subscribe")) for _ in range(30)))
        codes = sorted(r.status_code for r in rs)
        assert codes == [200] * 8 + [429] * 22
        assert all(int(r.headers["retry-after"]) >= 1 for r in rs if r.status_code == 429)
        assert h.ctx.limiter.calls < 30, "concurrent takes should share script calls"


@pytest.mark.parametrize("kind", ["redis", "memory"])
async def test_coalesced_takes_match_one_by_one(redis_url: str, unique: str, kind: str) -> None:
    store = RedisState(redis_url, f"t{unique}:") if kind == "redis" else MemoryState()
    settings = api_settings(redis_url, unique, api_rate_burst=10, api_rate_per_s=2.0)
    limiter = RateLimiter(store, settings)
    try:
        a = Principal("a", "a", frozenset({Scope.SCORE}))
        b = Principal("b", "b", frozenset({Scope.SCORE}), rate_per_s=1.0, burst=3)
        res = await asyncio.gather(*(limiter.take(a if i % 3 else b) for i in range(45)))
        got_a = [d for i, d in enumerate(res) if i % 3]
        got_b = [d for i, d in enumerate(res) if not i % 3]
        assert [d.allowed for d in got_a] == [True] * 10 + [False] * 20  # in arrival order
        assert [d.allowed for d in got_b] == [True] * 3 + [False] * 12
        assert [d.remaining for d in got_a[:10]] == list(range(9, -1, -1))
        assert all(d.retry_after_s == 1 for d in got_a[10:] + got_b[3:])
        assert limiter.calls < 45
        # a lone take right after is answered by its own call
        calls = limiter.calls
        assert (await limiter.take(a)).allowed is False and limiter.calls == calls + 1
    finally:
        await store.close()


async def test_coalesced_take_errors_reach_every_caller() -> None:
    store = MemoryState()
    limiter = RateLimiter(store, api_settings("redis://unused", "x"))
    p = Principal("k", "k", frozenset({Scope.SCORE}))
    assert (await limiter.take(p)).allowed
    await store.close()
    res = await asyncio.gather(*(limiter.take(p) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, StateError) for r in res)


async def test_token_buckets_lua_matches_python_twin_and_single_takes(redis_url: str, unique: str) -> None:
    redis = RedisState(redis_url, f"t{unique}:")
    mem = MemoryState()
    try:
        # (now, [(bucket, rate, burst, cost), ...]) batches over two buckets, with refills in between
        batches = [
            (1_000_000, [("x", 2.0, 5, 1)] * 4 + [("y", 1.0, 2, 1)] * 3 + [("x", 2.0, 5, 1)] * 3),
            (1_000_400, [("x", 2.0, 5, 1), ("y", 1.0, 2, 2), ("x", 2.0, 5, 1)]),
            (1_003_000, [("y", 1.0, 2, 1)] * 3 + [("x", 2.0, 5, 3)]),
            (1_003_000, [("z", 0.5, 10_000_000, 1)] * 2),  # a large bucket: `left` is printed whole
        ]
        outs = []
        for store in (redis, mem):
            out = []
            for now, takes in batches:
                keys = sorted({t[0] for t in takes})
                argv = bucket_takes((keys.index(b) + 1, rate, burst, cost) for b, rate, burst, cost in takes)
                reply = await store.run_script(TOKEN_BUCKETS, [f"m{k}" for k in keys], [now, argv])
                out.append([list(a) for a in bucket_answers(reply)])
            outs.append(out)
            # the same takes one by one through the single-take script give the same answers
            single = []
            for now, takes in batches:
                single.append(
                    [
                        [int(v) for v in await store.run_script(TOKEN_BUCKET, [f"s{b}"], [now, rate, burst, cost])]
                        for b, rate, burst, cost in takes
                    ]
                )
            assert single == out
        assert outs[0] == outs[1]
        assert [x[0] for x in outs[0][0]] == [1, 1, 1, 1, 1, 1, 0, 1, 0, 0]
        assert outs[0][3] == [[1, 0, 9_999_999], [1, 0, 9_999_998]]
    finally:
        await redis.close()


def test_keys_cli_create_list_revoke(redis_url: str, unique: str) -> None:
    env = dict(os.environ, RMAD_REDIS_URL=redis_url, RMAD_REDIS_KEY_PREFIX=f"cli{unique}:", RMAD_ENV="test")

    def rmad(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", "keys", *args], env=env, capture_output=True, text=True, timeout=60
        )

    r = rmad("create", "--name", "ops", "--scopes", "subscribe,feedback", "--json")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["key"].startswith("rmad_") and made["scopes"] == ["feedback", "subscribe"]
    listed = rmad("list", "--json")
    assert listed.returncode == 0 and [k["name"] for k in json.loads(listed.stdout)] == ["ops"]
    assert made["key"] not in listed.stdout
    bad = rmad("create", "--name", "x", "--scopes", "root")
    assert bad.returncode == 2 and "unknown scope 'root'" in bad.stderr
    assert rmad("revoke", made["key_id"]).returncode == 0
    assert rmad("revoke", made["key_id"]).returncode == 1
    assert json.loads(rmad("list", "--json").stdout)[0]["revoked_ms"] is not None
    no_redis = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "list"],
        env={k: v for k, v in env.items() if k != "RMAD_REDIS_URL"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_redis.returncode == 2 and "RMAD_REDIS_URL" in no_redis.stderr


@pytest.mark.parametrize("scope", list(Scope))
def test_scopes_parse(scope: Scope) -> None:
    from service.api.auth import parse_scopes

    assert parse_scopes([scope.value, " "]) == {scope}
