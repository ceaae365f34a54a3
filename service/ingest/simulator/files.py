"""The simulator on disk: labels, Binance-style trades CSVs, market events as the bus carries them."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.ingest.simulator.definitions import AnomalySpec, SimBook, SimConfig, SimEvent, SimLabel, SimTrade
from service.ingest.simulator.generator import MarketSimulator
from service.schemas.market import Bar, BookTop, PublishedMarketEvent, Trade, encode

if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------------------------------------- file output


def write_labels(labels: Sequence[SimLabel], out_dir: Path, stem: str = "labels") -> tuple[Path, Path]:
    """Write the ground truth as JSON (a list of objects) and CSV (type,key,start_ms,end_ms,onset_ms,...)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, cpath = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    rows = [lab.model_dump() for lab in labels]
    jpath.write_text(json.dumps(rows, indent=1) + "\n")
    cols = ["type", "key", "start_ms", "end_ms", "onset_ms", "magnitude", "seed"]
    with cpath.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({c: row[c] for c in cols})
    return jpath, cpath


def read_labels(path: Path) -> list[SimLabel]:
    """Read labels written by `write_labels` (JSON or CSV)."""
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return [SimLabel.model_validate(row) for row in csv.DictReader(fh)]
    return [SimLabel.model_validate(row) for row in json.loads(path.read_text())]


