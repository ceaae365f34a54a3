"""`rmad score`: score a recorded file offline with the streaming worker's own bar, window and ONNX code.

    rmad score --model market --input ../shared/data/binance-pump-trades/trades/OAX_2020-01-02_17.00.csv.gz \
        --format binance-trades-csv --output oax.csv

Why the same code: an analyst checking an alert, or an evaluation of a model, must see the numbers the live
worker produced. Events go through `windows.apply_event` and `Scorer.score_windows`, every window through the
scoring core's `decide` (service/scoring/decision.py), against the manifest's seed centres (the worker matches
this exactly when run with RMAD_CENTRES_ONLINE=false; with online centres only the clustering branch drifts).
The file is read as a stream, so memory stays flat whatever its size. Alerts are printed, one line each; OUT.csv
gets every window.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from service.schemas.market import Bar as MarketBar
from service.schemas.scoring import Alert
from service.scoring.alerts import AlertPolicy, KeyAlertState
from service.scoring.crossvenue import CrossVenueMonitor
from service.scoring.decision import Decision, ModelFacts, decide
from service.scoring.registry import LoadedModel, ModelRegistry
from service.scoring.scorer import Scorer
from service.scoring.session import SessionOptions
from service.scoring.windows import ClosedWindow, WindowStore, apply_event, market_bar_to_feature_bar

FORMATS = ("binance-trades-csv", "binance-kline-csv", "freqtrade-json", "feather", "nab-csv", "events-jsonl")
COLUMNS = ("timestamp", "key", "score", "threshold", "is_alert", "alert_type")


@dataclass(frozen=True, slots=True)
class OfflineRow:
    timestamp: int  # window end, ms UTC
    key: str
    score: float
    threshold: float
    is_alert: bool
    alert_type: str
    incomplete: bool
    decision: Decision | None = None  # the scoring core's whole decision (service/scoring/decision.py)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name under the model directory (e.g. market)")
    p.add_argument("--input", required=True, type=Path, help="recorded file")
    p.add_argument("--format", choices=FORMATS, default=None, help="file format (default: guessed from the name)")
    p.add_argument("--output", required=True, type=Path, help="CSV of every scored window")
    p.add_argument("--model-dir", type=Path, default=None, help="default RMAD_MODEL_DIR (models/artifacts)")
    p.add_argument("--symbol", default=None, help="only this symbol (files with several), or the bars' symbol")
    p.add_argument("--batch-size", type=int, default=1024, help="windows per inference call")
    p.add_argument("--warmup-bars", type=int, default=None, help="default RMAD_SCORING_WARMUP_BARS / feature spec")
    p.add_argument("--quiet", action="store_true", help="do not print alerts")


def score_events(
    events: Iterator[object],
    model: LoadedModel,
    scorer: Scorer,
    *,
    policy: AlertPolicy,
    bar_interval_ms: int | None = None,
    warmup_bars: int | None = None,
    allowed_lateness_ms: int = 0,
    batch_size: int = 1024,
    top_features: int = 3,
    crossvenue: CrossVenueMonitor | None = None,
) -> Iterator[tuple[OfflineRow, Alert | None]]:
    """Windows of an event stream, scored in batches; yields (row, alert or None) in window order per key."""
    m = model.artifact.manifest
    events = iter(events)
    first = next(events, None)
    interval = bar_interval_ms or round(m.bar_interval_s * 1000)
    if bar_interval_ms is None and isinstance(first, MarketBar):
        # a file of candles: its own interval (feature windows are counted in bars, so one spec serves 5 s trade
        # bars and 1 m klines alike; the model's threshold was calibrated on its training bars, though)
        interval = market_bar_to_feature_bar(first).interval_ms
    if first is not None:
        events = itertools.chain([first], events)
    store = WindowStore(
        m.window,
        m.n_features,
        interval,
        allowed_lateness_ms=allowed_lateness_ms,
        warmup_bars=warmup_bars,
        idle_eviction_s=float("inf"),
    )
    states: dict[str, KeyAlertState] = {}
    pending: list[ClosedWindow] = []
    facts = ModelFacts.of(model)

    def run(batch: list[ClosedWindow]) -> Iterator[tuple[OfflineRow, Alert | None]]:
        results = scorer.score_windows(m.name, [w.features for w in batch], model=model)
        now_ms = int(time.time() * 1000)
        for w, r in zip(batch, results, strict=True):
            if crossvenue is not None:
                crossvenue.observe(w.key, w.window_end_ms, w.close)
            d = decide(
                r,
                w.features,
                facts,
                key=w.key,
                window_end_ms=w.window_end_ms,
                now_ms=now_ms,
                incomplete=w.incomplete,
                state=states.get(w.key) or KeyAlertState(),
                policy=policy,
                dislocated=crossvenue is not None and crossvenue.is_dislocated(w.key, w.window_end_ms),
                n_features=top_features,
            )
            assert d.state is not None
            states[w.key] = d.state
            alert = d.alert
            row = OfflineRow(
                w.window_end_ms,
                w.key,
                r.fused,
                r.threshold,
                alert is not None,
                alert.anomaly_type.value if alert is not None else "",
                w.incomplete,
                d,
            )
            yield row, alert

    for i, ev in enumerate(events):
        for w in apply_event(store, ev, offset=i):
            if w.scorable:
                pending.append(w)
        if len(pending) >= batch_size:
            yield from run(pending)
            pending = []
    pending.extend(w for w in store.flush() if w.scorable)
    if pending:
        yield from run(pending)


def run(args: argparse.Namespace) -> int:
    from service.ingest.readers import ReaderError, read_events
    from service.scoring.manifest import ManifestError
    from service.scoring.registry import ModelNotFoundError
    from service.settings import load_settings

    s = load_settings()
    model_dir = args.model_dir or s.model_dir
    registry = ModelRegistry(
        model_dir, SessionOptions(s.model_provider, s.model_intra_threads, s.model_inter_threads), reload_interval_s=0
    )
    try:
        model = registry.get(args.model)
    except (ModelNotFoundError, ManifestError) as exc:
        print(f"rmad score: {exc}", file=sys.stderr)
        return 2
    scorer = Scorer(registry)
    policy = AlertPolicy(s.alert_hysteresis, int(s.alert_cooldown_s * 1000))
    warmup = args.warmup_bars if args.warmup_bars is not None else s.scoring_warmup_bars
    t0 = time.perf_counter()
    n = alerts = 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with args.output.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(COLUMNS)
            events = read_events(args.input, args.format, args.symbol)
            for row, alert in score_events(
                events,
                model,
                scorer,
                policy=policy,
                bar_interval_ms=s.scoring_bar_interval_ms,
                warmup_bars=warmup,
                allowed_lateness_ms=s.scoring_allowed_lateness_ms,
                batch_size=args.batch_size,
                top_features=s.alert_top_features,
                crossvenue=CrossVenueMonitor(
                    s.crossvenue_z, s.crossvenue_min_bps, s.crossvenue_half_life_bars, s.crossvenue_warmup_bars
                )
                if s.crossvenue_enabled
                else None,
            ):
                n += 1
                out.writerow(
                    (
                        row.timestamp,
                        row.key,
                        f"{row.score:.6g}",
                        f"{row.threshold:.6g}",
                        int(row.is_alert),
                        row.alert_type,
                    )
                )
                if alert is not None:
                    alerts += 1
                    if not args.quiet:
                        print(
                            f"ALERT {alert.window_end_ms} {alert.key} {alert.anomaly_type.value} "
                            f"{alert.severity.value} score={alert.score:.4g} threshold={alert.threshold:.4g} "
                            f"id={alert.id}\n  {alert.explanation}"
                        )
    except ReaderError as exc:
        print(f"rmad score: {exc}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(
        f"scored {n} windows of {args.input} with {model.name}/{model.version} in {dt:.1f}s "
        f"({n / dt if dt > 0 else 0:.0f} windows/s): {alerts} alerts -> {args.output}",
        file=sys.stderr,
    )
    return 0
