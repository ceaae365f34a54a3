"""Candle files -> Bar: data.binance.vision klines, freqtrade JSON, feather, NAB series."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from service.ingest.readers.common import (
    BadRowHandler,
    ReaderError,
    bad_row,
    file_stem,
    interval_from_name,
    interval_name,
    open_text,
    symbol_from_name,
    to_decimal,
    to_ms,
)
from service.schemas.market import Bar

# ---------------------------------------------------------------------------------------------------- bars


def _bar(
    venue: str,
    symbol: str,
    open_ms: int,
    interval_ms: int,
    o: Decimal,
    h: Decimal,
    lo: Decimal,
    c: Decimal,
    v: Decimal,
    *,
    quote_volume: Decimal | None = None,
    trades: int | None = None,
    taker_buy: Decimal | None = None,
    check: bool = True,
) -> Bar:
    if check and not (lo <= min(o, c) and h >= max(o, c) and v >= 0):
        raise ValueError(f"inconsistent candle o={o} h={h} l={lo} c={c} v={v}")
    close_ms = open_ms + interval_ms - 1
    return Bar(
        venue=venue,
        symbol=symbol,
        event_time_ms=close_ms,
        ingest_time_ms=close_ms,
        interval=interval_name(interval_ms),
        open_time_ms=open_ms,
        close_time_ms=close_ms,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=v,
        quote_volume=quote_volume,
        trades=trades,
        taker_buy_volume=taker_buy,
    )


def _bars_from_rows(
    rows: Iterator[tuple[int, list[str], str]],
    path: Path,
    venue: str,
    symbol: str,
    interval_ms: int | None,
    on_bad: BadRowHandler | None,
    make: Callable[[list[str], int, int], Bar],
) -> Iterator[Bar]:
    """Turn (line, cells, raw) rows into bars; infers the interval from the first two good rows when unknown."""
    pending: list[tuple[int, list[str], str, int]] = []
    iv = interval_ms
    for line, cells, raw in rows:
        try:
            open_ms = to_ms(cells[0])
        except (ValueError, IndexError, ArithmeticError) as exc:
            bad_row(on_bad, path, line, raw, "bad_row", f"time: {exc}")
            continue
        if iv is None:
            pending.append((line, cells, raw, open_ms))
            if len(pending) < 2:
                continue
            step = pending[1][3] - pending[0][3]
            iv = step if step > 0 else 60_000
            todo, pending = pending, []
        else:
            todo = [(line, cells, raw, open_ms)]
        for ln, cs, rw, oms in todo:
            try:
                yield make(cs, oms, iv)
            except (ValueError, IndexError, InvalidOperation, ArithmeticError) as exc:
                bad_row(on_bad, path, ln, rw, "bad_row", str(exc) or type(exc).__name__)
    for ln, cs, rw, oms in pending:  # a one-row file: assume 1m
        try:
            yield make(cs, oms, iv or 60_000)
        except (ValueError, IndexError, InvalidOperation, ArithmeticError) as exc:
            bad_row(on_bad, path, ln, rw, "bad_row", str(exc) or type(exc).__name__)


def read_kline_csv(
    path: Path,
    *,
    symbol: str | None = None,
    venue: str = "binance-spot",
    interval_ms: int | None = None,
    on_bad: BadRowHandler | None = None,
) -> Iterator[Bar]:
    """Binance kline CSV: the data.binance.vision layout (open_time, o, h, l, c, v, close_time, quote volume,
    trades, taker buy base, taker buy quote, ignore; no header) or a headed open_time,open,high,low,close,volume."""
    sym = symbol or symbol_from_name(path)
    iv = interval_ms or interval_from_name(path)

    def rows() -> Iterator[tuple[int, list[str], str]]:
        with open_text(path) as fh:
            for line, cells in enumerate(csv.reader(fh), start=1):
                if not cells:
                    continue
                if line == 1 and not cells[0].strip().replace(".", "", 1).isdigit() and cells[0][:1].isalpha():
                    continue  # header
                yield line, cells, ",".join(cells)

    def make(cells: list[str], open_ms: int, ivl: int) -> Bar:
        o, h, lo, c, v = (to_decimal(x) for x in cells[1:6])
        full = len(cells) >= 11
        return _bar(
            venue,
            sym,
            open_ms,
            ivl,
            o,
            h,
            lo,
            c,
            v,
            quote_volume=to_decimal(cells[7]) if full else None,
            trades=int(cells[8]) if full else None,
            taker_buy=to_decimal(cells[9]) if full else None,
        )

    yield from _bars_from_rows(rows(), path, venue, sym, iv, on_bad, make)


_INNER = re.compile(r"\[([^\[\]]*)\]")


def read_freqtrade_json(
    path: Path,
    *,
    symbol: str | None = None,
    venue: str = "binance-spot",
    interval_ms: int | None = None,
    on_bad: BadRowHandler | None = None,
    chunk_chars: int = 1 << 20,
) -> Iterator[Bar]:
    """freqtrade's `[[open_ms, o, h, l, c, v], ...]`, scanned in chunks (never the whole array in memory).

    Numbers are taken as the file's text, so Decimal keeps exactly what was written.
    """
    sym = symbol or symbol_from_name(path)
    iv = interval_ms or interval_from_name(path)

    def rows() -> Iterator[tuple[int, list[str], str]]:
        n = 0
        buf = ""
        with open_text(path) as fh:
            head = fh.read(1)
            while head and head.isspace():
                head = fh.read(1)
            if head != "[":
                raise ReaderError(f"{path}: not a freqtrade JSON array")
            while True:
                chunk = fh.read(chunk_chars)
                buf += chunk
                last = 0
                for m in _INNER.finditer(buf):
                    n += 1
                    yield n, [x.strip().strip('"') for x in m.group(1).split(",")], m.group(0)
                    last = m.end()
                buf = buf[last:]
                if not chunk:
                    break
                if len(buf) > 10 * chunk_chars:
                    raise ReaderError(f"{path}: no [..] row within {len(buf)} characters")

    def make(cells: list[str], open_ms: int, ivl: int) -> Bar:
        if len(cells) < 6:
            raise ValueError(f"{len(cells)} fields, expected 6")
        o, h, lo, c, v = (to_decimal(x) for x in cells[1:6])
        return _bar(venue, sym, open_ms, ivl, o, h, lo, c, v)

    yield from _bars_from_rows(rows(), path, venue, sym, iv, on_bad, make)


def read_feather(
    path: Path,
    *,
    symbol: str | None = None,
    venue: str = "binance-spot",
    interval_ms: int | None = None,
    on_bad: BadRowHandler | None = None,
) -> Iterator[Bar]:
    """Feather (Arrow IPC) candles, one record batch at a time. Needs pyarrow (the `train` extra)."""
    try:
        import pyarrow as pa
        import pyarrow.ipc as ipc
    except ModuleNotFoundError:
        raise ReaderError(
            "reading feather files needs pyarrow, which is not a runtime dependency: "
            "pip install pyarrow (or the train extra: pip install -e .[train])"
        ) from None
    sym = symbol or symbol_from_name(path)
    iv = interval_ms or interval_from_name(path)
    reader: Any = ipc.open_file(str(path))
    names = set(reader.schema.names)
    missing = {"date", "open", "high", "low", "close", "volume"} - names
    if missing:
        raise ReaderError(f"{path}: feather file lacks columns {sorted(missing)}")

    def column_ms(col: Any) -> list[int]:
        t = col.type
        if pa.types.is_timestamp(t):
            div = {"s": 1 / 1000, "ms": 1, "us": 1000, "ns": 1_000_000}[t.unit]
            ints = col.cast(pa.int64()).to_pylist()
            return [int(x * 1000) if div < 1 else x // int(div) for x in ints]
        return [to_ms(str(x)) for x in col.to_pylist()]

    def rows() -> Iterator[tuple[int, list[str], str]]:
        line = 0
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            ms = column_ms(batch.column("date"))
            cols = [batch.column(c).to_pylist() for c in ("open", "high", "low", "close", "volume")]
            for i in range(batch.num_rows):
                line += 1
                cells = [str(ms[i]), *(repr(float(c[i])) for c in cols)]
                yield line, cells, ",".join(cells)

    def make(cells: list[str], open_ms: int, ivl: int) -> Bar:
        o, h, lo, c, v = (to_decimal(x) for x in cells[1:6])
        return _bar(venue, sym, open_ms, ivl, o, h, lo, c, v)

    yield from _bars_from_rows(rows(), path, venue, sym, iv, on_bad, make)


def read_nab_csv(
    path: Path,
    *,
    symbol: str | None = None,
    venue: str = "nab",
    interval_ms: int | None = None,
    on_bad: BadRowHandler | None = None,
) -> Iterator[Bar]:
    """NAB series (timestamp,value): each value becomes a flat bar (o=h=l=c=value, volume 0).

    Why bars: the worker and `rmad score` window bars; a NAB value is the one observation per step, so the close
    carries it and the other fields repeat it. The symbol is the file stem (NAB's own series name).
    """
    sym = symbol or file_stem(path)

    def rows() -> Iterator[tuple[int, list[str], str]]:
        with open_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
                raise ReaderError(f"{path}: not a NAB CSV (expected header timestamp,value)")
            for line, cells in enumerate(reader, start=2):
                if cells:
                    yield line, cells, ",".join(cells)

    def make(cells: list[str], open_ms: int, ivl: int) -> Bar:
        v = to_decimal(cells[1])
        return _bar(venue, sym, open_ms, ivl, v, v, v, v, Decimal(0), check=False)

    yield from _bars_from_rows(rows(), path, venue, sym, interval_ms, on_bad, make)
