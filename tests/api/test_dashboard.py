"""The dashboard: the page and its static files; and a headless-Chromium test of the analyst's whole path: the
simulator feeds a pump-and-dump, the worker scores it with a small contract model, the alert reaches the feed and
is marked on its price chart beside the shaded injected span, the analyst opens its evidence (onset and alert
marked), opens a case, adds a note and closes it; a screenshot of each step is saved under the test's tmp_path."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.api.alertlog import AlertFilter
from service.runtime import Runtime
from tests.api.conftest import Harness, api_settings, harness

CHROMIUM = shutil.which("chromium")  # Debian's package: /usr/bin/chromium
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


async def test_page_and_static_files(api: Harness) -> None:
    c = api.client
    r = await c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for element in (
        'id="price"',
        'id="score"',
        'id="alerts"',
        'id="health"',
        'id="cases"',
        'id="evidence"',
        "/static/app.js",
    ):
        assert element in r.text
    js = await c.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "/v1/alerts/stream" in js.text
    assert (await c.get("/static/style.css")).status_code == 200
    assert (await c.get("/static/../app.py")).status_code == 404
    assert (await c.get("/static/secrets.txt")).status_code == 404
    assert "/" not in (await c.get("/openapi.json")).json()["paths"], "the page is not part of the API schema"


KEYS = ("sim-binance:ALT1BTC", "sim-binance:BTCUSDT")


def _calibrate() -> tuple[list[float], list[float]]:
    """Median and a robust spread of every market feature over a quiet simulated half hour (both instruments)."""
    import numpy as np

    from service.features.bars import bars_from_trades
    from service.features.market import MarketFeatureState
    from service.ingest.simulator import DEFAULT_INSTRUMENTS, MarketSimulator, SimConfig, SimTrade

    insts = tuple(i for i in DEFAULT_INSTRUMENTS if i.key in KEYS)
    cfg = SimConfig(seed=11, duration_s=1800, anomalies=(), instruments=insts, emit_books=False, emit_bars=False,
                    rate_scale=0.5)  # fmt: skip
    trades: dict[str, list[SimTrade]] = {}
    for ev in MarketSimulator(cfg).events():
        if isinstance(ev, SimTrade):
            trades.setdefault(f"{ev.venue}:{ev.symbol}", []).append(ev)
    rows = []
    for ts in trades.values():
        bars = bars_from_trades(
            [t.ts_ms for t in ts], [float(t.price) for t in ts], [float(t.size) for t in ts],
            [t.side == "buy" for t in ts], 5000,
        )  # fmt: skip
        rows.append(MarketFeatureState().update_many(bars)[12:])  # the live test scores after 12 warm-up bars
    x = np.concatenate(rows).astype(np.float64)
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    scale = np.maximum.reduce([(q75 - q25) / 1.349, 0.5 * x.std(axis=0), np.full(x.shape[1], 1e-3)])
    return [float(v) for v in np.median(x, axis=0)], [float(v) for v in scale]


@pytest.mark.slow
@pytest.mark.integration
async def test_browser_desk_pump_alert_evidence_and_case(redis_url: str, unique: str, tmp_path: Path) -> None:
    """The analyst's path through the demo: the first injected pump's alert in the feed and on the chart, its
    evidence (onset and alert marked), a case opened on it, a note, the case closed; a screenshot of each step."""
    pytest.importorskip("torch")
    playwright = pytest.importorskip("playwright.async_api")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from harness.modelgen import export_tiny_model
    from service.ingest.simulator import SimConfig, SimulatorSource
    from service.scoring.worker import ScoringWorker

    models = tmp_path / "models"
    # the contract model scores how far a window's (robust-scaled) features are from the median; the scaling is
    # fitted here on 30 simulated minutes without anomalies, as training would, so a quiet window scores ~1-25
    # and the pump's rush ~100+; 60 sits between them
    center, scale = _calibrate()
    export_tiny_model(
        models, name="market", version="v1", window=8, alert=60.0, created_ms=1, center=center, scale=scale
    )
    settings = api_settings(
        redis_url,
        unique,
        model_dir=str(models),
        sim_speed=40.0,
        sim_backfill_s=400,
        sim_first_anomaly_s=60,
        sim_anomaly_time_scale=0.15,
        sim_rate_scale=0.5,
        scoring_warmup_bars=12,
        api_stream_heartbeat_s=5.0,
        ingest_source="simulator",  # the api then follows the simulator's labels (shaded spans, scoreboard)
    )

    sources: list[SimulatorSource] = []

    def extra(runtime: Runtime) -> None:
        src = SimulatorSource(runtime.bus, settings)
        c = src.cfg
        src.cfg = SimConfig(
            seed=c.seed,
            start_ms=c.start_ms,
            duration_s=None,
            first_anomaly_s=c.first_anomaly_s,
            anomaly_every_s=c.anomaly_every_s,
            anomaly_time_scale=c.anomaly_time_scale,
            rate_scale=c.rate_scale,
            anomaly_kinds=("pump_and_dump",),
            # the pump's target and one quiet major: the small test model is no detector of every anomaly, and
            # fewer instruments keep the simulator fast on a busy machine
            instruments=tuple(i for i in c.instruments if i.key in KEYS),
        )
        sources.append(src)
        runtime.components.insert(0, src)
        runtime.components.insert(1, ScoringWorker(settings, runtime.bus, runtime.state))

    shots = tmp_path / "shots"
    shots.mkdir()

    async def shot(page: Any, name: str) -> None:
        path = shots / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        print(f"screenshot: {path}")

    async with harness(settings, serve=True, before_start=extra) as h:
        async with playwright.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                context = await browser.new_context(viewport={"width": 1500, "height": 950})
                page = await context.new_page()
                await page.goto(f"{h.base_url}/#key={h.keys['admin']}")
                item = page.locator(".alert-item", has_text="sim-binance:ALT1BTC").first
                await item.wait_for(timeout=150_000)
                text = await item.inner_text()
                # the alert is on the instrument the simulator pumped, inside the labelled anomaly; its type
                # (pump vs the dump's crash) is the worker's reading of whichever phase crossed the threshold first
                assert "sim-binance:ALT1BTC" in text and ("pump and dump" in text or "crash" in text), text
                assert "risk score" in text and "UTC" in text  # the explanation is shown; times say their zone
                sim = sources[0].sim
                assert sim is not None
                labels = [lb for lb in sim.new_labels(0) if lb.key == "sim-binance:ALT1BTC"]
                logged, _ = await h.ctx.alert_log.page(AlertFilter(symbols=frozenset({"ALT1BTC"})), None, 5, 100)
                first = logged[-1].alert
                end = int(first["window_end_ms"])
                assert labels and any(lb.start_ms <= end <= lb.end_ms + 60_000 for lb in labels), (end, labels)
                # the dashboard switched to the pumped symbol by itself, puts it in the URL, marks the alert on
                # its prices and shades the injected anomaly (the simulator's label)
                await page.wait_for_function(
                    "Number(document.querySelector('#price').dataset.markers) > 0"
                    " && Number(document.querySelector('#price').dataset.spans) > 0",
                    timeout=30_000,
                )
                assert await page.locator("#symbol").input_value() == "sim-binance:ALT1BTC"
                assert "symbol=sim-binance%3AALT1BTC" in page.url
                await page.wait_for_function(
                    "document.querySelector('#health').innerText.includes('market v1')", timeout=15_000
                )
                await page.wait_for_function(
                    "document.querySelector('#scoreboard').innerText.includes('detected 1')", timeout=20_000
                )
                # health states mean what they say: nothing red while the simulator backfills normally
                assert await page.locator("#health .tile.bad").count() == 0, await page.locator("#health").inner_text()
                # one time window for both charts: panning back leaves live, "live" returns to it
                await page.locator("#pan-back").click()
                assert "on" not in (await page.locator("#live").get_attribute("class") or "")
                await page.locator("#live").click()
                assert "on" in (await page.locator("#live").get_attribute("class") or "")
                await asyncio.sleep(1.5)  # one more chart refresh so the screenshot shows score and threshold
                await shot(page, "01-dashboard")
                # the alert opens into its evidence: its own chart, zoomed on the event, onset and alert marked
                await page.locator(f".alert-item[data-alert-id='{first['id']}'] .head").click()
                await page.locator("#evidence").wait_for(state="visible", timeout=10_000)
                await page.wait_for_function("Number(document.querySelector('#ev-chart').dataset.onset) > 0")
                onset = int(await page.locator("#ev-chart").get_attribute("data-onset") or 0)
                marked_alert = int(await page.locator("#ev-chart").get_attribute("data-alert") or 0)
                assert marked_alert == end and onset <= end, (onset, end)
                assert "onset" in await page.locator("#ev-summary").inner_text()
                assert "pump" in await page.locator("#ev-title").inner_text() or "crash" in text
                await shot(page, "02-evidence")
                # a case: open, note, close
                await page.locator("#open-case").click()
                await page.wait_for_function(
                    "document.querySelector('#case-status').innerText.startsWith('open')", timeout=10_000
                )
                await shot(page, "03-case-opened")
                note = "volume x80 in 20 s, buyers sweep the book; matches the known pump pattern"
                await page.locator("#case-note").fill(note)
                await page.locator("#add-note").click()
                await page.wait_for_function(
                    "document.querySelector('#case-audit').innerText.includes('note added')", timeout=10_000
                )
                await shot(page, "04-note-added")
                await page.locator("#case-disposition").select_option("confirmed")
                await page.locator("#close-case").click()
                await page.wait_for_function(
                    "document.querySelector('#case-status').innerText.startsWith('closed')", timeout=10_000
                )
                await shot(page, "05-case-closed")
                await page.locator("#ev-close").click()
                await page.wait_for_function(
                    "document.querySelector('#cases').innerText.includes('closed')", timeout=10_000
                )
                await shot(page, "06-case-queue")
                # the symbol travels in the URL: a link opens the same market
                other = await context.new_page()  # same browser profile: the key is remembered
                await other.goto(f"{h.base_url}/#symbol=sim-binance:BTCUSDT")
                await other.wait_for_function("document.querySelector('#symbol').value === 'sim-binance:BTCUSDT'")
                await other.close()
                # the exported report: one file, charts inline, readable offline
                cases = (await h.client.get("/v1/cases", headers=h.h("subscribe"))).json()["items"]
                r = await h.client.get(f"/v1/cases/{cases[0]['id']}/report", headers=h.h("subscribe"))
                report = tmp_path / "case-report.html"
                report.write_text(r.text, encoding="utf-8")
                await page.route(re.compile(r"^https?://"), lambda route: route.abort())  # it must need no network
                await page.goto(report.as_uri())
                assert await page.locator("svg").count() == 2
                await shot(page, "07-case-report")
            finally:
                await browser.close()
        # what the clicks did, as the API records it: the case, its audit trail by the admin key, the feedback
        r = await h.client.get(f"/v1/cases?alert_id={first['id']}", headers=h.h("subscribe"))
        case = r.json()["items"][0]
        assert case["status"] == "closed" and case["disposition"] == "confirmed" and case["notes"][0]["text"] == note
        full = (await h.client.get(f"/v1/cases/{case['id']}", headers=h.h("subscribe"))).json()
        admin_id = h.keys["admin"].split("_")[1]
        assert [(a["action"], a["key_id"]) for a in full["audit"]] == [
            ("opened", admin_id),
            ("note_added", admin_id),
            ("closed", admin_id),
        ]
        # the evidence was stored by the worker where it decided the alert, before the alert went out
        ev = (await h.client.get(f"/v1/alerts/{first['id']}/evidence", headers=h.h("subscribe"))).json()
        assert ev["source"] == "worker" and ev["trades"] and ev["scores"], {k: ev[k] for k in ("source", "notes")}
        fb = await h.ctx.feedback.latest(str(first["id"]))
        assert fb is not None and fb.verdict == "confirm" and fb.key_id == admin_id
