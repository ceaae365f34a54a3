"""The analyst's desk over HTTP: cases (/v1/cases), alert evidence (/v1/alerts/{id}/evidence) and, in simulator
mode, the scoreboard of injected anomalies against alerts (/v1/simulator/scoreboard).

Scopes: reading needs `subscribe` (whoever sees alerts sees cases); every change needs `feedback` (the analyst's
scope); `admin` implies both. Every change is recorded with the calling key's id.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from service.api.access import require
from service.api.alertlog import AlertFilter
from service.api.auth import Principal, Scope
from service.api.case_report import render_case_report
from service.api.cases import FEEDBACK_OF, MAX_NOTE, Case, CaseError, CaseFilter, CaseStatus, Disposition
from service.api.desk import desk_for
from service.api.followers import scores_stream
from service.api.payloads import Name, Seq
from service.api.routes_alerts import AUTH_RESPONSES, AlertId, Ctx
from service.api.simboard import read_labels, score_board
from service.evidence.builder import Evidence

router = APIRouter(prefix="/v1", tags=["cases"])
Reader = Annotated[Principal, Depends(require(Scope.SUBSCRIBE))]
Analyst = Annotated[Principal, Depends(require(Scope.FEEDBACK))]
CaseId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Text = Annotated[str, Field(max_length=200)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {**AUTH_RESPONSES, 404: {"description": "no such case or alert"}}
CHANGES: dict[int | str, dict[str, Any]] = {**NOT_FOUND, 409: {"description": "refused by the case's state"}}


class CaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alert_ids: list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]] = Field(
        min_length=1, max_length=50, description="alerts the case opens with (each joins at most one case)"
    )
    title: Text = ""
    assignee: Text = ""
    note: Annotated[str, Field(max_length=MAX_NOTE)] = ""


class CasePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: CaseStatus | None = None
    disposition: Disposition | None = Field(
        default=None, description="required when closing; confirmed / false_alarm also record alert feedback"
    )
    assignee: Text | None = None
    title: Text | None = None


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, Field(min_length=1, max_length=MAX_NOTE)]


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alert_ids: list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]] = Field(
        min_length=1, max_length=50
    )


class NoteOut(BaseModel):
    key_id: str
    time_ms: int
    text: str


class AuditOut(BaseModel):
    seq: str
    key_id: str = Field(description="id of the API key that made the change")
    time_ms: int
    action: str
    detail: dict[str, Any]


class CaseOut(BaseModel):
    id: str
    title: str
    status: CaseStatus
    disposition: Disposition | None
    assignee: str
    created_ms: int
    updated_ms: int
    created_by: str
    alert_ids: list[str]
    keys: list[str]
    max_severity: str
    notes: list[NoteOut]
    version: int
    audit: list[AuditOut] | None = None


class CasePage(BaseModel):
    items: list[CaseOut]
    next_cursor: str | None


def _out(c: Case, audit: list[AuditOut] | None = None) -> CaseOut:
    return CaseOut(
        id=c.id, title=c.title, status=c.status, disposition=c.disposition, assignee=c.assignee,
        created_ms=c.created_ms, updated_ms=c.updated_ms, created_by=c.created_by, alert_ids=list(c.alert_ids),
        keys=list(c.keys), max_severity=c.max_severity,
        notes=[NoteOut(key_id=n.key_id, time_ms=n.time_ms, text=n.text) for n in c.notes], version=c.version,
        audit=audit,
    )  # fmt: skip


def _fail(err: CaseError) -> HTTPException:
    return HTTPException(err.status, detail=err.message)


async def _alerts(ctx: Ctx, ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for aid in dict.fromkeys(ids):
        entry = await ctx.alert_log.get(aid)
        if entry is None:
            raise HTTPException(404, detail=f"no alert {aid}")
        out.append(entry.alert)
    return out


@router.post("/cases", operation_id="open_case", response_model=CaseOut, status_code=201, responses=CHANGES)
async def open_case(ctx: Ctx, who: Analyst, body: CaseIn) -> CaseOut:
    """Open a case on one or more alerts (an alert already in a case is refused with 409 naming that case)."""
    alerts = await _alerts(ctx, body.alert_ids)
    title = body.title or f"{alerts[0]['key']} {str(alerts[0]['anomaly_type']).replace('_', ' ')}"
    try:
        c = await desk_for(ctx).cases.open(who.key_id, title, alerts, body.assignee, body.note)
    except CaseError as err:
        raise _fail(err) from None
    return _out(c)


@router.get("/cases", operation_id="list_cases", response_model=CasePage, responses=AUTH_RESPONSES)
async def list_cases(
    ctx: Ctx,
    _: Reader,
    status: Annotated[list[CaseStatus] | None, Query(description="status (repeat for several)")] = None,
    assignee: Annotated[str | None, Query(max_length=200)] = None,
    key: Annotated[Name | None, Query(description="venue:symbol of a linked alert")] = None,
    alert_id: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
    since_ms: Annotated[int | None, Query(ge=0, le=10**14, description="changed at or after, ms UTC")] = None,
    cursor: Annotated[Seq | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CasePage:
    """Cases, newest first, filtered by status, assignee, market key, changed-since, or the alert they hold."""
    desk = desk_for(ctx)
    if alert_id is not None:
        cid = await desk.cases.case_of_alert(alert_id)
        c = await desk.cases.get(cid) if cid else None
        return CasePage(items=[_out(c)] if c else [], next_cursor=None)
    flt = CaseFilter(frozenset(s.value for s in status or ()), assignee, key, since_ms)
    items, nxt = await desk.cases.page(flt, cursor, limit)
    return CasePage(items=[_out(c) for c in items], next_cursor=nxt)


async def _case_with_audit(ctx: Ctx, case_id: str) -> CaseOut:
    desk = desk_for(ctx)
    c = await desk.cases.get(case_id)
    if c is None:
        raise HTTPException(404, detail=f"no case {case_id}")
    audit = [AuditOut(seq=r.seq, key_id=r.key_id, time_ms=r.time_ms, action=r.action, detail=r.detail)
             for r in await desk.cases.audit(case_id)]  # fmt: skip
    return _out(c, audit)


@router.get("/cases/{case_id}", operation_id="get_case", response_model=CaseOut, responses=NOT_FOUND)
async def get_case(ctx: Ctx, _: Reader, case_id: CaseId) -> CaseOut:
    """One case with its full audit trail, oldest change first."""
    return await _case_with_audit(ctx, case_id)


@router.patch("/cases/{case_id}", operation_id="update_case", response_model=CaseOut, responses=CHANGES)
async def update_case(ctx: Ctx, who: Analyst, case_id: CaseId, body: CasePatch) -> CaseOut:
    """Change status, assignee or title; closing needs a disposition, and a confirmed / false_alarm disposition is
    also recorded as feedback (confirm / dismiss) on every linked alert, as the alert feed's buttons do."""
    desk = desk_for(ctx)
    try:
        c = await desk.cases.update(
            case_id, who.key_id, status=body.status, disposition=body.disposition, assignee=body.assignee,
            title=body.title,
        )  # fmt: skip
    except CaseError as err:
        raise _fail(err) from None
    verdict = FEEDBACK_OF.get(c.disposition) if c.status == CaseStatus.CLOSED and c.disposition else None
    if verdict is not None and body.disposition is not None:
        for aid in c.alert_ids:
            entry = await ctx.alert_log.get(aid)
            if entry is not None:
                await ctx.feedback.record(entry, verdict, f"case {c.id} closed: {c.disposition}", who.key_id)
    return await _case_with_audit(ctx, case_id)


