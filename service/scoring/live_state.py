"""The live context the API reads: per key, the latest scored feature window and the recent trades behind it.

Why the worker publishes it: the API used to follow market.trades itself and rebuild every key's bars and
features (a second consumer and a second bar builder that could disagree with the worker's). Now the worker, after
scoring a batch, writes each key's newest window and its recent prints to the state store (`live:<key>`, one
value, expiring after RMAD_SCORING_IDLE_EVICTION_S); the API scores a transaction against exactly what the worker
scored, as of the key's last closed bar.

Format: one JSON header line (version, window end, model, shape, flags, the `TradeContext`), then the window as
little-endian float32 [T, F]. The reader checks every length before it trusts one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.features.trade_context import TradeContext
from service.state.base import StateStore

log = logging.getLogger(__name__)

PREFIX = "live:"
VERSION = 1
MAX_T, MAX_F = 4096, 1024


@dataclass(slots=True)
class LiveContext:
    key: str
    window: np.ndarray  # float32 [T, F], unscaled features, oldest bar first
    window_end_ms: int
    model_name: str
    model_version: str
    scorable: bool  # the key's features had warmed up
    incomplete: bool
    prints: TradeContext


def encode_live(ctx: LiveContext) -> bytes:
    t, f = ctx.window.shape
    head = {
        "v": VERSION,
        "key": ctx.key,
        "end_ms": ctx.window_end_ms,
        "model": ctx.model_name,
        "version": ctx.model_version,
        "t": t,
        "f": f,
        "scorable": ctx.scorable,
        "incomplete": ctx.incomplete,
        "prints": ctx.prints.to_dict(),
    }
    return orjson.dumps(head) + b"\n" + np.ascontiguousarray(ctx.window, dtype="<f4").tobytes()


def decode_live(raw: bytes) -> LiveContext | None:
    """The context, or None for anything malformed (a version this code does not know included)."""
    try:
        nl = raw.index(b"\n")
        head: dict[str, Any] = orjson.loads(raw[:nl])
        t, f = int(head["t"]), int(head["f"])
        body = raw[nl + 1 :]
        if head.get("v") != VERSION or not (0 < t <= MAX_T and 0 < f <= MAX_F) or len(body) != t * f * 4:
            return None
        window = np.frombuffer(body, dtype="<f4").reshape(t, f).astype(np.float32)
        return LiveContext(
            key=str(head["key"]),
            window=window,
            window_end_ms=int(head["end_ms"]),
            model_name=str(head["model"]),
            model_version=str(head["version"]),
            scorable=bool(head["scorable"]),
            incomplete=bool(head["incomplete"]),
            prints=TradeContext.from_dict(dict(head.get("prints") or {})),
        )
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


async def read_live(state: StateStore, key: str) -> LiveContext | None:
    raw = await state.get(PREFIX + key)
    return None if raw is None else decode_live(raw)


class LivePublisher:
    """Writes each key's newest window of a scored batch (best effort: scoring never waits on a failed write)."""

    def __init__(self, state: StateStore, ttl_s: float) -> None:
        self.state = state
        self.ttl_s = ttl_s
        self._failing = False

    async def publish(self, contexts: list[LiveContext]) -> None:
        newest: dict[str, LiveContext] = {}
        for c in contexts:
            if c.key not in newest or c.window_end_ms >= newest[c.key].window_end_ms:
                newest[c.key] = c
        try:
            for c in newest.values():
                await self.state.set(PREFIX + c.key, encode_live(c), ttl_s=self.ttl_s)
        except Exception as exc:
            if not self._failing:
                log.warning("live context not published (the API scores without it until this recovers): %s", exc)
            self._failing = True
            return
        if self._failing:
            log.warning("live context published again")
        self._failing = False
