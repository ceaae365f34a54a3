"""The dashboard: the page and its static files; and a headless-Chromium test of the whole path: the simulator
feeds a pump-and-dump, the worker scores it with a small contract model, the alert reaches the dashboard's feed
and is marked on its price chart, an analyst confirms it with the button, and a screenshot is saved."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

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
    for element in ('id="price"', 'id="score"', 'id="alerts"', 'id="health"', "/static/app.js"):
        assert element in r.text
    js = await c.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "/v1/alerts/stream" in js.text
    assert (await c.get("/static/style.css")).status_code == 200
    assert (await c.get("/static/../app.py")).status_code == 404
    assert (await c.get("/static/secrets.txt")).status_code == 404
    assert "/" not in (await c.get("/openapi.json")).json()["paths"], "the page is not part of the API schema"


@pytest.mark.slow
@pytest.mark.integration
async def test_browser_sees_the_pump_alert_in_feed_and_chart(redis_url: str, unique: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    playwright = pytest.importorskip("playwright.async_api")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from service.ingest.simulator import SimConfig, SimulatorSource
    from service.scoring.worker import ScoringWorker
    from tests.scoring.modelgen import export_tiny_model

    models = tmp_path / "models"
    # the contract model scores how far a window's features are from zero; 16 sits above every quiet key of this
    # seeded market (max ~14) and below the pump's peak (~20): the threshold a calibration would pick
    export_tiny_model(models, name="market", version="v1", window=8, alert=16.0, created_ms=1)
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
        )
        sources.append(src)
        runtime.components.insert(0, src)
        runtime.components.insert(1, ScoringWorker(settings, runtime.bus, runtime.state))

    async with harness(settings, serve=True, before_start=extra) as h:
        async with playwright.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = await browser.new_page(viewport={"width": 1500, "height": 950})
                await page.goto(f"{h.base_url}/#key={h.keys['admin']}")
                await page.wait_for_selector(".alert-item", timeout=150_000)
                item = page.locator(".alert-item").first
                text = await item.inner_text()
                # the alert is on the instrument the simulator pumped, inside the labelled anomaly; its type
                # (pump vs the dump's crash) is the worker's reading of whichever phase crossed the threshold first
                assert "sim-binance:ALT1BTC" in text and ("pump and dump" in text or "crash" in text), text
                assert "risk score" in text  # the explanation is shown
                sim = sources[0].sim
                assert sim is not None
                labels = [lb for lb in sim.new_labels(0) if lb.key == "sim-binance:ALT1BTC"]
                logged, _ = await h.ctx.alert_log.page(AlertFilter(symbols=frozenset({"ALT1BTC"})), None, 5, 100)
                end = int(logged[-1].alert["window_end_ms"])
                assert labels and any(lb.start_ms <= end <= lb.end_ms + 60_000 for lb in labels), (end, labels)
                # marked on the chart: the page switched to the alert's symbol and drew a marker on its prices
                await page.wait_for_function(
                    "Number(document.querySelector('#price').dataset.markers) > 0", timeout=30_000
                )
                assert await page.locator("#symbol").input_value() == "sim-binance:ALT1BTC"
                await page.wait_for_function(
                    "document.querySelector('#health').innerText.includes('market v1')", timeout=15_000
                )
                # the analyst confirms it
                await item.locator("button.fb-confirm").click()
                await page.wait_for_function(
                    "document.querySelector('.alert-item .fb').innerText.includes('confirm')", timeout=10_000
                )
                await asyncio.sleep(1.5)  # one more chart refresh so the screenshot shows score and threshold
                shot = tmp_path / "dashboard.png"
                await page.screenshot(path=str(shot), full_page=True)
                print(f"dashboard screenshot: {shot}")
                assert shot.stat().st_size > 10_000
            finally:
                await browser.close()
        entries, _ = await h.ctx.alert_log.page(AlertFilter(symbols=frozenset({"ALT1BTC"})), None, 1, 100)
        fb = await h.ctx.feedback.latest(str(entries[0].alert["id"]))
        assert fb is not None and fb.verdict == "confirm" and fb.key_id != ""
