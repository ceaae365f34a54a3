"""Address activity aggregates: the atomic per-transaction update and the one-round-trip read.

The key layout and argument encoding live in service.features.chain (`update_call`, `address_keys`); the feature
definitions in its docstring.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.state.base import CommandRunner, FieldValue, Script

_LUA_UPDATE = """
-- ARGV[1]: JSON {h, t, ttl, cut, wttl, legs: [{s, sh, sl, r, rh, rl, c, to, fr}]}, every number a string
-- KEYS: applied marker, chain clock, then 5 keys per leg (aggregates, HLL to, HLL from, window out, window in)
local p = cjson.decode(ARGV[1])
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', p.ttl) then return 0 end
local t = p.t
local tn = tonumber(t)
local clock = redis.call('GET', KEYS[2])
if (not clock) or tonumber(clock) < tn then redis.call('SET', KEYS[2], t) end
local function lt(a, b) if #a ~= #b then return #a < #b end return a < b end
for i, leg in ipairs(p.legs) do
  local k = 2 + (i - 1) * 5
  local h = KEYS[k + 1]
  local cur = redis.call('HMGET', h, 't0', 't1', 'smin', 'smax', 'st0', 'st1', 'rmin', 'rmax', 'rt0', 'rt1',
                         'sn', 'rn', 'cn')
  local upd = {}
  local function put(f, v) upd[#upd + 1] = f; upd[#upd + 1] = v end
  local function lo_t(f, j) if (not cur[j]) or tn < tonumber(cur[j]) then put(f, t) end end
  local function hi_t(f, j) if (not cur[j]) or tn > tonumber(cur[j]) then put(f, t) end end
  local function lo_v(f, j, v) if (not cur[j]) or lt(v, cur[j]) then put(f, v) end end
  local function hi_v(f, j, v) if (not cur[j]) or lt(cur[j], v) then put(f, v) end end
  lo_t('t0', 1)
  hi_t('t1', 2)
  if leg.c then put('cn', tostring((tonumber(cur[13]) or 0) + 1)) end
  if leg.s then
    put('sn', tostring((tonumber(cur[11]) or 0) + 1))
    lo_v('smin', 3, leg.s)
    hi_v('smax', 4, leg.s)
    lo_t('st0', 5)
    hi_t('st1', 6)
    if leg.sh ~= '0' then redis.call('HINCRBY', h, 'sh', leg.sh) end
    redis.call('HINCRBY', h, 'sl', leg.sl)
    redis.call('ZADD', KEYS[k + 4], t, t .. '|' .. leg.s .. '|' .. p.h)
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 4], '-inf', p.cut)
    redis.call('EXPIRE', KEYS[k + 4], p.wttl)
    if #leg.to > 0 then redis.call('PFADD', KEYS[k + 2], unpack(leg.to)) end
  end
  if leg.r then
    put('rn', tostring((tonumber(cur[12]) or 0) + 1))
    lo_v('rmin', 7, leg.r)
    hi_v('rmax', 8, leg.r)
    lo_t('rt0', 9)
    hi_t('rt1', 10)
    if leg.rh ~= '0' then redis.call('HINCRBY', h, 'rh', leg.rh) end
    redis.call('HINCRBY', h, 'rl', leg.rl)
    redis.call('ZADD', KEYS[k + 5], t, t .. '|' .. leg.r .. '|' .. p.h)
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 5], '-inf', p.cut)
    redis.call('EXPIRE', KEYS[k + 5], p.wttl)
    if #leg.fr > 0 then redis.call('PFADD', KEYS[k + 3], unpack(leg.fr)) end
  end
  if #upd > 0 then redis.call('HSET', h, unpack(upd)) end
