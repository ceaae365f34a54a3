"""Stored evidence, one record per alert id in the state store, expiring with the alert.

Why its own record (not re-read from the topics on demand): the raw market topics are retained for hours, alerts
for weeks; the evidence must outlive the data it was drawn from. The record's size is bounded by the builder's
limits and checked again here, so a pathological series can never store an unbounded value.
"""

from __future__ import annotations

import orjson

from service.evidence.builder import Evidence, evidence_from_dict
from service.state import StateStore

MAX_BYTES = 512 * 1024


def evidence_key(alert_id: str) -> str:
    return f"evidence:{alert_id}"


class EvidenceTooLarge(ValueError):
    pass


class EvidenceStore:
    def __init__(self, state: StateStore, ttl_s: float) -> None:
        self.state = state
        self.ttl_s = ttl_s

    async def put(self, ev: Evidence, *, only_new: bool = False) -> int:
        """Store; with `only_new` only where no evidence of that alert is stored yet. Returns the bytes stored
        (0 when `only_new` found one)."""
        raw = orjson.dumps(ev.to_dict())
        if len(raw) > MAX_BYTES:  # the builder's limits keep it far below; a second guard, not the rule
            ev.trades = ev.trades[-50:]
            ev.books = ev.books[-20:]
            ev.notes.append("trades and book snapshots cut to fit the evidence size bound")
            raw = orjson.dumps(ev.to_dict())
            if len(raw) > MAX_BYTES:
                raise EvidenceTooLarge(f"evidence of {ev.alert_id} is {len(raw)} bytes, over {MAX_BYTES}")
        done = await self.state.set(evidence_key(ev.alert_id), raw, ttl_s=self.ttl_s, nx=only_new)
        return len(raw) if done else 0

    async def get(self, alert_id: str) -> Evidence | None:
        raw = await self.state.get(evidence_key(alert_id))
        return evidence_from_dict(orjson.loads(raw)) if raw else None
