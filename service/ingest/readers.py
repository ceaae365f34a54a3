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
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, Literal

import msgspec

from service.schemas.eventtime import DEFAULT_BOUNDS, TimeBounds
from service.schemas.market import AnyMarketEvent, Bar, Trade, decode_market, encode

log = logging.getLogger(__name__)

Format = Literal[
    "binance-trades-csv", "binance-kline-csv", "freqtrade-json", "feather", "nab-csv", "ws-frames", "events-jsonl"
]
FORMATS: tuple[Format, ...] = (
    "binance-trades-csv",
    "binance-kline-csv",
    "freqtrade-json",
    "feather",
    "nab-csv",
    "ws-frames",
    "events-jsonl",
)

# Called for a row that cannot be read: (raw text, reason code, detail). Without one, the reader raises.
BadRowHandler = Callable[[str, str, str], None]


class ReaderError(ValueError):
    """A file or row that cannot be read in the requested format; the message names the file and line."""


_INTERVALS = {
    1_000: "1s",
    60_000: "1m",
    180_000: "3m",
    300_000: "5m",
    900_000: "15m",
    1_800_000: "30m",
    3_600_000: "1h",
    7_200_000: "2h",
    14_400_000: "4h",
    86_400_000: "1d",
}
_INTERVAL_MS = {v: k for k, v in _INTERVALS.items()}


