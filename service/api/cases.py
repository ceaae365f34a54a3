"""Cases: the analyst's unit of work around one or more alerts, with an append-only audit trail.

Why a case and not only a verdict per alert: a desk investigates (status, assignee, notes) and an auditor must be
able to follow who decided what and when. Every change is one atomic step in the state store: the case's current
JSON is compared-and-replaced and one audit record is appended to the case's own stream in the same script, so a
change is never stored without its record nor recorded without being stored. The audit stream is never trimmed or
rewritten (no API changes it); the number of changes per case is bounded instead (`MAX_AUDIT`), so a runaway
client cannot grow one case without limit.

Keys: `case:<id>` (JSON), `case:<id>:audit` (stream), `cases:index` (stream of case ids, oldest first: the list
order), `alert:<alert id>:case` (the case an alert belongs to; an alert joins at most one case).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import orjson

from service.state import StateStore
from service.state.base import CommandRunner, Script

INDEX_STREAM = "cases:index"
MAX_AUDIT = 1000  # changes per case; past it the case refuses more (an export keeps the record)
MAX_ALERTS = 200  # alerts linked to one case
MAX_NOTE = 4000  # characters of one note


class CaseStatus(StrEnum):
    OPEN = "open"
    INVESTIGATING = "investigating"
    ESCALATED = "escalated"
    CLOSED = "closed"


class Disposition(StrEnum):
    """How a closed case ended; the first two are also analyst feedback on every linked alert."""

    CONFIRMED = "confirmed"  # a real anomaly (feedback: confirm)
    FALSE_ALARM = "false_alarm"  # not an anomaly (feedback: dismiss)
    BENIGN = "benign"  # anomalous but explained (a listing, news): no feedback either way
    DUPLICATE = "duplicate"  # covered by another case


FEEDBACK_OF: dict[Disposition, str] = {Disposition.CONFIRMED: "confirm", Disposition.FALSE_ALARM: "dismiss"}


class CaseError(Exception):
    """A change the case's state refuses (HTTP 409) or a missing case/alert (HTTP 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Note:
    key_id: str
    time_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    title: str
    status: CaseStatus
    created_ms: int
    updated_ms: int
    created_by: str
    assignee: str = ""
    disposition: Disposition | None = None
    alert_ids: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()  # venue:symbol of the linked alerts (filters)
    max_severity: str = ""
    notes: tuple[Note, ...] = ()
    version: int = 0  # number of audit records: each change adds one

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> Case:
        d: dict[str, Any] = orjson.loads(raw)
        return cls(
            id=d["id"],
            title=d["title"],
            status=CaseStatus(d["status"]),
            created_ms=int(d["created_ms"]),
            updated_ms=int(d["updated_ms"]),
            created_by=d["created_by"],
            assignee=d.get("assignee", ""),
            disposition=Disposition(d["disposition"]) if d.get("disposition") else None,
            alert_ids=tuple(d.get("alert_ids", ())),
            keys=tuple(d.get("keys", ())),
            max_severity=d.get("max_severity", ""),
            notes=tuple(Note(**n) for n in d.get("notes", ())),
            version=int(d.get("version", 0)),
        )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One change: who (API key id), when (ms UTC), what (action and its details)."""

    seq: str
    case_id: str
    key_id: str
    time_ms: int
    action: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CaseFilter:
    statuses: frozenset[str] = frozenset()
    assignee: str | None = None
    key: str | None = None  # venue:symbol of a linked alert
    since_ms: int | None = None

    def matches(self, c: Case) -> bool:
        if self.statuses and c.status.value not in self.statuses:
            return False
        if self.assignee is not None and c.assignee != self.assignee:
            return False
        if self.key is not None and self.key not in c.keys:
            return False
        return not (self.since_ms is not None and c.updated_ms < self.since_ms)


_SEVERITY_RANK = {"": -1, "low": 0, "medium": 1, "high": 2, "critical": 3}

# KEYS: case, audit stream, index stream, then one `alert:<id>:case` key per alert to link.
# ARGV: expected case JSON ('' = the case must not exist), new JSON, audit JSON, case id, max audit length.
_CHANGE_LUA = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return {0, 'conflict'} end
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[5]) then return {0, 'full'} end
for i = 4, #KEYS do
  local owner = redis.call('GET', KEYS[i])
  if owner and owner ~= ARGV[4] then return {0, 'linked', KEYS[i], owner} end
end
for i = 4, #KEYS do redis.call('SET', KEYS[i], ARGV[4]) end
redis.call('SET', KEYS[1], ARGV[2])
local seq = redis.call('XADD', KEYS[2], '*', 'json', ARGV[3])
if ARGV[1] == '' then redis.call('XADD', KEYS[3], '*', 'id', ARGV[4]) end
return {1, seq}
"""


