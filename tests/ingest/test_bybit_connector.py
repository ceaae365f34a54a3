"""The Bybit v5 connector against a local fake Bybit (spot and linear) and the real broker.

Faults: a refused subscription (one bad symbol in a 9-arg request), duplicate trade ids across frames, a dropped
delta (gap -> resubscribe -> fresh snapshot), a stale delta, a `u=1` snapshot after a Bybit service restart,
unconfirmed klines, garbage, and a disconnect. Afterwards: local book == truth, each trade exactly once in the
topic, gaps in metrics and events, client pings answered.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from service.ingest.bybit import BybitConfig, BybitConnector
from service.ingest.metrics import DEAD_LETTERS, GAPS, RECONNECTS, RESYNCS, SUBSCRIBE_ERRORS, sum_counter
from service.schemas.market import Bar, BookTop, DeadLetter, Gap, Trade
from tests.ingest.conftest import Ingest, eventually
from tests.ingest.fakes import FakeBybit, random_changes

pytestmark = pytest.mark.integration

T0 = 1_703_430_744_000
GOOD = ["BTCUSDT", "ETHUSDT"]
MIDS = {"BTCUSDT": (Decimal("43774.00"), Decimal("0.01")), "ETHUSDT": (Decimal("2250.00"), Decimal("0.01"))}
GARBAGE: list[bytes] = [
    b"\xc3\x28 broken utf-8",
    b'{"topic":"publicTrade.BTCUSDT","ts":1,"type":"snapshot","data":[{"i":"1","T":1703430744102}]}',
    b'{"topic":"orderbook.50.BTCUSDT","ts":1703430557696,"type":"weird","data":{"s":"BTCUSDT","b":[],"a":[],"u":3}}',
    b'{"topic":"publicTrade.BTCUSDT","ts":1,"type":"snapshot","data":[{"i":"9","T":1703430744102,"p":"-5",'
    b'"v":"1","S":"Buy","s":"BTCUSDT"}]}',
    b"null",
]


async def _deltas(fake: FakeBybit, ts: int, n: int = 4) -> None:
    for s in GOOD:
        for _ in range(n):
            mid, tick = MIDS[s]
            bids, asks = random_changes(fake.rng, fake.book(s), mid, tick)
            await fake.delta(s, bids, asks, ts)


async def _trades(
    fake: FakeBybit, ts: int, n: int = 3, resend: dict[str, list[str]] | None = None
) -> dict[str, list[str]]:
    out = {}
    for s in GOOD:
        items = [(f"{43774 + i}.5", "0.0026", "Sell" if i % 2 else "Buy", ts + i) for i in range(n)]
        out[s] = await fake.trades(s, items, resend=(resend or {}).get(s))
    return out


@pytest.mark.parametrize("market", ["spot", "linear"])
async def test_bybit_scenario_book_trades_gaps(ingest: Ingest, market: str) -> None:
    fake = FakeBybit(market, seed=5 if market == "spot" else 6)
    await fake.start()
    venue = f"bybit-{market}"
    before = {
        "gaps": sum_counter(GAPS, venue=venue),
        "resyncs": sum_counter(RESYNCS, venue=venue),
        "dead": sum_counter(DEAD_LETTERS, venue=venue),
        "refused": sum_counter(SUBSCRIBE_ERRORS, venue=venue),
        "reconnects": sum_counter(RECONNECTS, venue=venue),
    }
    await _deltas(fake, T0 - 5000, n=10)  # the book exists before we connect
    cfg = BybitConfig.from_settings(ingest.settings, market, [*GOOD, "BADUSDT"])  # type: ignore[arg-type]
    cfg = BybitConfig(**{**cfg.__dict__, "ws_url": fake.ws_url, "ping_interval_s": 0.2})
    fake.refuse = {"BADUSDT"}
    conn = BybitConnector(cfg, ingest.publisher)
    await conn.start()
    try:
        await fake.wait_subscribed(6)
        await eventually(lambda: len(conn.subscribe_errors) == 3, what="3 refused topics surfaced")
        assert conn.refused_streams == {"publicTrade.BADUSDT", "orderbook.50.BADUSDT", "kline.1.BADUSDT"}
        await eventually(lambda: all(conn.books[s].synced for s in GOOD), what="snapshots")
        await _deltas(fake, T0)
        first = await _trades(fake, T0)
        # the same trades again inside later frames (Bybit may resend across frames): dropped by id
        await _trades(fake, T0 + 10, resend=first)
        # a lost delta: the next one does not follow -> resubscribe -> fresh snapshot
        await fake.delta("BTCUSDT", [(Decimal("43773.99"), Decimal("1"))], [], T0 + 20, drop=True)
        stale = fake.delta_frame("ETHUSDT", [(Decimal("2249.99"), Decimal("2"))], [], T0 + 21)
        await fake.broadcast(stale)
        await _deltas(fake, T0 + 30)
        await fake.broadcast(stale)  # stale: u <= last u, ignored
        # Bybit restarted its book service: snapshot with u=1 replaces the book, numbering restarts
        await fake.service_restart("ETHUSDT", T0 + 40)
        await _deltas(fake, T0 + 50)
        await fake.kline("BTCUSDT", T0 - 60_000, confirm=False)
        await fake.kline("BTCUSDT", T0 - 60_000, confirm=True)
        await fake.kline("BTCUSDT", T0 - 60_000, confirm=True)  # a repeated closed candle is not a second bar
        garbage_sent: list[bytes] = []
        for g in GARBAGE:
            garbage_sent += [g] * await fake.broadcast(g)
        await eventually(
            lambda: all(conn.books[s].synced and conn.books[s].last_u == fake.book(s).last_u for s in GOOD),
            what="resubscribe after gap",
        )
        # disconnect: trades made meanwhile are lost for us; the reconnect gap must be marked
        await fake.drop_connections()
        fake.topics.clear()
        await _deltas(fake, T0 + 60)
        await fake.wait_subscribed(6)
        await eventually(lambda: all(conn.books[s].synced for s in GOOD), what="snapshots after reconnect")
        await _deltas(fake, T0 + 70)
        await _trades(fake, T0 + 80)
        await eventually(lambda: fake.pings > 0 and conn.pongs > 0, what="client ping answered")

        def caught_up() -> bool:
            return all(
                conn.books[s].synced
                and conn.books[s].last_u == fake.book(s).last_u
                and conn.trades_published >= sum(len(v) for v in fake.sent_trades.values())
                for s in GOOD
            )

        await eventually(caught_up, within_s=15, what="connector caught up")

        for s in GOOD:
            book = conn.books[s].book
            assert book is not None
            assert (book.bids, book.asks) == (fake.book(s).bids, fake.book(s).asks), s

        sent = {(s, i) for s, ids in fake.sent_trades.items() for i in ids}
        topics = await ingest.everything(at_least=len(sent) + len(garbage_sent))
        events = topics["trades"]
        trades = [e for e in events if isinstance(e, Trade)]
        got = [(t.symbol, t.trade_id) for t in trades]
        assert len(got) == len(set(got)), "duplicate trade in the topic"
        assert set(got) == sent
        gaps = [e for e in events if isinstance(e, Gap)]
        assert {(g.symbol, g.reason) for g in gaps} == {(s, "reconnect") for s in GOOD}
        assert {t.symbol for t in trades if t.incomplete} == set(GOOD)

        books = topics["books"]
        book_gaps = [e for e in books if isinstance(e, Gap)]
        assert ("BTCUSDT", "sequence_gap") in {(g.symbol, g.reason) for g in book_gaps}
        assert {g.symbol for g in book_gaps if g.reason == "reconnect"} == set(GOOD)
        tops = [e for e in books if isinstance(e, BookTop)]
        for s in GOOD:
            last = [b for b in tops if b.symbol == s][-1]
            assert last.best_bid == max(fake.book(s).bids) and last.best_ask == min(fake.book(s).asks)

        bars = [e for e in topics["bars"] if isinstance(e, Bar)]
        assert [(b.symbol, b.interval) for b in bars] == [("BTCUSDT", "1m")]

        letters = [d for d in topics["dead"] if isinstance(d, DeadLetter)]
        assert sorted(d.raw_bytes() for d in letters) == sorted(garbage_sent)

        assert sum_counter(GAPS, venue=venue) - before["gaps"] == len(gaps) + len(book_gaps)
        assert sum_counter(RESYNCS, venue=venue) - before["resyncs"] >= 1
        assert sum_counter(DEAD_LETTERS, venue=venue) - before["dead"] == len(garbage_sent)
        assert sum_counter(SUBSCRIBE_ERRORS, venue=venue) - before["refused"] == 3
        assert sum_counter(RECONNECTS, venue=venue) - before["reconnects"] >= 1
        assert conn.resubscribes >= 1
        assert "refused" in conn.health().detail
    finally:
        await conn.stop()
        await fake.stop()


async def test_bybit_subscribes_at_most_10_args_per_request(ingest: Ingest) -> None:
    fake = FakeBybit("spot")
    await fake.start()
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
    cfg = BybitConfig(market="spot", ws_url=fake.ws_url, symbols=tuple(symbols), send_rate_per_s=100.0)
    conn = BybitConnector(cfg, ingest.publisher)
    await conn.start()
    try:
        await fake.wait_subscribed(15)
        sizes = [len(r["args"]) for r in fake.received if r.get("op") == "subscribe"]
        assert sizes == [10, 5]
        await eventually(lambda: all(conn.books[s].synced for s in symbols), what="five snapshots")
        assert conn.health().ok
    finally:
        await conn.stop()
        await fake.stop()


async def test_throttled_books_get_a_trailing_publish(ingest: Ingest) -> None:
    """At most one BookTop per 200 ms of event time, yet the last state is published once the burst ends."""
    fake = FakeBybit("linear", seed=9)
    await fake.start()
    cfg = BybitConfig(market="linear", ws_url=fake.ws_url, symbols=("BTCUSDT",), book_min_interval_ms=200)
    conn = BybitConnector(cfg, ingest.publisher)
    await conn.start()
    try:
        await fake.wait_subscribed(3)
        await eventually(lambda: conn.books["BTCUSDT"].synced, what="snapshot")
        for i in range(10):  # a burst within 10 ms of event time: throttled
            bids, asks = random_changes(fake.rng, fake.book("BTCUSDT"), *MIDS["BTCUSDT"])
            await fake.delta("BTCUSDT", bids, asks, T0 + i)
        await eventually(lambda: conn.books["BTCUSDT"].last_u == fake.book("BTCUSDT").last_u, what="caught up")
        await eventually(lambda: not conn.book_state("BTCUSDT").dirty, what="trailing flush")
        tops = [e for e in (await ingest.everything())["books"] if isinstance(e, BookTop)]
        assert 2 <= len(tops) < 10
        truth = fake.book("BTCUSDT")
        assert tops[-1].update_id == truth.last_u
        assert tops[-1].bids == sorted(truth.bids.items(), reverse=True)[:20]
        assert tops[-1].asks == sorted(truth.asks.items())[:20]
    finally:
        await conn.stop()
        await fake.stop()
