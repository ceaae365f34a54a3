"""Cases and evidence over HTTP on the real Redis: scopes, the audit trail (append-only, with key ids), filters,
feedback as a case action, the self-contained HTML report, evidence captured when the alert is logged, and the
simulator scoreboard."""

from __future__ import annotations

import time
from typing import Any

import orjson

from service.api.simboard import LABELS_STREAM
from tests.api.conftest import Harness, make_alert, publish_alerts, wait_for


async def _logged(api: Harness, n: int, **kw: object) -> str:
    a = make_alert(n, **kw)  # type: ignore[arg-type]
    await api.ctx.alert_log.append(a)
    return a.id


async def test_scopes(api: Harness) -> None:
    c = api.client
    aid = await _logged(api, 1)
    assert (await c.post("/v1/cases", json={"alert_ids": [aid]})).status_code == 401
    assert (await c.post("/v1/cases", json={"alert_ids": [aid]}, headers=api.h("subscribe"))).status_code == 403
    assert (await c.post("/v1/cases", json={"alert_ids": [aid]}, headers=api.h("score"))).status_code == 403
    r = await c.post("/v1/cases", json={"alert_ids": [aid]}, headers=api.h("feedback"))
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert (await c.get(f"/v1/cases/{cid}", headers=api.h("subscribe"))).status_code == 200
    assert (await c.get(f"/v1/cases/{cid}", headers=api.h("score"))).status_code == 403
    patch = {"status": "investigating"}
    assert (await c.patch(f"/v1/cases/{cid}", json=patch, headers=api.h("subscribe"))).status_code == 403
    assert (await c.patch(f"/v1/cases/{cid}", json=patch, headers=api.h("admin"))).status_code == 200


async def test_case_lifecycle_audit_and_feedback(api: Harness) -> None:
    c, fb, adm = api.client, api.h("feedback"), api.h("admin")
    a1, a2 = await _logged(api, 1), await _logged(api, 2, symbol="DUMPUSDT")
    r = await c.post("/v1/cases", json={"alert_ids": [a1], "assignee": "ana", "note": "first look"}, headers=fb)
    case = r.json()
    cid = case["id"]
    assert case["status"] == "open" and case["alert_ids"] == [a1] and case["notes"][0]["text"] == "first look"
    # an alert already in a case cannot open another; an unknown alert is a 404; a bad field a 422 naming it
    r = await c.post("/v1/cases", json={"alert_ids": [a1]}, headers=fb)
    assert r.status_code == 409 and cid in r.json()["detail"]
    assert (await c.post("/v1/cases", json={"alert_ids": ["nope"]}, headers=fb)).status_code == 404
    r = await c.patch(f"/v1/cases/{cid}", json={"status": "sleeping"}, headers=fb)
    assert r.status_code == 422 and "body.status" in r.json()["fields"]
    r = await c.patch(f"/v1/cases/{cid}", json={"status": "closed"}, headers=fb)
    assert r.status_code == 422 and "disposition" in r.json()["detail"]
    # join, feedback from the alert feed (recorded in the case), note, escalate, close
    assert (await c.post(f"/v1/cases/{cid}/alerts", json={"alert_ids": [a2]}, headers=adm)).status_code == 200
    r = await c.post(f"/v1/alerts/{a2}/feedback", json={"verdict": "dismiss", "note": "dup"}, headers=fb)
    assert r.status_code == 201
    assert (await c.post(f"/v1/cases/{cid}/notes", json={"text": "volume x80"}, headers=fb)).status_code == 200
    assert (await c.patch(f"/v1/cases/{cid}", json={"status": "escalated"}, headers=adm)).status_code == 200
    r = await c.patch(f"/v1/cases/{cid}", json={"status": "closed", "disposition": "confirmed"}, headers=fb)
    case = r.json()
    assert case["status"] == "closed" and case["disposition"] == "confirmed"
    acts = [(x["action"], x["key_id"]) for x in case["audit"]]
    fb_id, adm_id = api.keys["feedback"].split("_")[1], api.keys["admin"].split("_")[1]
    assert [a for a, _ in acts] == ["opened", "alerts_linked", "alert_feedback", "note_added", "updated", "closed"]
    assert {k for _, k in acts} <= {fb_id, adm_id} and acts[1][1] == adm_id, acts
    assert case["audit"][2]["detail"] == {"alert_id": a2, "verdict": "dismiss", "note": "dup"}
    # closing as confirmed is feedback on every linked alert
    for aid in (a1, a2):
        rec = (await c.get(f"/v1/alerts/{aid}", headers=adm)).json()
        assert rec["feedback"]["verdict"] == "confirm" and cid in rec["feedback"]["note"]
    # the audit trail is append-only: no route changes or removes it, and reading it twice gives the same
    before = (await c.get(f"/v1/cases/{cid}", headers=adm)).json()["audit"]
    for method in ("put", "delete", "patch"):
        r = await c.request(method.upper(), f"/v1/cases/{cid}/audit", headers=adm)
        assert r.status_code in (404, 405)
    assert (await c.delete(f"/v1/cases/{cid}", headers=adm)).status_code == 405
    assert (await c.get(f"/v1/cases/{cid}", headers=adm)).json()["audit"] == before
    assert all(isinstance(x["time_ms"], int) and x["seq"] for x in before)


