"""Online cluster centres shared by every worker (see service.scoring.centres for the update rule)."""

from __future__ import annotations

import json
from typing import Any

from service.state.base import CommandRunner, Script


def dumps_compact(obj: Any) -> bytes:
    """JSON as the script reads and writes it (no spaces)."""
    return json.dumps(obj, separators=(",", ":")).encode()


# KEYS[1] = centres hash. ARGV: now_ms, half_life_ms, seed_json ({"c": [[..]], "n": [..]}), update_json
# ({"<k>": [m, [x..]]}). Seeds when absent; applies the decayed-count update; returns {version, c_json, n_json}.
_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local half = tonumber(ARGV[2])
local c, n, t, v
if redis.call('EXISTS', key) == 0 then
  local seed = cjson.decode(ARGV[3])
  c = seed['c']; n = seed['n']; t = now; v = 0
else
  c = cjson.decode(redis.call('HGET', key, 'c'))
  n = cjson.decode(redis.call('HGET', key, 'n'))
  t = tonumber(redis.call('HGET', key, 't'))
  v = tonumber(redis.call('HGET', key, 'version'))
end
local upd = cjson.decode(ARGV[4])
local changed = (v == 0)
if next(upd) ~= nil then
  local dt = now - t
  if dt < 0 then dt = 0 end
  local a = math.pow(0.5, dt / half)
  for k = 1, #n do n[k] = n[k] * a end
  for ks, mx in pairs(upd) do
    local k = tonumber(ks) + 1
    local m = mx[1]
    local x = mx[2]
    local w = n[k] + m
    local ck = c[k]
    for j = 1, #ck do ck[j] = (ck[j] * n[k] + x[j] * m) / w end
    n[k] = w
  end
  if now > t then t = now end
  changed = true
end
if changed then
  v = v + 1
  redis.call('HSET', key, 'c', cjson.encode(c), 'n', cjson.encode(n), 't', tostring(t), 'version', tostring(v))
end
return {v, redis.call('HGET', key, 'c'), redis.call('HGET', key, 'n')}
"""


def _py(r: CommandRunner, keys: list[str], args: list[bytes]) -> Any:
    key = keys[0]
    now, half = float(args[0]), float(args[1])
    if not r.call("EXISTS", key):
        seed = json.loads(args[2])
        c, n, t, v = seed["c"], seed["n"], now, 0
    else:
        c = json.loads(r.call("HGET", key, "c"))
        n = json.loads(r.call("HGET", key, "n"))
        t = float(r.call("HGET", key, "t"))
        v = int(r.call("HGET", key, "version"))
    upd = json.loads(args[3])
    changed = v == 0
    if upd:
        a = 0.5 ** (max(0.0, now - t) / half)
        n = [x * a for x in n]
        for ks, (m, x) in upd.items():
            k = int(ks)
            w = n[k] + m
            c[k] = [(cj * n[k] + xj * m) / w for cj, xj in zip(c[k], x, strict=True)]
            n[k] = w
        t = max(t, now)
        changed = True
    if changed:
        v += 1
        tt = int(t) if float(t).is_integer() else t
        r.call("HSET", key, "c", dumps_compact(c), "n", dumps_compact(n), "t", str(tt), "version", str(v))
    return [v, r.call("HGET", key, "c"), r.call("HGET", key, "n")]


CENTRES_SCRIPT = Script("rmad_centres_update", _LUA, _py)
