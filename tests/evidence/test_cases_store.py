"""Cases in the state store (Redis and in-process): changes with their audit records, one atomic step each."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from service.api.cases import MAX_AUDIT, CaseError, CaseFilter, CaseStatus, CaseStore, Disposition
from service.state.base import StateStore


def _a(n: int, sev: str = "high", key: str = "sim:X") -> dict[str, object]:
    return {"id": f"al{n}", "key": key, "severity": sev}


async def test_open_change_close_with_audit(state: StateStore) -> None:
    cs = CaseStore(state)
    c = await cs.open("k1", "pump on X", [_a(1, "medium")], assignee="ana", note="looks real")
    assert c.status == CaseStatus.OPEN and c.alert_ids == ("al1",) and c.max_severity == "medium"
    assert await cs.case_of_alert("al1") == c.id
    c = await cs.link(c.id, "k2", [_a(2, "critical", "sim:Y")])
    assert c.alert_ids == ("al1", "al2") and c.keys == ("sim:X", "sim:Y") and c.max_severity == "critical"
    c = await cs.update(c.id, "k2", status=CaseStatus.INVESTIGATING)
    c = await cs.add_note(c.id, "k1", "volume x80 in 20 s")
    with pytest.raises(CaseError) as e:
        await cs.update(c.id, "k1", status=CaseStatus.CLOSED)
    assert e.value.status == 422
    c = await cs.update(c.id, "k1", status=CaseStatus.CLOSED, disposition=Disposition.CONFIRMED)
    assert c.disposition == Disposition.CONFIRMED and len(c.notes) == 2
    audit = await cs.audit(c.id)
    assert [r.action for r in audit] == ["opened", "alerts_linked", "updated", "note_added", "closed"]
    assert [r.key_id for r in audit] == ["k1", "k2", "k2", "k1", "k1"]
    assert audit[-1].detail["status"] == {"from": "investigating", "to": "closed"}
    assert all(a.time_ms <= b.time_ms for a, b in itertools.pairwise(audit))
    assert c.version == len(audit)
    c = await cs.update(c.id, "k3", status=CaseStatus.OPEN)
    assert c.disposition is None and (await cs.audit(c.id))[-1].action == "reopened"


async def test_an_alert_joins_one_case_only(state: StateStore) -> None:
    cs = CaseStore(state)
    c1 = await cs.open("k", "one", [_a(1)])
    with pytest.raises(CaseError) as e:
        await cs.open("k", "two", [_a(2), _a(1)])
    assert e.value.status == 409 and c1.id in e.value.message and "al1" in e.value.message
    assert await cs.case_of_alert("al2") is None  # the refused case linked nothing
    page, _ = await cs.page(CaseFilter(), None, 10)
    assert [c.id for c in page] == [c1.id]


async def test_concurrent_changes_are_refused_not_lost(state: StateStore) -> None:
    cs = CaseStore(state)
    c = await cs.open("k", "race", [_a(1)])
    results = await asyncio.gather(*(cs.add_note(c.id, f"k{i}", f"n{i}") for i in range(8)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, CaseError)]
    assert ok and len(ok) + len(refused) == 8 and all(r.status == 409 for r in refused)
    final = await cs.get(c.id)
    assert final is not None and len(final.notes) == len(ok)
    assert len(await cs.audit(c.id)) == 1 + len(ok)  # one record per stored change, none for a refused one


async def test_list_filters_and_pages(state: StateStore) -> None:
    cs = CaseStore(state)
    ids = []
    for i in range(7):
        c = await cs.open("k", f"c{i}", [_a(i, key="sim:A" if i % 2 else "sim:B")], assignee="ana" if i < 3 else "")
        ids.append(c.id)
    await cs.update(ids[0], "k", status=CaseStatus.ESCALATED)
    page, cur = await cs.page(CaseFilter(), None, 4)
    assert [c.id for c in page] == ids[::-1][:4] and cur is not None
    rest, cur2 = await cs.page(CaseFilter(), cur, 4)
    assert [c.id for c in rest] == ids[::-1][4:] and cur2 is None
    assert [c.id for c in (await cs.page(CaseFilter(key="sim:A"), None, 10))[0]] == [ids[5], ids[3], ids[1]]
    assert [c.id for c in (await cs.page(CaseFilter(assignee="ana"), None, 10))[0]] == ids[2::-1]
    esc = (await cs.page(CaseFilter(statuses=frozenset({"escalated"})), None, 10))[0]
    assert [c.id for c in esc] == [ids[0]]


async def test_audit_is_bounded(state: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.api.cases as cases

    monkeypatch.setattr(cases, "MAX_AUDIT", 3)
    cs = CaseStore(state)
    c = await cs.open("k", "x", [_a(1)])
    await cs.add_note(c.id, "k", "1")
    await cs.add_note(c.id, "k", "2")
    with pytest.raises(CaseError) as e:
        await cs.add_note(c.id, "k", "3")
    assert e.value.status == 409 and "3 changes" in e.value.message
    assert len(await cs.audit(c.id)) == 3 and MAX_AUDIT > 3