@router.post("/cases/{case_id}/notes", operation_id="add_case_note", response_model=CaseOut, responses=CHANGES)
async def add_note(ctx: Ctx, who: Analyst, case_id: CaseId, body: NoteIn) -> CaseOut:
    """Add a note (notes are part of the record: they are never edited or removed)."""
    try:
        await desk_for(ctx).cases.add_note(case_id, who.key_id, body.text)
    except CaseError as err:
        raise _fail(err) from None
    return await _case_with_audit(ctx, case_id)


@router.post("/cases/{case_id}/alerts", operation_id="link_case_alerts", response_model=CaseOut, responses=CHANGES)
async def link_alerts(ctx: Ctx, who: Analyst, case_id: CaseId, body: LinkIn) -> CaseOut:
    """Join alerts to the case."""
    alerts = await _alerts(ctx, body.alert_ids)
    try:
        await desk_for(ctx).cases.link(case_id, who.key_id, alerts)
    except CaseError as err:
        raise _fail(err) from None
    return await _case_with_audit(ctx, case_id)


@router.get(
    "/cases/{case_id}/report",
    operation_id="case_report",
    response_class=HTMLResponse,
    responses={**NOT_FOUND, 200: {"content": {"text/html": {}}, "description": "a self-contained HTML report"}},
)
async def case_report(ctx: Ctx, _: Reader, case_id: CaseId) -> HTMLResponse:
    """The case as one self-contained HTML file (charts as inline SVG; no scripts, no network)."""
    desk = desk_for(ctx)
    c = await desk.cases.get(case_id)
    if c is None:
        raise HTTPException(404, detail=f"no case {case_id}")
    alerts, evidence = [], {}
    for aid in c.alert_ids:
        entry = await ctx.alert_log.get(aid)
        if entry is None:
            continue
        alerts.append(entry.alert)
        evidence[aid] = await desk.evidence_of(entry.alert)
    page = render_case_report(c, await desk.cases.audit(case_id), alerts, evidence)
    return HTMLResponse(
        page, headers={"Content-Disposition": f'attachment; filename="{c.id}.html"', "Cache-Control": "no-store"}
    )


