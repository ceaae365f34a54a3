"""The API's per-key token buckets: one take (TOKEN_BUCKET) and many takes in one atomic step (TOKEN_BUCKETS).

Why Lua: several API processes share one limit per key; the refill and the take happen in one atomic step in Redis
(the Python twin does the same under the in-process store's lock).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from service.state.base import CommandRunner, Script

_BUCKET_LUA = """
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  ts = now
end
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait, math.floor(tokens)}
"""


def _bucket_py(r: CommandRunner, keys: list[str], args: list[bytes]) -> list[int]:
    now, rate, burst, cost = (float(a) for a in args)
    t_raw, ts_raw = r.call("HMGET", keys[0], "t", "ts")
    if t_raw is None or ts_raw is None:
        tokens, ts = burst, now
    else:
        tokens, ts = float(t_raw), float(ts_raw)
    if now > ts:
        tokens = min(burst, tokens + (now - ts) * rate / 1000)
        ts = now
    allowed, wait = 0, 0
    if tokens >= cost:
        tokens -= cost
        allowed = 1
    else:
        wait = math.ceil((cost - tokens) * 1000 / rate)
    r.call("HSET", keys[0], "t", repr(tokens), "ts", repr(ts))
    r.call("PEXPIRE", keys[0], math.ceil(burst * 1000 / rate) + 1000)
    return [allowed, wait, math.floor(tokens)]


TOKEN_BUCKET = Script("api_token_bucket", _BUCKET_LUA, _bucket_py)

# Many takes in one atomic step: KEYS are the distinct buckets, ARGV[1] is `now`, ARGV[2] the takes in order as
# "index,rate,burst,cost;" (index: the bucket's 1-based position in KEYS); the answer is "allowed,wait_ms,left" per
# take, comma-joined: exactly what the single script would answer, take after take, at that `now`.
# Why text both ways: redis-py packs each argument and parses each reply element in Python; a batch of takes as
# separate arguments and integers cost more client CPU than the round trip it saved.
_BUCKETS_LUA = """
local now = tonumber(ARGV[1])
local tokens, ts, rates, bursts = {}, {}, {}, {}
local out = {}
for ks, rs, bs, cs in string.gmatch(ARGV[2], "([^,;]+),([^,;]+),([^,;]+),([^,;]+);") do
  local k = tonumber(ks)
  local rate = tonumber(rs)
  local burst = tonumber(bs)
  local cost = tonumber(cs)
  if tokens[k] == nil then
    local b = redis.call('HMGET', KEYS[k], 't', 'ts')
    tokens[k] = tonumber(b[1])
    ts[k] = tonumber(b[2])
    if tokens[k] == nil or ts[k] == nil then
      tokens[k] = burst
      ts[k] = now
    end
  end
  if now > ts[k] then
    tokens[k] = math.min(burst, tokens[k] + (now - ts[k]) * rate / 1000)
    ts[k] = now
  end
  local allowed = 0
  local wait = 0
  if tokens[k] >= cost then
    tokens[k] = tokens[k] - cost
    allowed = 1
  else
    wait = math.ceil((cost - tokens[k]) * 1000 / rate)
  end
  rates[k] = rate
  bursts[k] = burst
  out[#out + 1] = string.format('%d,%.0f,%.0f', allowed, wait, math.floor(tokens[k]))
end
for k, t in pairs(tokens) do
  redis.call('HSET', KEYS[k], 't', tostring(t), 'ts', tostring(ts[k]))
  redis.call('PEXPIRE', KEYS[k], math.ceil(bursts[k] * 1000 / rates[k]) + 1000)
end
return table.concat(out, ',')
"""


def _buckets_py(r: CommandRunner, keys: list[str], args: list[bytes]) -> bytes:
    now = float(args[0])
    state: dict[int, list[float]] = {}  # bucket index -> [tokens, ts, rate, burst]
    out: list[str] = []
    for take in args[1].decode().split(";")[:-1]:
        ks, rs, bs, cs = take.split(",")
        k, rate, burst, cost = int(ks), float(rs), float(bs), float(cs)
        b = state.get(k)
        if b is None:
            t_raw, ts_raw = r.call("HMGET", keys[k - 1], "t", "ts")
            b = state[k] = (
                [burst, now, rate, burst]
                if t_raw is None or ts_raw is None
                else [float(t_raw), float(ts_raw), rate, burst]
            )
        if now > b[1]:
            b[0] = min(burst, b[0] + (now - b[1]) * rate / 1000)
            b[1] = now
        allowed, wait = 0, 0
        if b[0] >= cost:
            b[0] -= cost
            allowed = 1
        else:
            wait = math.ceil((cost - b[0]) * 1000 / rate)
        b[2], b[3] = rate, burst
        out.append(f"{allowed},{wait},{math.floor(b[0])}")
    for k, (tokens, ts, rate, burst) in state.items():
        r.call("HSET", keys[k - 1], "t", repr(tokens), "ts", repr(ts))
        r.call("PEXPIRE", keys[k - 1], math.ceil(burst * 1000 / rate) + 1000)
    return ",".join(out).encode()


def bucket_takes(takes: Iterable[tuple[int, float, int, int]]) -> str:
    """ARGV[2] of TOKEN_BUCKETS: (bucket index, rate, burst, cost) per take, in order."""
    return "".join(f"{k},{rate!r},{burst},{cost};" for k, rate, burst, cost in takes)


def bucket_answers(reply: bytes | str) -> list[tuple[int, int, int]]:
    """TOKEN_BUCKETS' reply as (allowed, wait_ms, left) per take."""
    raw = reply.decode() if isinstance(reply, bytes) else reply
    v = [int(x) for x in raw.split(",")] if raw else []
    return [(v[i], v[i + 1], v[i + 2]) for i in range(0, len(v), 3)]


TOKEN_BUCKETS = Script("api_token_buckets", _BUCKETS_LUA, _buckets_py)