async def test_list_filters(api: Harness) -> None:
    c, fb = api.client, api.h("feedback")
    ids = []
    for i in range(5):
        aid = await _logged(api, i, symbol="AAA" if i % 2 else "BBB")
        r = await c.post("/v1/cases", json={"alert_ids": [aid], "assignee": "ana" if i < 2 else "bo"}, headers=fb)
        ids.append(r.json()["id"])
    await c.patch(f"/v1/cases/{ids[0]}", json={"status": "closed", "disposition": "false_alarm"}, headers=fb)

    async def listed(q: str) -> list[str]:
        r = await c.get(f"/v1/cases?{q}", headers=api.h("subscribe"))
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert await listed("") == ids[::-1]
    assert await listed("status=closed") == [ids[0]]
    assert await listed("status=open&status=investigating") == ids[:0:-1]
    assert await listed("assignee=ana") == [ids[1], ids[0]]
    assert await listed("key=sim:AAA") == [ids[3], ids[1]]
    assert await listed(f"alert_id={make_alert(3, symbol='AAA').id}") == [ids[3]]
    page = (await c.get("/v1/cases?limit=2", headers=api.h("subscribe"))).json()
    nxt = (await c.get(f"/v1/cases?limit=10&cursor={page['next_cursor']}", headers=api.h("subscribe"))).json()
    assert [x["id"] for x in page["items"] + nxt["items"]] == ids[::-1]
    r = await c.get("/v1/cases?status=lost", headers=api.h("subscribe"))
    assert r.status_code == 422 and "query.status.0" in r.json()["fields"]