end
return 1
"""


def _py_update(r: CommandRunner, keys: list[str], argv: list[bytes]) -> int:
    """Python twin of _LUA_UPDATE for the in-process store (same commands, same order, same results)."""
    p = orjson.loads(argv[0])
    if r.call("SET", keys[0], "1", "NX", "EX", p["ttl"]) is None:
        return 0
    t: str = p["t"]
    tn = int(t)
    clock = r.call("GET", keys[1])
    if clock is None or int(clock) < tn:
        r.call("SET", keys[1], t)

    def lt(a: str, b: str) -> bool:
        return len(a) < len(b) if len(a) != len(b) else a < b

    for i, leg in enumerate(p["legs"]):
        k = 2 + i * 5
        h = keys[k]
        fields = ("t0", "t1", "smin", "smax", "st0", "st1", "rmin", "rmax", "rt0", "rt1", "sn", "rn", "cn")
        cur = [None if v is None else v.decode() for v in r.call("HMGET", h, *fields)]
        upd: list[FieldValue] = []

        def lo_t(f: str, j: int) -> None:
            c = cur[j]  # noqa: B023 - the helpers run within this iteration only
            if c is None or tn < int(c):
                upd.extend((f, t))  # noqa: B023

        def hi_t(f: str, j: int) -> None:
            c = cur[j]  # noqa: B023
            if c is None or tn > int(c):
                upd.extend((f, t))  # noqa: B023

        def lo_v(f: str, j: int, v: str) -> None:
            c = cur[j]  # noqa: B023
            if c is None or lt(v, c):
                upd.extend((f, v))  # noqa: B023

        def hi_v(f: str, j: int, v: str) -> None:
            c = cur[j]  # noqa: B023
            if c is None or lt(c, v):
                upd.extend((f, v))  # noqa: B023

        lo_t("t0", 0)
        hi_t("t1", 1)
        if leg.get("c"):
            upd.extend(("cn", str(int(cur[12] or 0) + 1)))
        for d, n_i, lo_i, n_f, mn, mx, t0, t1, hf, lf, zk, hk, cps in (
            ("s", 10, 2, "sn", "smin", "smax", "st0", "st1", "sh", "sl", keys[k + 3], keys[k + 1], "to"),
            ("r", 11, 6, "rn", "rmin", "rmax", "rt0", "rt1", "rh", "rl", keys[k + 4], keys[k + 2], "fr"),
        ):
            v = leg.get(d)
            if not v:
                continue
            upd.extend((n_f, str(int(cur[n_i] or 0) + 1)))
            lo_v(mn, lo_i, v)
            hi_v(mx, lo_i + 1, v)
            lo_t(t0, lo_i + 2)
            hi_t(t1, lo_i + 3)
            if leg[d + "h"] != "0":
                r.call("HINCRBY", h, hf, leg[d + "h"])
            r.call("HINCRBY", h, lf, leg[d + "l"])
            r.call("ZADD", zk, t, f"{t}|{v}|{p['h']}")
            r.call("ZREMRANGEBYSCORE", zk, "-inf", p["cut"])
            r.call("EXPIRE", zk, p["wttl"])
            if leg[cps]:
                r.call("PFADD", hk, *leg[cps])
        if upd:
            r.call("HSET", h, *upd)
    return 1


UPDATE_SCRIPT = Script("chain_features_update_v2", _LUA_UPDATE, _py_update)

_LUA_READ = """
local clock = redis.call('GET', KEYS[6]) or ''
local lo = '-inf'
if clock ~= '' then lo = tostring(tonumber(clock) - tonumber(ARGV[1])) end
return {clock, redis.call('HGETALL', KEYS[1]), redis.call('PFCOUNT', KEYS[2]), redis.call('PFCOUNT', KEYS[3]),
        redis.call('ZRANGEBYSCORE', KEYS[4], lo, '+inf'), redis.call('ZRANGEBYSCORE', KEYS[5], lo, '+inf')}
"""


def _py_read(r: CommandRunner, keys: list[str], argv: list[bytes]) -> list[Any]:
    clock = r.call("GET", keys[5]) or b""
    lo: FieldValue = "-inf" if clock == b"" else int(clock) - int(argv[0])
    flat: list[bytes] = []
    for k, v in r.call("HGETALL", keys[0]).items():
        flat += [k.encode() if isinstance(k, str) else k, v]
    return [
        clock,
        flat,
        r.call("PFCOUNT", keys[1]),
        r.call("PFCOUNT", keys[2]),
        r.call("ZRANGEBYSCORE", keys[3], lo, "+inf"),
        r.call("ZRANGEBYSCORE", keys[4], lo, "+inf"),
    ]


READ_SCRIPT = Script("chain_features_read_v1", _LUA_READ, _py_read)