class TradesCsvWriter:
    """Writes trades in the Binance trade CSV layout of ../shared/data/binance-pump-trades, one file per key.

    Why that layout: training and evaluation read the real pump files in it, so a simulated market goes through
    exactly the same loaders (`binance-trades-csv`). btc_volume is price x amount (the quote volume).
    """

    HEADER = ("symbol", "timestamp", "datetime", "side", "price", "amount", "btc_volume")

    def __init__(self, out_dir: Path, suffix: str = ".csv.gz") -> None:
        self.out_dir = out_dir
        self.suffix = suffix
        self._files: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.paths: dict[str, Path] = {}
        self.rows = 0

    def write(self, e: SimTrade) -> None:
        from datetime import UTC, datetime

        entry = self._files.get((e.venue, e.symbol))
        if entry is None:
            path = self.out_dir / f"{e.venue}_{e.symbol}_trades{self.suffix}"
            opener: Any = gzip.open if self.suffix.endswith(".gz") else open
            fh = opener(path, "wt", newline="")
            w = csv.writer(fh)
            w.writerow(self.HEADER)
            entry = self._files[(e.venue, e.symbol)] = (fh, w)
            self.paths[f"{e.venue}:{e.symbol}"] = path
        dt = datetime.fromtimestamp(e.ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        entry[1].writerow([e.symbol, e.ts_ms, dt, e.side, e.price, e.size, repr(float(e.price) * float(e.size))])
        self.rows += 1

    def close(self) -> None:
        for fh, _ in self._files.values():
            fh.close()
        self._files.clear()


def write_trades_csv(events: Iterable[SimEvent], path: Path, key: str) -> int:
    """One key's trades in the Binance trade CSV layout (see TradesCsvWriter); returns the number of rows."""
    venue, _, symbol = key.partition(":")
    w = TradesCsvWriter(path.parent)
    w.paths[key] = path
    opener: Any = gzip.open if path.suffix == ".gz" else open
    fh = opener(path, "wt", newline="")
    writer = csv.writer(fh)
    writer.writerow(TradesCsvWriter.HEADER)
    w._files[(venue, symbol)] = (fh, writer)
    try:
        for e in events:
            if isinstance(e, SimTrade) and e.venue == venue and e.symbol == symbol:
                w.write(e)
    finally:
        w.close()
    return w.rows


def _levels(levels: tuple[tuple[str, str], ...]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in levels]


def to_market(e: SimEvent, ingest_ms: int | None = None) -> PublishedMarketEvent:
    """The normalised event (service.schemas.market) for a simulator event; ingest time defaults to event time."""
    if isinstance(e, SimTrade):
        return Trade(
            venue=e.venue,
            symbol=e.symbol,
            event_time_ms=e.ts_ms,
            ingest_time_ms=e.ts_ms if ingest_ms is None else ingest_ms,
            trade_id=str(e.trade_id),
            price=Decimal(e.price),
            size=Decimal(e.size),
            side=e.side,
        )
    if isinstance(e, SimBook):
        bids, asks = _levels(e.bids), _levels(e.asks)
        bd = sum((q for _, q in bids), Decimal(0))
        ad = sum((q for _, q in asks), Decimal(0))
        tot = bd + ad
        return BookTop(
            venue=e.venue,
            symbol=e.symbol,
            event_time_ms=e.ts_ms,
            ingest_time_ms=e.ts_ms if ingest_ms is None else ingest_ms,
            update_id=e.seq,
            best_bid=bids[0][0] if bids else None,
            best_ask=asks[0][0] if asks else None,
            bid_size=bids[0][1] if bids else None,
            ask_size=asks[0][1] if asks else None,
            bids=bids,
            asks=asks,
            imbalance=float((bd - ad) / tot) if tot else 0.0,
            resync=e.seq == 2,  # the first book of a key: built from nothing, like a fresh snapshot
        )
    return Bar(
        venue=e.venue,
        symbol=e.symbol,
        event_time_ms=e.close_ms,
        ingest_time_ms=e.close_ms if ingest_ms is None else ingest_ms,
        interval=_interval_name(e.close_ms - e.open_ms + 1),
        open_time_ms=e.open_ms,
        close_time_ms=e.close_ms,
        open=Decimal(e.open),
        high=Decimal(e.high),
        low=Decimal(e.low),
        close=Decimal(e.close),
        volume=Decimal(e.volume),
        trades=e.trades,
        taker_buy_volume=Decimal(e.buy_volume),
        incomplete=e.incomplete,
    )


def _interval_name(ms: int) -> str:
    from service.ingest.readers import interval_name

    return interval_name(ms)


def market_events(cfg: SimConfig) -> Iterator[PublishedMarketEvent]:
    """The simulated market as normalised events (what the topics carry), for training and `rmad score`."""
    for e in MarketSimulator(cfg).events():
        yield to_market(e)


@dataclass(frozen=True, slots=True)
class GeneratedFiles:
    events: Path
    labels_json: Path
    labels_csv: Path
    trades_csv: dict[str, Path]
    counts: dict[str, int]
    labels: list[SimLabel]


def generate_files(cfg: SimConfig, out_dir: Path, *, trades_csv: bool = False) -> GeneratedFiles:
    """Write the simulated market to `out_dir`: events.jsonl.gz (format `events-jsonl`: every trade, book and bar,
    replayable with `rmad run --source replay:DIR/events.jsonl.gz`), labels.json / labels.csv (the ground truth,
    also published by the replay), and with `trades_csv` one Binance-layout trade CSV per key."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sim = MarketSimulator(cfg)
    counts: dict[str, int] = {"trade": 0, "book": 0, "bar": 0}
    events_path = out_dir / "events.jsonl.gz"
    csvw = TradesCsvWriter(out_dir) if trades_csv else None
    try:
        with gzip.open(events_path, "wb", compresslevel=3) as fh:
            buf: list[bytes] = []
            for e in sim.events():
                buf.append(encode(to_market(e)))
                if len(buf) >= 4096:  # one compress call per batch, not per line
                    fh.write(b"\n".join(buf) + b"\n")
                    buf.clear()
                if isinstance(e, SimTrade):
                    counts["trade"] += 1
                    if csvw is not None:
                        csvw.write(e)
                elif isinstance(e, SimBook):
                    counts["book"] += 1
                else:
                    counts["bar"] += 1
            if buf:
                fh.write(b"\n".join(buf) + b"\n")
    finally:
        if csvw is not None:
            csvw.close()
    jpath, cpath = write_labels(sim.labels, out_dir)
    return GeneratedFiles(events_path, jpath, cpath, dict(csvw.paths) if csvw else {}, counts, list(sim.labels))


def with_pump_at(cfg: SimConfig, key: str, start_s: float, *, magnitude: float = 0.8, scale: float = 1.0) -> SimConfig:
    """A config whose only anomaly is one pump-and-dump on `key` starting `start_s` after the start."""
    start = cfg.start_ms + int(start_s * 1000)
    onset = start + int(120_000 * scale)
    peak = onset + int(90_000 * scale)
    end = peak + int(600_000 * scale)
    spec = AnomalySpec("pump_and_dump", (key,), start, onset, end, magnitude, cfg.seed, peak_ms=peak)
    return replace(cfg, anomalies=(spec,))
