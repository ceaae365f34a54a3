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
from service.state.base import StateStore
from service.state.scripts.centre_update import CENTRES_SCRIPT, dumps_compact


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
        return dumps_compact({"c": self.seed.astype(float).tolist(), "n": [self.seed_count] * len(self.seed)})

    def _take(self, res: Any) -> None:
        v, c, _ = res
        self.version = int(v)
        self.centres = np.asarray(json.loads(c), dtype=np.float32)

    async def _run(self, update: dict[str, list[Any]]) -> None:
        res = await self.state.run_script(
            CENTRES_SCRIPT,
            [self.key],
            [int(time.time() * 1000), self.half_life_s * 1000.0, self._seed_json(), dumps_compact(update)],
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