def interval_name(ms: int) -> str:
    return _INTERVALS.get(ms, f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms")


def _open_text(path: Path) -> IO[str]:
    """UTF-8 text; undecodable bytes become U+FFFD, so a corrupt row fails as that row, not as the file."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return path.open("r", encoding="utf-8", errors="replace", newline="")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".json", ".jsonl", ".feather", ".txt"):
        name = name.removesuffix(suffix)
    return name


_SYMBOL_IN_NAME = re.compile(r"(?:^|_)([A-Z0-9]{5,20})_(\d+[smhdw])(?:_|$)")


def symbol_from_name(path: Path) -> str:
    """`spot_BTCUSDT_1m_2021-...json.gz` -> BTCUSDT; `BTCUSDC_1m_2023....csv` -> BTCUSDC; else the file stem."""
    stem = _stem(path)
    m = _SYMBOL_IN_NAME.search(stem)
    return m.group(1) if m else stem


def _interval_from_name(path: Path) -> int | None:
    m = _SYMBOL_IN_NAME.search(_stem(path))
    return _INTERVAL_MS.get(m.group(2)) if m else None


def _to_ms(value: str) -> int:
    """Epoch s / ms / µs / ns (by magnitude) or an ISO-8601 / `YYYY-mm-dd HH:MM:SS[+00:00]` UTC time -> epoch ms."""
    text = value.strip()
    if text.replace(".", "", 1).isdigit():
        x = float(text)
        if x >= 1e17:  # ns
            return int(x // 1_000_000)
        if x >= 1e14:  # µs (data.binance.vision spot files from 2025 on)
            return int(x // 1_000)
        if x >= 1e11:  # ms
            return int(x)
        return int(x * 1000)  # s
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _dec(text: str) -> Decimal:
    d = Decimal(text.strip())
    if not d.is_finite():
        raise InvalidOperation(text)
    return d


def _bad(on_bad: BadRowHandler | None, path: Path, line: int, raw: str, reason: str, detail: str) -> None:
    if on_bad is None:
        raise ReaderError(f"{path}:{line}: {reason}: {detail}")
    on_bad(raw, reason, f"{path.name}:{line}: {detail}")


# ------------------------------------------------------------------------------------------------- trades


def read_binance_trades_csv(
    path: Path, *, symbol: str | None = None, venue: str = "binance-spot", on_bad: BadRowHandler | None = None
) -> Iterator[Trade]:
    """Binance trade CSV (symbol,timestamp,datetime,side,price,amount,btc_volume). `side` is the taker side.

    The files carry no trade ids; the id is the 1-based row number, unique and stable within one file.
    `symbol` keeps only that symbol's rows (the CSV's "OAX/BTC" is compared and published as "OAXBTC").
    """
    want = symbol.replace("/", "").upper() if symbol else None
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        cols = {name.strip().lower(): i for i, name in enumerate(header)}
        missing = {"symbol", "timestamp", "side", "price", "amount"} - cols.keys()
        if missing:
            raise ReaderError(f"{path}: not a Binance trade CSV, missing columns {sorted(missing)}")
        i_sym, i_ts, i_side, i_px, i_amt = (cols[c] for c in ("symbol", "timestamp", "side", "price", "amount"))
        width = max(i_sym, i_ts, i_side, i_px, i_amt) + 1
        cache: dict[str, str] = {}
        for n, row in enumerate(reader, start=1):
            try:
                if len(row) < width:
                    raise ValueError(f"{len(row)} columns")
                raw_sym = row[i_sym]
                sym = cache.get(raw_sym)
                if sym is None:
                    sym = cache[raw_sym] = raw_sym.replace("/", "").replace("-", "").upper()
                if want is not None and sym != want:
                    continue
                side = row[i_side].strip().lower()
                if side not in ("buy", "sell"):
                    raise ValueError(f"side {side!r}")
                ts = int(row[i_ts])
                price, size = _dec(row[i_px]), _dec(row[i_amt])
                if price <= 0 or size < 0:
                    raise ValueError(f"price {price} size {size}")
            except (ValueError, InvalidOperation, ArithmeticError) as exc:
                _bad(on_bad, path, n + 1, ",".join(row), "bad_row", str(exc) or type(exc).__name__)
                continue
            yield Trade(
                venue=venue,
                symbol=sym,
                event_time_ms=ts,
                ingest_time_ms=ts,
                trade_id=str(n),
                price=price,
                size=size,
                side="buy" if side == "buy" else "sell",
            )


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
            open_ms = _to_ms(cells[0])
        except (ValueError, IndexError, ArithmeticError) as exc:
            _bad(on_bad, path, line, raw, "bad_row", f"time: {exc}")
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
                _bad(on_bad, path, ln, rw, "bad_row", str(exc) or type(exc).__name__)
    for ln, cs, rw, oms in pending:  # a one-row file: assume 1m
        try:
            yield make(cs, oms, iv or 60_000)
        except (ValueError, IndexError, InvalidOperation, ArithmeticError) as exc:
            _bad(on_bad, path, ln, rw, "bad_row", str(exc) or type(exc).__name__)


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
    iv = interval_ms or _interval_from_name(path)

    def rows() -> Iterator[tuple[int, list[str], str]]:
        with _open_text(path) as fh:
            for line, cells in enumerate(csv.reader(fh), start=1):
                if not cells:
                    continue
                if line == 1 and not cells[0].strip().replace(".", "", 1).isdigit() and cells[0][:1].isalpha():
                    continue  # header
                yield line, cells, ",".join(cells)

    def make(cells: list[str], open_ms: int, ivl: int) -> Bar:
        o, h, lo, c, v = (_dec(x) for x in cells[1:6])
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
            quote_volume=_dec(cells[7]) if full else None,
            trades=int(cells[8]) if full else None,
            taker_buy=_dec(cells[9]) if full else None,
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
    iv = interval_ms or _interval_from_name(path)

    def rows() -> Iterator[tuple[int, list[str], str]]:
        n = 0
        buf = ""
        with _open_text(path) as fh:
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
        o, h, lo, c, v = (_dec(x) for x in cells[1:6])
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
    iv = interval_ms or _interval_from_name(path)
    reader: Any = ipc.open_file(str(path))
    names = set(reader.schema.names)
    missing = {"date", "open", "high", "low", "close", "volume"} - names
    if missing:
        raise ReaderError(f"{path}: feather file lacks columns {sorted(missing)}")

    def to_ms(col: Any) -> list[int]:
        t = col.type
        if pa.types.is_timestamp(t):
            div = {"s": 1 / 1000, "ms": 1, "us": 1000, "ns": 1_000_000}[t.unit]
            ints = col.cast(pa.int64()).to_pylist()
            return [int(x * 1000) if div < 1 else x // int(div) for x in ints]
        return [_to_ms(str(x)) for x in col.to_pylist()]

    def rows() -> Iterator[tuple[int, list[str], str]]:
        line = 0
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            ms = to_ms(batch.column("date"))
            cols = [batch.column(c).to_pylist() for c in ("open", "high", "low", "close", "volume")]
            for i in range(batch.num_rows):
                line += 1
                cells = [str(ms[i]), *(repr(float(c[i])) for c in cols)]
                yield line, cells, ",".join(cells)

    def make(cells: list[str], open_ms: int, ivl: int) -> Bar:
        o, h, lo, c, v = (_dec(x) for x in cells[1:6])
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
    sym = symbol or _stem(path)

    def rows() -> Iterator[tuple[int, list[str], str]]:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
                raise ReaderError(f"{path}: not a NAB CSV (expected header timestamp,value)")
            for line, cells in enumerate(reader, start=2):
                if cells:
                    yield line, cells, ",".join(cells)

    def make(cells: list[str], open_ms: int, ivl: int) -> Bar:
        v = _dec(cells[1])
        return _bar(venue, sym, open_ms, ivl, v, v, v, v, Decimal(0), check=False)

    yield from _bars_from_rows(rows(), path, venue, sym, interval_ms, on_bad, make)


# ------------------------------------------------------------------------------------------ recorded frames


def _ws_market(url: str) -> tuple[str, str]:
    """(exchange, market) from a recorded connect URL."""
    u = url.lower()
    if "bybit" in u:
        return "bybit", "linear" if "linear" in u else "spot"
    if "fstream" in u or "/fapi" in u:
        return "binance", "usdm"
    return "binance", "spot"


def read_ws_frames(
    path: Path,
    *,
    symbol: str | None = None,
    exchange: str | None = None,
    market: str | None = None,
    on_bad: BadRowHandler | None = None,
) -> Iterator[AnyMarketEvent]:
    """Recorded websocket frames (cryptofeed layout) through the live parsers: the replay runs the same code.

    The first line names the connect URL (and so the exchange and market); each further line is
    `<receive time, unix seconds>: <frame>`. The receive time becomes `ingest_time_ms`. Control frames (acks,
    pongs) yield nothing; frames the parser refuses go to `on_bad` with the parser's reason code.
    """
    from service.ingest.binance_parse import parse_binance
    from service.ingest.errors import ParseError
    from service.ingest.events import Control

    parse: Callable[[bytes, int], list[Any]]
    want = symbol.upper() if symbol else None
    with _open_text(path) as fh:
        first = fh.readline()
        url = first.split(" <-> ", 1)[0].strip() if " <-> " in first else ""
        ex, mk = _ws_market(url)
        ex, mk = exchange or ex, market or mk
        if ex == "bybit":
            try:
                from service.ingest.bybit import parse_bybit
            except ImportError:
                raise ReaderError(f"{path}: Bybit frames need service.ingest.bybit.parse_bybit") from None

            ymk: Literal["spot", "linear"] = "linear" if mk == "linear" else "spot"

            def parse(frame: bytes, ingest_ms: int) -> list[Any]:
                return list(parse_bybit(frame, ymk, ingest_ms))
        else:
            bmk: Literal["spot", "usdm"] = "usdm" if mk == "usdm" else "spot"

            def parse(frame: bytes, ingest_ms: int) -> list[Any]:
                return list(parse_binance(frame, bmk, ingest_ms))

        lines: Iterator[str] = fh if url else iter([first, *fh])
        for n, text in enumerate(lines, start=2 if url else 1):
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            head, sep, frame = text.partition(": ")
            try:
                recv_ms = int(float(head) * 1000) if sep else 0
            except ValueError:
                recv_ms, frame = 0, text
            try:
                events = parse(frame.encode(), recv_ms)
            except ParseError as exc:
                _bad(on_bad, path, n, frame, exc.reason, exc.detail)
                continue
            for ev in events:
                if isinstance(ev, Control):
                    continue
                if want is not None and ev.symbol != want:
                    continue
                if not recv_ms:
                    ev = msgspec.structs.replace(ev, ingest_time_ms=ev.event_time_ms)
                yield ev


def read_events_jsonl(
    path: Path, *, symbol: str | None = None, on_bad: BadRowHandler | None = None
) -> Iterator[AnyMarketEvent]:
    """One encoded market event per line (the topics' own JSON), e.g. what the simulator writes."""
    want = symbol.upper() if symbol else None
    with _open_text(path) as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                ev = decode_market(line)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                _bad(on_bad, path, n, line.rstrip("\n"), "bad_row", str(exc)[:300])
                continue
            if want is None or ev.symbol == want:
                yield ev


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
        with _open_text(path) as fh:
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
        if why is None:
            yield ev
            continue
        if now + bounds.max_future_ms < ev.event_time_ms:  # the clock may have moved on: look again before refusing
            now = int(time.time() * 1000)
            if bounds.refuse(ev.event_time_ms, now, live=False) is None:
                yield ev
                continue
        raw = encode(ev).decode()
        _bad(on_bad, p, n, raw, "bad_time", f"event {n}: event time {ev.event_time_ms}: {why}")


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
