"""Streaming readers for recorded market data: files in, normalised events (service.schemas.market) out.

Why streaming: the real files are days of ticks (a pump file is ~10^6 trades) and replay, `rmad score` and
training all read them; every reader here is a generator that holds one row (or one small chunk) at a time, so
memory stays flat whatever the file size. Prices and sizes become Decimal from the file's own text (no float in
between) where the file stores text; feather stores floats and goes through their shortest repr.

Formats (`read_events(path, fmt)`; `sniff_format(path)` guesses one from the name and header):

- `binance-trades-csv` -> Trade: symbol,timestamp,datetime,side,price,amount,btc_volume (.csv / .csv.gz), as in
  ../shared/data/binance-pump-trades.
- `binance-kline-csv` -> Bar: data.binance.vision klines (no header, 12 columns, ms or µs open time), or
  open_time,open,high,low,close,volume with a header (ISO or ms times).
- `freqtrade-json` -> Bar: `[[open_ms, o, h, l, c, v], ...]` (.json / .json.gz).
- `feather` -> Bar: date, open, high, low, close, volume (Arrow IPC; needs pyarrow, not a runtime dependency).
- `nab-csv` -> Bar: timestamp,value (Numenta Anomaly Benchmark); the value becomes a flat bar, volume 0.
- `ws-frames` -> Trade, Bar, BookUpdate: recorded websocket frames (cryptofeed layout: first line
  `<url> <-> <t>`, then `<receive unix s>: <frame>`), parsed by the live connectors' own parsers.
- `events-jsonl` -> any market event: one encoded event per line (the topics' JSON; the simulator writes it).

Events carry the source's event time; `ingest_time_ms` is the recorded receive time for ws-frames and the event
time elsewhere (replay stamps the real ingest time when it publishes).

Modules: `common` (formats, errors, shared parsing), `trades`, `candles`, `frames`; this package is the facade.
"""

from __future__ import annotations

import csv
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.ingest.readers.candles import read_feather, read_freqtrade_json, read_kline_csv, read_nab_csv
from service.ingest.readers.common import (
    FORMATS,
    BadRowHandler,
    Format,
    ReaderError,
    bad_row,
    interval_name,
    open_text,
    symbol_from_name,
)
from service.ingest.readers.frames import read_events_jsonl, read_ws_frames
from service.ingest.readers.trades import read_binance_trades_csv
from service.schemas.eventtime import DEFAULT_BOUNDS, TimeBounds
from service.schemas.market import AnyMarketEvent, encode

# -------------------------------------------------------------------------------------------------- facade


def sniff_format(path: Path) -> Format:
    """Guess the format from the file name and, for CSV, the header line."""
    name = path.name.lower()
    if name.endswith(".feather") or name.endswith(".arrow"):
        return "feather"
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")):
        return "events-jsonl"
    if name.endswith((".json", ".json.gz")):
        return "freqtrade-json"
    if name.endswith((".txt", ".txt.gz")):
        return "ws-frames"
    if name.endswith((".csv", ".csv.gz")):
        with open_text(path) as fh:
            header = fh.readline().strip().lower()
        cols = [c.strip() for c in header.split(",")]
        if {"side", "amount"} <= set(cols):
            return "binance-trades-csv"
        if cols[:2] == ["timestamp", "value"]:
            return "nab-csv"
        return "binance-kline-csv"
    raise ReaderError(f"{path}: cannot tell the format from the name; name one of {', '.join(FORMATS)}")


def read_events(
    path: str | Path,
    format: str | None = None,
    symbol: str | None = None,
    *,
    venue: str | None = None,
    on_bad: BadRowHandler | None = None,
    bounds: TimeBounds | None = DEFAULT_BOUNDS,
) -> Iterator[AnyMarketEvent]:
    """Stream the normalised events of one recorded file, in file order.

    `format`: one of FORMATS, or None to sniff it. `symbol`: for files that name symbols (trades CSV, ws-frames,
    events-jsonl) only that symbol's events; for files that do not (klines, NAB), the symbol to give the bars
    (default: taken from the file name). `venue` overrides the default venue (binance-spot; nab for NAB).
    `on_bad(raw, reason, detail)` receives rows that cannot be read; without it a bad row raises ReaderError.
    `bounds`: an event stamped further after now than `bounds.max_future_ms` is a bad row (`bad_time`); files are
    history, so age is no reason. The bar builder turns a long hole between events into one gap mark.
    """
    p = Path(path)
    if not p.is_file():
        raise ReaderError(f"{p}: no such file")
    fmt = format or sniff_format(p)
    try:
        events = _dispatch(p, fmt, symbol, venue, on_bad)
        yield from (events if bounds is None else _in_bounds(events, p, bounds, on_bad))
    except ReaderError:
        raise
    except (OSError, EOFError, csv.Error, zlib.error, UnicodeError, ValueError, ArithmeticError) as exc:
        # file-level damage (a truncated gzip, a NUL byte, an oversized field): one clear error naming the file
        raise ReaderError(f"{p}: cannot read as {fmt}: {type(exc).__name__}: {exc}") from exc


def _in_bounds(
    events: Iterator[AnyMarketEvent], p: Path, bounds: TimeBounds, on_bad: BadRowHandler | None
) -> Iterator[AnyMarketEvent]:
    now = int(time.time() * 1000)
    for n, ev in enumerate(events, 1):
        why = bounds.refuse(ev.event_time_ms, now, live=False)
        if why is not None:
            now = int(time.time() * 1000)  # the clock may have moved on since the file was opened: look again
            why = bounds.refuse(ev.event_time_ms, now, live=False)
        if why is None:
            yield ev
            continue
        bad_row(on_bad, p, n, encode(ev).decode(), "bad_time", f"event {n}: event time {ev.event_time_ms}: {why}")


def _dispatch(
    p: Path, fmt: str, symbol: str | None, venue: str | None, on_bad: BadRowHandler | None
) -> Iterator[AnyMarketEvent]:
    kw: dict[str, Any] = {"on_bad": on_bad, "symbol": symbol}
    if venue is not None and fmt not in ("ws-frames", "events-jsonl"):
        kw["venue"] = venue
    if fmt == "binance-trades-csv":
        yield from read_binance_trades_csv(p, **kw)
    elif fmt == "binance-kline-csv":
        yield from read_kline_csv(p, **kw)
    elif fmt == "freqtrade-json":
        yield from read_freqtrade_json(p, **kw)
    elif fmt == "feather":
        yield from read_feather(p, **kw)
    elif fmt == "nab-csv":
        yield from read_nab_csv(p, **kw)
    elif fmt == "ws-frames":
        yield from read_ws_frames(p, **kw)
    elif fmt == "events-jsonl":
        yield from read_events_jsonl(p, **kw)
    else:
        raise ReaderError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


__all__ = [
    "FORMATS",
    "BadRowHandler",
    "Format",
    "ReaderError",
    "interval_name",
    "read_binance_trades_csv",
    "read_events",
    "read_events_jsonl",
    "read_feather",
    "read_freqtrade_json",
    "read_kline_csv",
    "read_nab_csv",
    "read_ws_frames",
    "sniff_format",
    "symbol_from_name",
]