# ------------------------------------------------------------------------------------------------ evidence


class EvidenceOut(BaseModel):
    """Bars around the alert (phase before/during/after), score and threshold series, branch scores and weights,
    top features against normal, the rush's trades, and book snapshots for book-based rules; times ms UTC."""

    alert_id: str
    key: str
    anomaly_type: str
    severity: str
    score: float
    threshold: float
    model: str
    onset_ms: int
    alert_ms: int
    start_ms: int
    end_ms: int
    bar_ms: int
    captured_ms: int
    complete: bool
    case_id: str | None
    branches: list[dict[str, Any]]
    top_features: list[dict[str, Any]]
    bars: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    trades: list[dict[str, Any]]
    books: list[dict[str, Any]]
    notes: list[str]
    source: str = Field(description="worker: captured where the alert was decided; api: when the API logged it")


def _evidence_out(ev: Evidence, case_id: str | None) -> EvidenceOut:
    return EvidenceOut(**ev.to_dict(), case_id=case_id)


@router.get(
    "/alerts/{alert_id}/evidence",
    operation_id="get_alert_evidence",
    response_model=EvidenceOut,
    tags=["alerts"],
    responses={**AUTH_RESPONSES, 404: {"description": "no such alert"}},
)
async def alert_evidence(ctx: Ctx, _: Reader, alert_id: AlertId) -> EvidenceOut:
    """What the data looked like around one alert, as stored when the alert was logged."""
    entry = await ctx.alert_log.get(alert_id)
    if entry is None:
        raise HTTPException(404, detail=f"no alert {alert_id}")
    desk = desk_for(ctx)
    ev = await desk.evidence_of(entry.alert)
    return _evidence_out(ev, await desk.cases.case_of_alert(alert_id))


# ------------------------------------------------------------------------------------------------ simulator


class LabelOut(BaseModel):
    type: str
    key: str
    start_ms: int
    onset_ms: int
    end_ms: int
    status: str = Field(description="detected, missed, or pending (no alert yet, still inside the grace period)")
    alert_id: str | None
    alert_type: str | None
    delay_s: float | None = Field(description="alert window end minus the label's onset")


class ScoreboardOut(BaseModel):
    injected: int
    detected: int
    missed: int
    pending: int
    false_alarms: int
    median_delay_s: float | None
    labels: list[LabelOut]
    false_alarm_ids: list[str]


@router.get(
    "/simulator/scoreboard",
    operation_id="simulator_scoreboard",
    response_model=ScoreboardOut,
    tags=["simulator"],
    responses=AUTH_RESPONSES,
)
async def scoreboard(ctx: Ctx, _who: Reader, key: Annotated[Name | None, Query()] = None) -> ScoreboardOut:
    """In simulator mode: every injected anomaly, whether an alert caught it and how late, and the false alarms
    (empty outside simulator mode)."""
    labels = await read_labels(ctx.state, key)
    flt = AlertFilter(symbols=frozenset({key.split(":", 1)[-1]}) if key else frozenset())
    entries, _ = await ctx.alert_log.page(flt, None, 2000, scan_max=20_000)
    if key:
        entries = [e for e in entries if e.alert.get("key") == key]
    frontier: dict[str, int] = {}
    for k in {lab["key"] for lab in labels}:
        newest = await ctx.state.xrevrange(scores_stream(k), count=1)
        frontier[k] = int(orjson.loads(newest[0][1]["json"])["window_end_ms"]) if newest else 0
    results, false_alarms = score_board(labels, entries, frontier)
    delays = sorted(r.delay_s for r in results if r.delay_s is not None)
    return ScoreboardOut(
        injected=len(results),
        detected=sum(r.status == "detected" for r in results),
        missed=sum(r.status == "missed" for r in results),
        pending=sum(r.status == "pending" for r in results),
        false_alarms=len(false_alarms) if labels else 0,
        median_delay_s=delays[len(delays) // 2] if delays else None,
        labels=[
            LabelOut(
                **{k: r.label[k] for k in ("type", "key", "start_ms", "onset_ms", "end_ms")},
                status=r.status,
                alert_id=r.alert_id,
                alert_type=r.alert_type,
                delay_s=r.delay_s,
            )
            for r in results
        ],
        false_alarm_ids=[str(a["id"]) for a in false_alarms][:200] if labels else [],
    )
