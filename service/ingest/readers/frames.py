"""Recorded websocket frames (parsed by the live connectors' parsers) and event JSONL -> market events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec

from service.ingest.readers.common import BadRowHandler, ReaderError, bad_row, open_text
from service.schemas.market import AnyMarketEvent, decode_market

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
    with open_text(path) as fh:
        first = fh.readline()
        url = first.split(" <-> ", 1)[0].strip() if " <-> " in first else ""
        ex, mk = _ws_market(url)
        ex, mk = exchange or ex, market or mk
        if ex == "bybit":
            try:
                from service.ingest.bybit_parse import parse_bybit
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
                bad_row(on_bad, path, n, frame, exc.reason, exc.detail)
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
    with open_text(path) as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                ev = decode_market(line)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                bad_row(on_bad, path, n, line.rstrip("\n"), "bad_row", str(exc)[:300])
                continue
            if want is None or ev.symbol == want:
                yield ev