async def test_evidence_captured_when_logged_and_report_is_self_contained(api: Harness) -> None:
    st, key = api.runtime.state, "sim:PUMPUSDT"
    alert = make_alert(50)
    end = alert.window_end_ms
    for i in range(-120, 20):  # 1 s tape bars and 5 s scores around the alert, as the api's followers write them
        t = end + i * 1000
        await st.xadd(f"tape:{key}", {"t": t, "o": 1.0, "h": 1.2, "l": 0.9, "c": 1.0 + (i > -10), "v": 3.0})
        if i % 5 == 0:
            fused = 30.0 if -10 <= i <= 0 else 1.0
            score = {"window_end_ms": t, "fused": fused, "threshold": 20.0, "key": key}
            await st.xadd(f"scores:{key}", {"json": orjson.dumps(score)})
    await publish_alerts(api.runtime, [alert])
    await wait_for(lambda: st.get(f"evidence:{alert.id}"), timeout=10)
    await st.delete(f"tape:{key}", f"scores:{key}")  # the raw series expire: the stored evidence stays
    r = await api.client.get(f"/v1/alerts/{alert.id}/evidence", headers=api.h("subscribe"))
    assert r.status_code == 200, r.text
    ev = r.json()
    assert ev["onset_ms"] == end - 10_000 and ev["alert_ms"] == end and ev["complete"]
    phases = {b["phase"] for b in ev["bars"]}
    assert phases == {"before", "during", "after"}
    assert max(s["fused"] for s in ev["scores"]) == 30.0 and ev["scores"][0]["threshold"] == 20.0
    assert {b["name"]: b["weight"] for b in ev["branches"]} == {"md": 0.2, "trans": 0.5, "clust": 0.3}
    assert ev["top_features"][0]["name"] == "ret_1" and ev["case_id"] is None
    assert (await api.client.get("/v1/alerts/nope/evidence", headers=api.h("subscribe"))).status_code == 404
    assert (await api.client.get(f"/v1/alerts/{alert.id}/evidence", headers=api.h("score"))).status_code == 403

    r = await api.client.post("/v1/cases", json={"alert_ids": [alert.id]}, headers=api.h("feedback"))
    cid = r.json()["id"]
    await api.client.post(f"/v1/cases/{cid}/notes", json={"text": "<script>x</script>"}, headers=api.h("feedback"))
    r = await api.client.get(f"/v1/cases/{cid}/report", headers=api.h("subscribe"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page.count("<svg") == 2 and "onset" in page and "UTC" in page and alert.explanation in page
    assert "<script" not in page and "&lt;script&gt;" in page  # notes are escaped, the report has no scripts
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "src=" not in page and "<link" not in page


async def test_scoreboard(api: Harness) -> None:
    st = api.runtime.state
    now = int(time.time() * 1000)
    labels = [
        {"type": "pump_and_dump", "key": "sim:PUMPUSDT", "start_ms": now - 600_000, "onset_ms": now - 500_000,
         "end_ms": now - 400_000},
        {"type": "flash_crash", "key": "sim:ETH", "start_ms": now - 900_000, "onset_ms": now - 890_000,
         "end_ms": now - 800_000},
        {"type": "depeg", "key": "sim:USDC", "start_ms": now - 30_000, "onset_ms": now - 20_000, "end_ms": now},
        # injected an hour ago in simulated time (the backfill), not yet reached by the worker: pending
        {"type": "pump_and_dump", "key": "sim:BACK", "start_ms": now - 3_600_000, "onset_ms": now - 3_590_000,
         "end_ms": now - 3_500_000},
    ]  # fmt: skip
    for lab in labels + labels[:1]:  # delivered twice: counted once
        await st.xadd(LABELS_STREAM, {"json": orjson.dumps(lab)})
    hit = make_alert(1, created_ms=now)
    hit = hit.model_copy(update={"window_end_ms": now - 470_000, "id": "hit1"})
    stray = make_alert(2).model_copy(update={"window_end_ms": now - 100_000, "id": "stray1"})
    for a in (hit, stray):
        await api.ctx.alert_log.append(a)
    for key in ("sim:PUMPUSDT", "sim:ETH", "sim:USDC"):  # the worker has judged each key up to now
        await st.xadd(f"scores:{key}", {"json": orjson.dumps({"window_end_ms": now, "key": key})})
    r = await api.client.get("/v1/simulator/scoreboard", headers=api.h("subscribe"))
    b = r.json()
    assert (b["injected"], b["detected"], b["missed"], b["pending"]) == (4, 1, 1, 2), b
    assert b["false_alarms"] == 1 and b["false_alarm_ids"] == ["stray1"] and b["median_delay_s"] == 30.0
    assert {x["status"] for x in b["labels"]} == {"detected", "missed", "pending"}
    one = (await api.client.get("/v1/simulator/scoreboard?key=sim:PUMPUSDT", headers=api.h("subscribe"))).json()
    assert one["injected"] == 1 and one["labels"][0]["alert_id"] == "hit1"


async def test_spoofing_alert_evidence_has_the_book_walls(api: Harness) -> None:
    from decimal import Decimal

    from service.schemas.market import BookTop, encode
    from service.schemas.scoring import AnomalyType

    alert = make_alert(70, anomaly=AnomalyType.SPOOFING_LIKE)
    end = alert.window_end_ms
    producer = api.runtime.bus.producer()
    await producer.start()
    try:
        for i in range(-30, 1):  # one book a second; a 900-lot bid wall two ticks down while i is even
            wall = Decimal(900 if i % 2 == 0 else 3)
            book = BookTop(
                venue="sim", symbol="PUMPUSDT", event_time_ms=end + i * 1000, ingest_time_ms=end + i * 1000,
                update_id=i + 100, best_bid=Decimal("1.00"), best_ask=Decimal("1.01"), bid_size=Decimal(2),
                ask_size=Decimal(3), bids=[(Decimal("1.00"), Decimal(2)), (Decimal("0.98"), wall)],
                asks=[(Decimal("1.01"), Decimal(3))], imbalance=0.5,
            )  # fmt: skip
            await producer.send(api.settings.topic_books, encode(book), key=b"sim:PUMPUSDT")
        await producer.flush()
    finally:
        await producer.stop()
    books = context_books(api)
    await wait_for(lambda: len(books.between("sim:PUMPUSDT", end - 60_000, end)) == 31, timeout=10)
    await publish_alerts(api.runtime, [alert])
    await wait_for(lambda: api.runtime.state.get(f"evidence:{alert.id}"), timeout=10)
    ev = (await api.client.get(f"/v1/alerts/{alert.id}/evidence", headers=api.h("subscribe"))).json()
    walls = [b["wall_bid_size"] for b in ev["books"]]
    assert walls.count(900.0) >= 10 and 3.0 in walls and ev["books"][0]["wall_bid"] == 0.98
    assert not ev["notes"]


def context_books(api: Harness) -> Any:
    from service.api.desk import desk_for

    return desk_for(api.ctx).books


async def test_incomplete_evidence_is_completed_without_a_reader(api: Harness) -> None:
    from service.api.desk import desk_for

    st, key = api.runtime.state, "sim:PUMPUSDT"
    now = int(time.time() * 1000)
    end = now - now % 5000
    alert = make_alert(90).model_copy(update={"window_end_ms": end, "created_ms": end, "id": "fresh1"})
    await api.ctx.alert_log.append(alert)
    for i in range(-60, 1):
        await st.xadd(f"tape:{key}", {"t": end + i * 1000, "o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 1.0})
    desk = desk_for(api.ctx)
    ev = await desk.capture(orjson.loads(alert.model_dump_json()))
    assert not ev.complete and "fresh1" in desk.incomplete  # nothing after the alert yet
    assert await desk.complete_due() == 0
    for i in range(1, 200):  # what followed, as the tape follower writes it
        await st.xadd(f"tape:{key}", {"t": end + i * 1000, "o": 1.0, "h": 2.0, "l": 1.0, "c": 2.0, "v": 1.0})
    assert await desk.complete_due() == 1 and "fresh1" not in desk.incomplete
    stored = await desk.evidence.get("fresh1")
    assert stored is not None and stored.complete and any(b.phase == "after" for b in stored.bars)
