"""Online cluster centres shared by every worker through one atomic state Script (Lua + Python twin).

Why a script and not read-modify-write from Python: many workers fold their windows into the same centres; an
update must read the counts, decay them, move the centres and bump the version in one atomic step, or two
workers' batches would overwrite each other. Why a version number: a worker reads one small field before each
batch and fetches the centres only when someone changed them.

The rule, per centre k with m_k windows of mean embedding x_k assigned in this batch (m_k = 0 for the others):
    a   = 0.5 ** (dt / half_life)            dt = time since the previous update (never negative)
    c_k <- (c_k * n_k * a + x_k * m_k) / (n_k * a + m_k)
    n_k <- n_k * a + m_k
Anomalous windows are never passed in, so an attack cannot drag the clustering toward itself.
Centres live per model version: a new version has another embedding space and is seeded from its own manifest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.scoring import metrics
from service.state.base import CommandRunner, Script, StateStore

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


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


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
        r.call("HSET", key, "c", _dumps(c), "n", _dumps(n), "t", str(tt), "version", str(v))
    return [v, r.call("HGET", key, "c"), r.call("HGET", key, "n")]


CENTRES_SCRIPT = Script("rmad_centres_update", _LUA, _py)


def centres_key(model_name: str, version: str) -> str:
    return f"centres:{model_name}:{version}"


def nearest(embeddings: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) for each row."""
    d = (
        (embeddings * embeddings).sum(1, keepdims=True)
        - 2.0 * embeddings @ centres.T
        + (centres * centres).sum(1)[None, :]
    )
    return np.asarray(d.argmin(1))


def batch_update(embeddings: np.ndarray, centres: np.ndarray) -> dict[str, list[Any]]:
    """Per assigned centre: [count, mean embedding] (the script's update argument)."""
    if len(embeddings) == 0:
        return {}
    idx = nearest(embeddings, centres)
    out: dict[str, list[Any]] = {}
    for k in np.unique(idx):
        rows = embeddings[idx == k]
        out[str(int(k))] = [len(rows), [float(v) for v in rows.mean(0)]]
    return out


@dataclass
class CentreStore:
    """The current centres of one model version, cached by version number."""

    state: StateStore
    model_name: str
    model_version: str
    seed: np.ndarray
    half_life_s: float = 3600.0
    seed_count: float = 100.0
    refresh_ms: int = 0
    version: int = -1
    centres: np.ndarray = field(init=False)
    _checked: float = 0.0

    def __post_init__(self) -> None:
        self.centres = np.ascontiguousarray(self.seed, dtype=np.float32)

    @property
    def key(self) -> str:
        return centres_key(self.model_name, self.model_version)

    def _seed_json(self) -> bytes:
        return _dumps({"c": self.seed.astype(float).tolist(), "n": [self.seed_count] * len(self.seed)})

    def _take(self, res: Any) -> None:
        v, c, _ = res
        self.version = int(v)
        self.centres = np.asarray(json.loads(c), dtype=np.float32)

    async def _run(self, update: dict[str, list[Any]]) -> None:
        res = await self.state.run_script(
            CENTRES_SCRIPT,
            [self.key],
            [int(time.time() * 1000), self.half_life_s * 1000.0, self._seed_json(), _dumps(update)],
        )
        self._take(res)

    async def current(self) -> np.ndarray:
        """The centres to score the next batch with: re-read only when the shared version moved."""
        now = time.monotonic()
        if self.version >= 0 and self.refresh_ms and (now - self._checked) * 1000 < self.refresh_ms:
            return self.centres
        self._checked = now
        raw = await self.state.hget(self.key, "version")
        if raw is None:
            await self._run({})  # first start anywhere: seed from the manifest
        elif int(raw) != self.version:
            got = await self.state.hgetall(self.key)
            self.version = int(got["version"])
            self.centres = np.asarray(json.loads(got["c"]), dtype=np.float32)
        return self.centres

    async def update(self, embeddings: np.ndarray) -> int:
        """Fold the normal windows of one batch into the shared centres; returns how many were folded."""
        upd = batch_update(np.asarray(embeddings, dtype=np.float32), self.centres)
        if not upd:
            return 0
        await self._run(upd)
        metrics.CENTRE_UPDATES.labels(model=self.model_name).inc(len(embeddings))
        return len(embeddings)

    async def counts(self) -> list[float]:
        raw = await self.state.hget(self.key, "n")
        return [] if raw is None else [float(x) for x in json.loads(raw)]