def _change_py(r: CommandRunner, keys: list[str], args: list[bytes]) -> list[Any]:
    cur = r.call("GET", keys[0])
    if (cur or b"") != args[0]:
        return [0, b"conflict"]
    if int(r.call("XLEN", keys[1])) >= int(args[4]):
        return [0, b"full"]
    for k in keys[3:]:
        owner = r.call("GET", k)
        if owner is not None and owner != args[3]:
            return [0, b"linked", k.encode(), owner]
    for k in keys[3:]:
        r.call("SET", k, args[3])
    r.call("SET", keys[0], args[1])
    seq = r.call("XADD", keys[1], "*", "json", args[2])
    if args[0] == b"":
        r.call("XADD", keys[2], "*", "id", args[3])
    return [1, seq]


CHANGE_CASE = Script("api_case_change", _CHANGE_LUA, _change_py)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def case_key(case_id: str) -> str:
    return f"case:{case_id}"


def audit_stream(case_id: str) -> str:
    return f"case:{case_id}:audit"


def alert_case_key(alert_id: str) -> str:
    return f"alert:{alert_id}:case"


class CaseStore:
    """Open, change, read and list cases; each change goes through `_commit` (one atomic script)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    # -------------------------------------------------------------- reads
    async def get(self, case_id: str) -> Case | None:
        raw = await self.state.get(case_key(case_id))
        return Case.from_json(raw) if raw else None

    async def case_of_alert(self, alert_id: str) -> str | None:
        raw = await self.state.get(alert_case_key(alert_id))
        return raw.decode() if raw else None

    async def audit(self, case_id: str, limit: int = MAX_AUDIT) -> list[AuditRecord]:
        rows = await self.state.xrange(audit_stream(case_id), count=limit)
        out = []
        for sid, f in rows:
            d = orjson.loads(f["json"])
            out.append(AuditRecord(sid, case_id, d["key_id"], int(d["time_ms"]), d["action"], d.get("detail", {})))
        return out

    async def page(
        self, flt: CaseFilter, cursor: str | None, limit: int, scan_max: int = 5000
    ) -> tuple[list[Case], str | None]:
        """Newest first; like the alert log's pages, at most `scan_max` index entries are read per call."""
        from service.api.alertlog import seq_before

        end = "+" if cursor is None else seq_before(cursor)
        if end is None:
            return [], None
        out: list[Case] = []
        scanned = 0
        last: str | None = None
        while scanned < scan_max:
            rows = await self.state.xrevrange(INDEX_STREAM, end, "-", count=min(200, scan_max - scanned))
            if not rows:
                return out, None
            for sid, f in rows:
                scanned += 1
                last = sid
                c = await self.get(_s(f.get("id", b"")))
                if c is not None and flt.matches(c):
                    out.append(c)
                    if len(out) >= limit:
                        return out, sid
            prev = seq_before(rows[-1][0])
            if prev is None or len(rows) < min(200, scan_max):
                return out, None
            end = prev
        return out, last

    # -------------------------------------------------------------- changes
    async def open(
        self, key_id: str, title: str, alerts: Sequence[dict[str, Any]], assignee: str = "", note: str = ""
    ) -> Case:
        now = _now()
        case_id = f"case-{time.strftime('%Y%m%d', time.gmtime(now / 1000))}-{secrets.token_hex(4)}"
        base = Case(id=case_id, title=title, status=CaseStatus.OPEN, created_ms=now, updated_ms=now,
                    created_by=key_id, assignee=assignee)  # fmt: skip
        case = _with_alerts(base, alerts)
        if note:
            case = replace(case, notes=(Note(key_id, now, note),))
        detail: dict[str, Any] = {"title": title, "alert_ids": list(case.alert_ids)}
        if assignee:
            detail["assignee"] = assignee
        if note:
            detail["note"] = note
        return await self._commit(None, replace(case, version=1), key_id, "opened", detail, case.alert_ids)

    async def link(self, case_id: str, key_id: str, alerts: Sequence[dict[str, Any]]) -> Case:
        cur = await self._require(case_id)
        new = _with_alerts(cur, alerts)
        added = [a for a in new.alert_ids if a not in cur.alert_ids]
        if not added:
            return cur
        if len(new.alert_ids) > MAX_ALERTS:
            raise CaseError(409, f"a case links at most {MAX_ALERTS} alerts")
        return await self._change(cur, new, key_id, "alerts_linked", {"alert_ids": added}, tuple(added))

    async def update(
        self,
        case_id: str,
        key_id: str,
        *,
        status: CaseStatus | None = None,
        disposition: Disposition | None = None,
        assignee: str | None = None,
        title: str | None = None,
    ) -> Case:
        cur = await self._require(case_id)
        new, detail = cur, dict[str, Any]()
        if title is not None and title != cur.title:
            new, detail["title"] = replace(new, title=title), {"from": cur.title, "to": title}
        if assignee is not None and assignee != cur.assignee:
            new, detail["assignee"] = replace(new, assignee=assignee), {"from": cur.assignee, "to": assignee}
        if status is not None and status != cur.status:
            if status == CaseStatus.CLOSED and disposition is None:
                raise CaseError(422, "closing a case needs a disposition")
            new = replace(new, status=status, disposition=disposition if status == CaseStatus.CLOSED else None)
            detail["status"] = {"from": cur.status.value, "to": status.value}
            if status == CaseStatus.CLOSED:
                detail["disposition"] = disposition.value if disposition else None
        elif disposition is not None:
            if cur.status != CaseStatus.CLOSED:
                raise CaseError(422, "a disposition is given when closing (status closed)")
            if disposition != cur.disposition:
                new = replace(new, disposition=disposition)
                detail["disposition"] = {
                    "from": cur.disposition.value if cur.disposition else None,
                    "to": disposition.value,
                }
        if not detail:
            return cur
        action = "closed" if new.status == CaseStatus.CLOSED and cur.status != CaseStatus.CLOSED else "updated"
        if cur.status == CaseStatus.CLOSED and new.status != CaseStatus.CLOSED:
            action = "reopened"
        return await self._change(cur, new, key_id, action, detail, ())

    async def add_note(self, case_id: str, key_id: str, text: str) -> Case:
        cur = await self._require(case_id)
        now = _now()
        new = replace(cur, notes=(*cur.notes, Note(key_id, now, text)))
        return await self._change(cur, new, key_id, "note_added", {"note": text}, ())

    async def record_feedback(self, case_id: str, key_id: str, alert_id: str, verdict: str, note: str) -> Case:
        """An alert's feedback, given from the alert feed, lands in its case's record too."""
        cur = await self._require(case_id)
        detail = {"alert_id": alert_id, "verdict": verdict, "note": note}
        return await self._change(cur, cur, key_id, "alert_feedback", detail, ())

    async def _require(self, case_id: str) -> Case:
        c = await self.get(case_id)
        if c is None:
            raise CaseError(404, f"no case {case_id}")
        return c

    async def _change(
        self, cur: Case, new: Case, key_id: str, action: str, detail: dict[str, Any], link: tuple[str, ...]
    ) -> Case:
        new = replace(new, updated_ms=_now(), version=cur.version + 1)
        return await self._commit(cur, new, key_id, action, detail, link)

    async def _commit(
        self, cur: Case | None, new: Case, key_id: str, action: str, detail: dict[str, Any], link: Sequence[str]
    ) -> Case:
        audit = orjson.dumps({"key_id": key_id, "time_ms": new.updated_ms, "action": action, "detail": detail})
        keys = [case_key(new.id), audit_stream(new.id), INDEX_STREAM, *(alert_case_key(a) for a in link)]
        res = await self.state.run_script(
            CHANGE_CASE, keys, [cur.to_json() if cur else b"", new.to_json(), audit, new.id, MAX_AUDIT]
        )
        if int(res[0]) == 1:
            return new
        why = _s(res[1])
        if why == "conflict":
            raise CaseError(409, f"case {new.id} was changed by someone else meanwhile; reload it and retry")
        if why == "full":
            raise CaseError(409, f"case {new.id} has {MAX_AUDIT} changes recorded, the most a case holds")
        alert = _s(res[2]).split(":")[-2] if len(res) > 2 else "?"
        raise CaseError(409, f"alert {alert} already belongs to case {_s(res[3])}")


def _with_alerts(case: Case, alerts: Sequence[dict[str, Any]]) -> Case:
    ids, keys, sev = list(case.alert_ids), list(case.keys), case.max_severity
    for a in alerts:
        aid, key = str(a.get("id")), str(a.get("key", ""))
        if aid not in ids:
            ids.append(aid)
        if key and key not in keys:
            keys.append(key)
        s = str(a.get("severity", ""))
        if _SEVERITY_RANK.get(s, -1) > _SEVERITY_RANK.get(sev, -1):
            sev = s
    return replace(case, alert_ids=tuple(ids), keys=tuple(keys), max_severity=sev)


def _now() -> int:
    return int(time.time() * 1000)
