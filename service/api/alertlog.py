"""The persistent alert log: a capped stream in the state store, fed from the alerts topic, plus analyst feedback.

Why a stream: its entry ids are a total order shared by every API process, so list pagination, stream resume and
webhook cursors all speak the same position ("sequence"). An alert's id is derived from (model version, key, window
end), and each id is appended at most once (an atomic script checks `alert:<id>` first), so at-least-once delivery
from the topic never shows an alert twice.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.api.metrics import ALERTS_DUPLICATE, ALERTS_LOGGED, FEEDBACK
from service.schemas.scoring import Alert, Severity
from service.state import StateStore
from service.state.scripts.alert_bookkeeping import APPEND_ALERT

LOG_STREAM = "alerts:log"
FEEDBACK_STREAM = "feedback:log"
_SEQ = re.compile(r"^\d{1,20}-\d{1,20}$")


_U64 = (1 << 64) - 1


def is_seq(value: str) -> bool:
    """A valid stream id: `ms-n`, both parts unsigned 64-bit (Redis refuses anything larger)."""
    if not _SEQ.match(value):
        return False
    ms, _, n = value.partition("-")
    return int(ms) <= _U64 and int(n) <= _U64


def seq_key(seq: str) -> tuple[int, int]:
    ms, _, n = seq.partition("-")
    return int(ms), int(n or 0)


def seq_after(seq: str) -> str:
    """The smallest sequence strictly after `seq` (an inclusive start that excludes `seq`)."""
    ms, n = seq_key(seq)
    return f"{ms}-{n + 1}" if n < _U64 else f"{ms + 1}-0"


def seq_before(seq: str) -> str | None:
    """The largest sequence strictly before `seq`; None before 0-0."""
    ms, n = seq_key(seq)
    if n > 0:
        return f"{ms}-{n - 1}"
    if ms == 0:
        return None
    return f"{ms - 1}-{_U64}"


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Per-request or per-subscriber filter; empty sets mean "any"."""

    venues: frozenset[str] = frozenset()
    symbols: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    min_severity: Severity | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, alert: dict[str, Any]) -> bool:
        if self.venues and alert.get("venue") not in self.venues:
            return False
        if self.symbols and alert.get("symbol") not in self.symbols:
            return False
        if self.types and alert.get("anomaly_type") not in self.types:
            return False
        if self.min_severity is not None:
            try:
                if Severity(str(alert.get("severity"))).rank < self.min_severity.rank:
                    return False
            except ValueError:
                return False
        created = alert.get("created_ms")
        if self.since_ms is not None and (not isinstance(created, int) or created < self.since_ms):
            return False
        return not (self.until_ms is not None and (not isinstance(created, int) or created > self.until_ms))

    def to_dict(self) -> dict[str, Any]:
        return {
            "venues": sorted(self.venues),
            "symbols": sorted(self.symbols),
            "types": sorted(self.types),
            "min_severity": self.min_severity.value if self.min_severity else None,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AlertFilter:
        sev = raw.get("min_severity")
        return cls(
            venues=frozenset(raw.get("venues") or ()),
            symbols=frozenset(raw.get("symbols") or ()),
            types=frozenset(raw.get("types") or ()),
            min_severity=Severity(sev) if sev else None,
        )


@dataclass(slots=True)
class LogEntry:
    """One alert as stored: its log sequence and its JSON (parsed lazily)."""

    seq: str
    raw: bytes
    _parsed: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def alert(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = orjson.loads(self.raw)
        return self._parsed


class AlertLog:
    """Append (idempotent by alert id), fetch by id, page with filters, and read forward from a sequence."""

    def __init__(self, state: StateStore, maxlen: int, ttl_s: float) -> None:
        self.state = state
        self.maxlen = maxlen
        self.ttl_ms = int(ttl_s * 1000)

    async def append(self, alert: Alert) -> tuple[bool, str]:
        return await self.append_raw(alert.id, alert.model_dump_json().encode())

    async def append_raw(self, alert_id: str, raw: bytes) -> tuple[bool, str]:
        new, seq = await self.state.run_script(
            APPEND_ALERT, [f"alert:{alert_id}", LOG_STREAM], [alert_id, raw, self.maxlen, self.ttl_ms]
        )
        seq_s = seq.decode() if isinstance(seq, bytes) else str(seq)
        if int(new):
            ALERTS_LOGGED.inc()
        else:
            ALERTS_DUPLICATE.inc()
        return bool(int(new)), seq_s

    async def get(self, alert_id: str) -> LogEntry | None:
        rec = await self.state.hgetall(f"alert:{alert_id}")
        if not rec or "json" not in rec:
            return None
        return LogEntry(rec["seq"].decode(), rec["json"])

    async def resolve(self, last_id: str) -> str | None:
        """A resume point: a log sequence as is, or the sequence of an alert id (None when unknown)."""
        if is_seq(last_id):
            return last_id
        entry = await self.get(last_id)
        return entry.seq if entry else None

    async def last_seq(self) -> str | None:
        tail = await self.state.xrevrange(LOG_STREAM, count=1)
        return tail[0][0] if tail else None

    async def after(self, seq: str | None, count: int, until: str = "+") -> list[LogEntry]:
        """Entries strictly after `seq` (from the start when None), oldest first, up to `until` inclusive."""
        start = "-" if seq is None else seq_after(seq)
        rows = await self.state.xrange(LOG_STREAM, start, until, count=count)
        return [LogEntry(sid, f["json"]) for sid, f in rows if "json" in f]

    async def page(
        self, flt: AlertFilter, cursor: str | None, limit: int, scan_max: int
    ) -> tuple[list[LogEntry], str | None]:
        """Newest first. Returns matches and the cursor to continue from (None when the log is exhausted).

        At most `scan_max` entries are examined per call, so a rare filter cannot turn one request into a full
        scan; the cursor then points past what was examined and the caller simply asks again.
        """
        before = "+" if cursor is None else seq_before(cursor)
        if before is None:
            return [], None
        end: str = before
        out: list[LogEntry] = []
        scanned = 0
        last_seen: str | None = None
        while scanned < scan_max:
            batch = min(500, scan_max - scanned)
            rows = await self.state.xrevrange(LOG_STREAM, end, "-", count=batch)
            if not rows:
                return out, None
            for sid, f in rows:
                scanned += 1
                last_seen = sid
                if "json" not in f:
                    continue
                entry = LogEntry(sid, f["json"])
                if flt.matches(entry.alert):
                    out.append(entry)
                    if len(out) >= limit:
                        return out, sid
            if len(rows) < batch:
                return out, None
            prev = seq_before(rows[-1][0])
            if prev is None:
                return out, None
            end = prev
        return out, last_seen


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    alert_id: str
    verdict: str
    note: str
    key_id: str
    time_ms: int


class FeedbackStore:
    """Analyst verdicts: the latest per alert (shown with the alert) and an append-only export log."""

    def __init__(self, state: StateStore, maxlen: int = 1_000_000) -> None:
        self.state = state
        self.maxlen = maxlen

    async def record(self, entry: LogEntry, verdict: str, note: str, key_id: str) -> FeedbackRecord:
        alert = entry.alert
        rec = FeedbackRecord(str(alert.get("id")), verdict, note, key_id, int(time.time() * 1000))
        fields: dict[str, str | int | bytes] = {
            "verdict": verdict,
            "note": note,
            "key_id": key_id,
            "time_ms": rec.time_ms,
        }
        await self.state.hset(f"feedback:{rec.alert_id}", fields)
        await self.state.xadd(
            FEEDBACK_STREAM, {"alert_id": rec.alert_id, **fields, "alert": entry.raw}, maxlen=self.maxlen
        )
        FEEDBACK.labels(verdict=verdict, anomaly_type=str(alert.get("anomaly_type", "other"))).inc()
        return rec

    async def latest(self, alert_id: str) -> FeedbackRecord | None:
        rec = await self.state.hgetall(f"feedback:{alert_id}")
        if not rec:
            return None
        return FeedbackRecord(
            alert_id,
            rec["verdict"].decode(),
            rec.get("note", b"").decode(),
            rec.get("key_id", b"").decode(),
            int(rec.get("time_ms", b"0")),
        )

    async def export(self, since_ms: int | None = None, batch: int = 1000) -> Iterable[bytes]:
        """Every feedback record with its alert, as NDJSON lines, oldest first (for re-training/calibration)."""
        start = "-" if since_ms is None else f"{since_ms}-0"
        lines: list[bytes] = []
        while True:
            rows = await self.state.xrange(FEEDBACK_STREAM, start, "+", count=batch)
            for sid, f in rows:
                lines.append(
                    orjson.dumps(
                        {
                            "seq": sid,
                            "alert_id": f["alert_id"].decode(),
                            "verdict": f["verdict"].decode(),
                            "note": f.get("note", b"").decode(),
                            "key_id": f.get("key_id", b"").decode(),
                            "time_ms": int(f.get("time_ms", b"0")),
                            "alert": orjson.loads(f["alert"]),
                        }
                    )
                    + b"\n"
                )
            if len(rows) < batch:
                return lines
            start = seq_after(rows[-1][0])
