"""The Binance connector against a local fake Binance (websocket + REST snapshot) and the real broker.

One scenario per market (spot: `U == prev_u + 1`; USD-M: `pu == prev_u`) with every fault the issue lists:
snapshot older than the stream, dropped / reordered / stale depth updates, duplicate and skipped trade ids,
a disconnect, a serverShutdown notice, a refused subscription and garbage frames. Afterwards the local book must
equal the server's truth, the trades topic must hold every trade sent exactly once, and each gap must show up in
the metrics and as Gap events / incomplete flags in the topics.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from service.ingest.binance import BinanceConfig, BinanceConnector
from service.ingest.metrics import DEAD_LETTERS, GAPS, RECONNECTS, RESYNCS, SUBSCRIBE_ERRORS, sum_counter
from service.schemas.market import Bar, BookTop, DeadLetter, Gap, Trade
from tests.ingest.conftest import Ingest, eventually
from tests.ingest.fakes import FakeBinance, random_changes

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
GOOD = ["BTCUSDT", "ETHUSDT"]
MIDS = {"BTCUSDT": (Decimal("43000.00"), Decimal("0.01")), "ETHUSDT": (Decimal("2300.00"), Decimal("0.01"))}
GARBAGE: list[bytes] = [
    b"\x00\xff\xfe not json",
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT"}}',
    b"[1,2,3]",
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,"p":"NaN","q":"1","T":1700000000000,"m":true}}',
    b'{"hello":"world"}',
]


async def _depth_round(fake: FakeBinance, t: int, n: int = 5) -> None:
    for s in GOOD:
        for _ in range(n):
            mid, tick = MIDS[s]
            bids, asks = random_changes(fake.rng, fake.book(s), mid, tick)
            await fake.depth(s, bids, asks, t)


async def _trades(fake: FakeBinance, t: int, n: int = 5, **kw: object) -> None:
    for s in GOOD:
        for i in range(n):
            await fake.trade(s, f"{43000 + i}.5", "0.010", i % 2 == 0, t + i, **kw)  # type: ignore[arg-type]


def _metric_snapshot(venue: str) -> dict[str, float]:
    return {
        "gaps_trades": sum_counter(GAPS, venue=venue, stream="trades"),
        "gaps_books": sum_counter(GAPS, venue=venue, stream="books"),
        "resyncs": sum_counter(RESYNCS, venue=venue),
        "reconnects": sum_counter(RECONNECTS, venue=venue),
        "dead": sum_counter(DEAD_LETTERS, venue=venue),
        "refused": sum_counter(SUBSCRIBE_ERRORS, venue=venue),
    }


@pytest.mark.parametrize("market", ["spot", "usdm"])
async def test_binance_scenario_book_trades_gaps(ingest: Ingest, market: str) -> None:
    fake = FakeBinance(market, seed=3 if market == "spot" else 4)
    await fake.start()
    venue = "binance-spot" if market == "spot" else "binance-usdm"
    before = _metric_snapshot(venue)
    # the book exists before we connect: these changes reach the client only through the REST snapshot
    await _depth_round(fake, T0, n=15)
    fake.snapshot_lags = [2, 0, 0]  # the first snapshot lags the stream: buffered events must be kept, not lost
    settings = ingest.settings.model_copy(
        update={"binance_max_streams_per_connection": 6, "binance_spot_max_msgs_per_s": 50.0}
    )
    cfg = BinanceConfig.from_settings(settings, market, [*GOOD, "BADUSDT"])  # type: ignore[arg-type]
    cfg = BinanceConfig(**{**cfg.__dict__, "ws_url": fake.ws_url, "rest_url": fake.rest_url})
    fake.refuse = {"BADUSDT"}
    conn = BinanceConnector(cfg, ingest.publisher)
    assert len(cfg.shards()) == 2  # 6 streams per connection: BTC+ETH on one, BAD on the other
    await conn.start()
    try:
        await fake.wait_subscribed(6)
        await eventually(lambda: len(conn.subscribe_errors) == 3, what="refused subscriptions surfaced")
        assert conn.refused_streams == {"badusdt@aggTrade", "badusdt@depth@100ms", "badusdt@kline_1m"}
        t = T0 + 1000
        await _depth_round(fake, t)
        await _trades(fake, t)
        await eventually(lambda: all(conn.books[s].synced for s in GOOD), what="initial sync")

        # duplicates and an id gap (3 trades never sent)
        await _trades(fake, t + 100, n=2, duplicate=True)
        await fake.trade("BTCUSDT", "43001", "1", False, t + 200, skip=3)
        # a dropped depth update (gap -> resync), a stale resend, and two updates out of order
        await fake.depth("BTCUSDT", [(Decimal("42999.99"), Decimal("7"))], [], t + 300, drop=True)
        await _depth_round(fake, t + 310, n=2)
        stale = fake.last_sent["ETHUSDT"]
        await _depth_round(fake, t + 320, n=2)
        await fake.broadcast(stale)
        f1 = fake.depth_frame("ETHUSDT", [(Decimal("2299.95"), Decimal("3"))], [], t + 330)
        f2 = fake.depth_frame("ETHUSDT", [], [(Decimal("2300.07"), Decimal("4"))], t + 331)
        await fake.broadcast(f2)
        await fake.broadcast(f1)
        # closed and open klines: only the closed one is a bar
        await fake.kline("BTCUSDT", T0, closed=False, o="1", h="2", lo="0.5", c="1.5")
        await fake.kline("BTCUSDT", T0, closed=True, o="1", h="2", lo="0.5", c="1.5")
        garbage_sent: list[bytes] = []
        for g in GARBAGE:
            garbage_sent += [g] * await fake.broadcast(g)
        await eventually(lambda: all(conn.books[s].synced for s in GOOD), what="resync after gaps")

        # a disconnect: trades and depth changes made meanwhile never reach the client
        await fake.drop_connections()
        await _trades(fake, t + 400, n=2)
        await _depth_round(fake, t + 410, n=2)
        await fake.wait_subscribed(6)
        await _trades(fake, t + 500, n=2)
        await _depth_round(fake, t + 510, n=3)
        # serverShutdown: the client reconnects at once (both connections must be back to hear it)
        await eventually(lambda: len(fake.clients) == 2, what="both connections back")
        await fake.shutdown_and_wait()
        await fake.wait_subscribed(6)
        await _depth_round(fake, t + 600, n=3)
        await _trades(fake, t + 700, n=3)

        def caught_up() -> bool:
            return all(
                conn.books[s].synced
                and conn.books[s].last_u == fake.book(s).last_u
                and conn.trade_ids.last(s) == (fake.trade_ids[s], t + 702)
                for s in GOOD
            )

        await eventually(caught_up, within_s=15, what="connector caught up with the fake exchange")

        # 1. local book == the truth
        for s in GOOD:
            book = conn.books[s].book
            assert book is not None
            assert book.bids == fake.book(s).bids, s
            assert book.asks == fake.book(s).asks, s
            assert not book.crossed()

        # 2. every trade put on the wire is in the topic exactly once
        sent = {(s, str(i)) for s, ids in fake.sent_trades.items() for i in ids}
        topics = await ingest.everything(at_least=len(sent) + len(garbage_sent))
        events = topics["trades"]
        trades = [e for e in events if isinstance(e, Trade)]
        got = [(e.symbol, e.trade_id) for e in trades]
        assert len(got) == len(set(got)), "a trade was published twice"
        assert set(got) == sent
        assert all(e.venue == venue for e in trades)

        # 3. gaps: the skipped ids and the disconnect show up as Gap events and incomplete trades
        trade_gaps = [e for e in events if isinstance(e, Gap)]
        assert any(g.symbol == "BTCUSDT" and g.reason == "sequence_gap" and g.missing == 3 for g in trade_gaps)
        assert {g.symbol for g in trade_gaps if g.reason == "reconnect"} == set(GOOD)
        assert sum(1 for e in trades if e.incomplete) == len(trade_gaps)
        books = topics["books"]
        book_gaps = [e for e in books if isinstance(e, Gap)]
        assert {g.symbol for g in book_gaps if g.reason == "sequence_gap"} == set(GOOD)  # dropped + reordered
        assert {g.symbol for g in book_gaps if g.reason == "reconnect"} == set(GOOD)
        tops = [e for e in books if isinstance(e, BookTop)]
        assert any(b.resync for b in tops) and any(b.incomplete for b in tops)
        for s in GOOD:
            last = [b for b in tops if b.symbol == s][-1]
            truth = fake.book(s)
            assert last.best_bid == max(truth.bids) and last.best_ask == min(truth.asks)
            assert last.bids == sorted(truth.bids.items(), reverse=True)[: ingest.settings.ingest_book_levels]

        # 4. bars: only the closed kline
        bars = [e for e in topics["bars"] if isinstance(e, Bar)]
        assert [(b.symbol, b.open_time_ms) for b in bars] == [("BTCUSDT", T0)]

        # 5. garbage in the dead-letter topic with the raw frame
        letters = [d for d in topics["dead"] if isinstance(d, DeadLetter)]
        assert sorted(dl.raw_bytes() for dl in letters) == sorted(garbage_sent)
        assert {dl.reason for dl in letters} >= {"invalid_json", "invalid_field", "unexpected_frame", "bad_number"}

        # 6. metrics
        after = _metric_snapshot(venue)
        assert after["gaps_trades"] - before["gaps_trades"] == len(trade_gaps) == 3
        assert after["gaps_books"] - before["gaps_books"] == len(book_gaps)
        assert after["resyncs"] - before["resyncs"] >= 2
        assert after["reconnects"] - before["reconnects"] >= 4  # two connections, twice
        assert after["dead"] - before["dead"] == len(garbage_sent)
        assert after["refused"] - before["refused"] == 3  # each refused stream once, not again on reconnect
        health = conn.health()
        assert health.ok and "refused" in health.detail
        assert conn.shutdowns >= 1
    finally:
        await conn.stop()
        await fake.stop()


async def test_binance_unreachable_logs_once_and_keeps_retrying(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on the port: one WARNING naming the exchange, then quiet retries; health says not ready."""
    from harness.servers import free_port

    port = free_port()
    cfg = BinanceConfig(
        market="spot",
        ws_url=f"ws://127.0.0.1:{port}",
        rest_url=f"http://127.0.0.1:{port}",
        symbols=("BTCUSDT",),
        backoff_initial_s=0.02,
        backoff_max_s=0.05,
        open_timeout_s=0.5,
    )
    conn = BinanceConnector(cfg, ingest.publisher)
    caplog.set_level("DEBUG", logger="service.ingest.ws")
    before = sum_counter(RECONNECTS, venue="binance-spot", reason="error")
    await conn.start()
    try:
        await eventually(
            lambda: sum_counter(RECONNECTS, venue="binance-spot", reason="error") - before >= 5, what="retries"
        )
    finally:
        await conn.stop()
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert f"127.0.0.1:{port}" in warnings[0].getMessage()
    assert not conn.health().ok


def test_shards_respect_stream_limit() -> None:
    cfg = BinanceConfig(
        market="spot",
        ws_url="ws://x",
        rest_url="http://x",
        symbols=tuple(f"S{i}USDT" for i in range(1000)),
        max_streams_per_connection=1024,
    )
    shards = cfg.shards()
    assert sum(len(s) for s in shards) == 1000
    assert all(len(s) * 3 <= 1024 for s in shards)
    assert len(shards) == 3
