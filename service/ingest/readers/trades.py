"""Binance trades CSV (../shared/data/binance-pump-trades layout) -> Trade."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from decimal import InvalidOperation
from pathlib import Path

from service.ingest.readers.common import BadRowHandler, ReaderError, bad_row, open_text, to_decimal
from service.schemas.market import Trade

# ------------------------------------------------------------------------------------------------- trades


def read_binance_trades_csv(
    path: Path, *, symbol: str | None = None, venue: str = "binance-spot", on_bad: BadRowHandler | None = None
) -> Iterator[Trade]:
    """Binance trade CSV (symbol,timestamp,datetime,side,price,amount,btc_volume). `side` is the taker side.

    The files carry no trade ids; the id is the 1-based row number, unique and stable within one file.
    `symbol` keeps only that symbol's rows (the CSV's "OAX/BTC" is compared and published as "OAXBTC").
    """
    want = symbol.replace("/", "").upper() if symbol else None
    with open_text(path) as fh:
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
                price, size = to_decimal(row[i_px]), to_decimal(row[i_amt])
                if price <= 0 or size < 0:
                    raise ValueError(f"price {price} size {size}")
            except (ValueError, InvalidOperation, ArithmeticError) as exc:
                bad_row(on_bad, path, n + 1, ",".join(row), "bad_row", str(exc) or type(exc).__name__)
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
