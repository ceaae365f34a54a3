"""Real recorded Binance frames (../shared/data/ws-recorded-messages, read by path; skipped when absent).

1. Every frame parses; the recordings' own sequences are continuous (spot `U == prev_u + 1`, futures
   `pu == prev_u`), and trade ids do not jump, so the parser and the rules agree with the real exchange.
2. The frames replayed by a fake Binance to the real connector (with one real depth frame dropped per market):
   the local books equal a reference rebuilt independently from the frames, each recorded trade is in the topic
   once, the injected loss is one gap in events and metrics, and no real frame is dead-lettered.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from service.ingest.binance import BinanceConfig, BinanceConnector, parse_binance
from service.ingest.metrics import GAPS, sum_counter
from service.schemas.market import Bar, BookUpdate, Gap, Trade
from tests.ingest.conftest import Ingest, eventually
from tests.ingest.fakes import FakeBinance, TruthBook

pytestmark = pytest.mark.data

FILES = {"spot": "cryptofeed_BINANCE.ws.1.0.txt", "usdm": "cryptofeed_BINANCE_FUTURES.ws.1.0.txt"}


def _frames(shared_data: Path, market: str) -> list[tuple[int, str]]:
    """(receive time ms, raw frame) per line after the connect-URL line."""
    path = shared_data / "ws-recorded-messages" / FILES[market]
    out = []
    for line in path.read_text().splitlines()[1:]:
        ts, sep, frame = line.partition(": ")
        if sep and frame:
            out.append((int(float(ts) * 1000), frame))
    return out


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_recorded_frames_parse_and_are_continuous(shared_data: Path, market: str) -> None:
    frames = _frames(shared_data, market)
    assert len(frames) > 200
    kinds: dict[str, int] = {}
    last_u: dict[str, int] = {}
    last_trade: dict[str, int] = {}
    for recv_ms, frame in frames:
        for ev in parse_binance(frame, market, recv_ms):  # type: ignore[arg-type]
            kinds[type(ev).__name__] = kinds.get(type(ev).__name__, 0) + 1
            if isinstance(ev, BookUpdate):
                prev = last_u.get(ev.symbol)
                if prev is not None:
                    if market == "spot":
                        assert ev.first_update_id == prev + 1
                    else:
                        assert ev.prev_final_update_id == prev
                last_u[ev.symbol] = ev.final_update_id
            elif isinstance(ev, Trade):
                prev = last_trade.get(ev.symbol)
                assert prev is None or int(ev.trade_id) == prev + 1
                last_trade[ev.symbol] = int(ev.trade_id)
                assert ev.price > 0 and ev.side in ("buy", "sell")
            elif isinstance(ev, Bar):
                assert ev.close_time_ms > ev.open_time_ms
    assert kinds.get("BookUpdate", 0) > 100 and kinds.get("Trade", 0) >= 2


@pytest.mark.integration
@pytest.mark.parametrize("market", ["spot", "usdm"])
async def test_recorded_frames_through_fake_server(ingest: Ingest, shared_data: Path, market: str) -> None:
    frames = _frames(shared_data, market)
    venue = "binance-spot" if market == "spot" else "binance-usdm"
    symbols: list[str] = []
    reference: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
    closed_bars = 0
    fake = FakeBinance(market)
    depth_seen: dict[str, int] = {}
    drop_at: int | None = None
    for i, (_, frame) in enumerate(frames):
        data = orjson.loads(frame)["data"]
        if data.get("e") == "depthUpdate":
            s = data["s"]
            if s not in symbols:
                symbols.append(s)
                # the snapshot the fake will serve before the first frame: empty book, just before the stream
                fake.books[s] = TruthBook(last_u=data["U"] - 1 if market == "spot" else data["U"])
                reference[s] = ({}, {})
            bids, asks = reference[s]
            for side, levels in ((bids, data["b"]), (asks, data["a"])):
                for p, q in levels:
                    if Decimal(q) == 0:
                        side.pop(Decimal(p), None)
                    else:
                        side[Decimal(p)] = Decimal(q)
            depth_seen[s] = depth_seen.get(s, 0) + 1
            if drop_at is None and depth_seen[s] == 20:
                drop_at = i  # lose one real frame mid-stream
        elif data.get("e") == "kline" and data["k"]["x"]:
            closed_bars += 1
        elif data.get("e") == "aggTrade" and data["s"] not in symbols:
            symbols.append(data["s"])
    assert drop_at is not None
    await fake.start()
    cfg = BinanceConfig(
        market=market,  # type: ignore[arg-type]
        ws_url=fake.ws_url,
        rest_url=fake.rest_url,
        symbols=tuple(symbols),
        send_rate_per_s=100.0,
        book_min_interval_ms=0,
        backoff_initial_s=0.05,
    )
    gaps_before = sum_counter(GAPS, venue=venue, stream="books")
    conn = BinanceConnector(cfg, ingest.publisher)
    await conn.start()
    try:
        await fake.wait_subscribed(3 * len(symbols))
        for i, (_, frame) in enumerate(frames):
            await fake.send_recorded(frame, drop=i == drop_at)
            data = orjson.loads(frame)["data"]
            if data.get("e") == "depthUpdate" and not conn.books[data["s"]].synced:
                # let the snapshot land before the stream moves on, so the dropped frame is seen as a gap
                await eventually(lambda s=data["s"]: conn.books[s].synced, what=f"{data['s']} synced")
        await eventually(
            lambda: all(conn.books[s].last_u == fake.books[s].last_u for s in reference),
            within_s=15,
            what="books caught up with the recording",
        )
        for s, (bids, asks) in reference.items():
            book = conn.books[s].book
            assert book is not None
            assert book.bids == bids and book.asks == asks, s

        sent = {(s, str(a)) for s, ids in fake.sent_trades.items() for a in ids}
        topics = await ingest.everything(at_least=len(sent))
        trades = [e for e in topics["trades"] if isinstance(e, Trade)]
        assert sorted((t.symbol, t.trade_id) for t in trades) == sorted(sent)
        books = topics["books"]
        gaps = [e for e in books if isinstance(e, Gap)]
        assert len(gaps) == 1 and gaps[0].reason == "sequence_gap"
        assert sum_counter(GAPS, venue=venue, stream="books") - gaps_before == 1
        bars = [e for e in topics["bars"] if isinstance(e, Bar)]
        assert len(bars) == closed_bars
        assert conn.dead_letters == 0
    finally:
        await conn.stop()
        await fake.stop()
