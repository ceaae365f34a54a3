"""Local fake Binance and Bybit servers that speak the exchanges' real websocket and REST formats.

Each keeps the *truth*: the order book it has built from every change it made (sent or not), and every trade it
actually put on the wire. Tests inject faults (dropped or reordered depth updates, stale resends, duplicate and
skipped trades, disconnects, server shutdown notices, refused subscriptions, garbage) and then compare the
connector's local book and the broker's topics against that truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Side = dict[Decimal, Decimal]


def _fmt(d: Decimal) -> str:
    return format(d, "f")


@dataclass
class TruthBook:
    bids: Side = field(default_factory=dict)
    asks: Side = field(default_factory=dict)
    last_u: int = 1000
    history: list[tuple[int, Side, Side]] = field(default_factory=list)

    def apply(self, bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q

    def remember(self) -> None:
        self.history.append((self.last_u, dict(self.bids), dict(self.asks)))
        del self.history[:-200]

    def state_at_lag(self, lag: int) -> tuple[int, Side, Side]:
        if lag <= 0 or not self.history:
            return self.last_u, dict(self.bids), dict(self.asks)
        return self.history[max(0, len(self.history) - 1 - lag)]


def random_changes(
    rng: random.Random, book: TruthBook, mid: Decimal, tick: Decimal, n: int = 3
) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    """Random level changes around `mid` that never cross the book; some delete existing levels."""
    bids: list[tuple[Decimal, Decimal]] = []
    asks: list[tuple[Decimal, Decimal]] = []
    for _ in range(n):
        is_bid = rng.random() < 0.5
        side = book.bids if is_bid else book.asks
        if side and rng.random() < 0.3:
            price = rng.choice(sorted(side))
            size = Decimal(0)
        else:
            k = rng.randint(1, 30)
            price = mid - tick * k if is_bid else mid + tick * k
            size = Decimal(rng.randint(1, 50_000)) / Decimal(100)
        (bids if is_bid else asks).append((price, size))
    return bids, asks


class _Http:
    """A minimal HTTP/1.1 server for the REST depth snapshot (aiohttp is not a dependency)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.requests = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode().split(" ", 2)
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                self.requests += 1
                status, body = await self.handler(method, target)
                head = (
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'ERR'}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()


class FakeExchange:
    """Shared websocket plumbing: clients, broadcast, disconnect."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.clients: set[ServerConnection] = set()
        self.server: Server | None = None
        self.port = 0
        self.received: list[Any] = []
        self.connections = 0
        self.subscribed = asyncio.Event()

    async def _start_ws(self) -> None:
        self.server = await serve(self._handler, "127.0.0.1", 0, compression=None)
        self.port = next(iter(self.server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.clients.add(ws)
        try:
            async for msg in ws:
                try:
                    req = orjson.loads(msg)
                except orjson.JSONDecodeError:
                    continue
                self.received.append(req)
                await self.on_request(ws, req)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)

    async def on_request(self, ws: ServerConnection, req: Any) -> None:
        raise NotImplementedError

    async def broadcast(self, frame: str | bytes) -> int:
        """Send to every connected client; returns how many got it."""
        n = 0
        for ws in list(self.clients):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame)
                n += 1
        return n

    async def drop_connections(self) -> None:
        """Cut every client abruptly (the network failed or the exchange restarted a gateway)."""
        self.subscribed.clear()
        for ws in list(self.clients):
            ws.transport.abort()
        for _ in range(100):
            if not self.clients:
                return
            await asyncio.sleep(0.01)


class FakeBinance(FakeExchange):
    """Binance spot (`market="spot"`) or USD-M futures (`"usdm"`): combined streams, SUBSCRIBE, REST depth."""

    def __init__(self, market: str = "spot", seed: int = 7) -> None:
        super().__init__(seed)
        self.market = market
        self.books: dict[str, TruthBook] = {}
        self.trade_ids: dict[str, int] = {}
        self.sent_trades: dict[str, set[int]] = {}
        self.subscriptions: set[str] = set()
        self.refuse: set[str] = set()
        self.snapshot_lags: list[int] = []
        self.http = _Http(self._rest)
        self.last_sent: dict[str, str] = {}
        self.prev_u: dict[str, int] = {}

    async def start(self) -> None:
        await self._start_ws()
        await self.http.start()

    async def stop(self) -> None:
        await super().stop()
        await self.http.stop()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    def book(self, symbol: str) -> TruthBook:
        if symbol not in self.books:
            self.books[symbol] = TruthBook(last_u=self.rng.randint(10_000, 1_000_000))
        return self.books[symbol]

    async def on_request(self, ws: ServerConnection, req: Any) -> None:
        if req.get("method") == "SUBSCRIBE":
            params = req.get("params", [])
            bad = [p for p in params if p.split("@")[0].upper() in self.refuse]
            if bad:
                err = {"code": -1121, "msg": f"Invalid symbol: {bad[0]}"}
                await ws.send(orjson.dumps({"error": err, "id": req.get("id")}))
                params = [p for p in params if p not in bad]
            else:
                await ws.send(orjson.dumps({"result": None, "id": req.get("id")}))
            self.subscriptions.update(params)
            self.subscribed.set()

    async def _rest(self, method: str, target: str) -> tuple[int, bytes]:
        url = urlsplit(target)
        want = "/api/v3/depth" if self.market == "spot" else "/fapi/v1/depth"
        if url.path != want:
            return 404, b'{"code":-1,"msg":"not found"}'
        symbol = parse_qs(url.query).get("symbol", [""])[0]
        book = self.book(symbol)
        lag = self.snapshot_lags.pop(0) if self.snapshot_lags else 0
        last_u, bids, asks = book.state_at_lag(lag)
        body: dict[str, Any] = {
            "lastUpdateId": last_u,
            "bids": [[_fmt(p), _fmt(q)] for p, q in sorted(bids.items(), reverse=True)],
            "asks": [[_fmt(p), _fmt(q)] for p, q in sorted(asks.items())],
        }
        if self.market == "usdm":
            body["E"] = body["T"] = 1_700_000_000_000
        return 200, orjson.dumps(body)

    async def drop_connections(self) -> None:
        self.subscriptions.clear()
        await super().drop_connections()

    async def shutdown_and_wait(self) -> None:
        """Send `serverShutdown`; the client must close and come back on its own."""
        before = self.connections
        self.subscriptions.clear()
        told = await self.shutdown_notice()
        for _ in range(500):
            if self.connections >= before + told:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("client did not reconnect after serverShutdown")

    # --- market actions

    async def wait_subscribed(self, n_streams: int, within_s: float = 10.0) -> None:
        for _ in range(int(within_s * 100)):
            if len(self.subscriptions) >= n_streams and self.clients:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{n_streams} streams not subscribed within {within_s}s")

    def _wrap(self, stream: str, data: dict[str, Any]) -> bytes:
        return orjson.dumps({"stream": stream, "data": data})

    async def trade(
        self,
        symbol: str,
        price: str,
        qty: str,
        buyer_maker: bool,
        t_ms: int,
        *,
        skip: int = 0,
        duplicate: bool = False,
    ) -> int:
        """Send one aggTrade. `skip` ids are never sent (a gap); `duplicate` sends the frame twice."""
        tid = self.trade_ids.get(symbol, 5_000_000) + 1 + skip
        self.trade_ids[symbol] = tid
        data = {
            "e": "aggTrade", "E": t_ms, "s": symbol, "a": tid, "p": price, "q": qty,
            "f": tid * 2, "l": tid * 2, "T": t_ms, "m": buyer_maker, "M": True,
        }  # fmt: skip
        frame = self._wrap(f"{symbol.lower()}@aggTrade", data)
        if self.clients:
            self.sent_trades.setdefault(symbol, set()).add(tid)
        await self.broadcast(frame)
        if duplicate:
            await self.broadcast(frame)
        return tid

    def depth_frame(
        self, symbol: str, bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]], t_ms: int
    ) -> bytes:
        """Apply a change to the truth and return the diff frame (the caller decides whether to send it)."""
        book = self.book(symbol)
        book.apply(bids, asks)
        first = book.last_u + 1
        book.last_u += self.rng.randint(1, 3)
        data: dict[str, Any] = {
            "e": "depthUpdate",
            "E": t_ms,
            "s": symbol,
            "U": first,
            "u": book.last_u,
            "b": [[_fmt(p), _fmt(q)] for p, q in bids],
            "a": [[_fmt(p), _fmt(q)] for p, q in asks],
        }
        if self.market == "usdm":
            data["T"] = t_ms - 3
            data["pu"] = self.prev_u.get(symbol, first - 1)
        self.prev_u[symbol] = book.last_u
        book.remember()
        return self._wrap(f"{symbol.lower()}@depth@100ms", data)

    async def depth(
        self,
        symbol: str,
        bids: list[tuple[Decimal, Decimal]],
        asks: list[tuple[Decimal, Decimal]],
        t_ms: int,
        *,
        drop: bool = False,
    ) -> bytes:
        frame = self.depth_frame(symbol, bids, asks, t_ms)
        if not drop:
            await self.broadcast(frame)
            self.last_sent[symbol] = frame.decode()
        return frame

    async def kline(self, symbol: str, open_ms: int, closed: bool, o: str, h: str, lo: str, c: str) -> None:
        k = {
            "t": open_ms, "T": open_ms + 59_999, "s": symbol, "i": "1m", "f": 1, "L": 2, "o": o, "c": c,
            "h": h, "l": lo, "v": "12.5", "n": 7, "x": closed, "q": "100.0", "V": "5.0", "Q": "40.0", "B": "0",
        }  # fmt: skip
        await self.broadcast(
            self._wrap(f"{symbol.lower()}@kline_1m", {"e": "kline", "E": open_ms + 1, "s": symbol, "k": k})
        )

    async def send_recorded(self, frame: str, *, drop: bool = False) -> None:
        """Send one recorded combined-stream frame; depth frames also move the truth (even when dropped)."""
        msg = orjson.loads(frame)
        data = msg.get("data", {})
        if data.get("e") == "depthUpdate":
            book = self.book(data["s"])
            book.apply(
                [(Decimal(p), Decimal(q)) for p, q in data["b"]], [(Decimal(p), Decimal(q)) for p, q in data["a"]]
            )
            book.last_u = data["u"]
            book.remember()
        elif data.get("e") == "aggTrade" and self.clients and not drop:
            self.sent_trades.setdefault(data["s"], set()).add(data["a"])
        if not drop:
            await self.broadcast(frame)

    async def shutdown_notice(self) -> int:
        return await self.broadcast(self._wrap("!serverShutdown", {"e": "serverShutdown", "E": 1_700_000_000_000}))


class FakeBybit(FakeExchange):
    """Bybit v5 public spot (`market="spot"`, numeric trade ids) or linear (UUID trade ids)."""

    def __init__(self, market: str = "spot", seed: int = 11, depth: int = 50) -> None:
        super().__init__(seed)
        self.market = market
        self.depth_n = depth
        self.books: dict[str, TruthBook] = {}
        self.sent_trades: dict[str, set[str]] = {}
        self.topics: set[str] = set()
        self.refuse: set[str] = set()
        self.trade_seq = 2_290_000_000_090_712_222
        self.last_ts = 1_703_430_557_696
        self.pings = 0
        self.conn_id = str(uuid.UUID(int=self.rng.getrandbits(128)))

    async def start(self) -> None:
        await self._start_ws()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v5/public/{self.market}"

    def book(self, symbol: str) -> TruthBook:
        if symbol not in self.books:
            self.books[symbol] = TruthBook(last_u=1)
        return self.books[symbol]

    def _ack(self, req: Any, success: bool, msg: str) -> bytes:
        body: dict[str, Any] = {"success": success, "ret_msg": msg, "conn_id": self.conn_id, "op": req.get("op")}
        if req.get("req_id") is not None:
            body["req_id"] = req["req_id"]
        return orjson.dumps(body)

    async def on_request(self, ws: ServerConnection, req: Any) -> None:
        op = req.get("op")
        if op == "ping":
            self.pings += 1
            pong: dict[str, Any] = {"success": True, "ret_msg": "pong", "conn_id": self.conn_id, "op": "ping"}
            if self.market == "linear":
                pong = {
                    "req_id": req.get("req_id", ""),
                    "op": "pong",
                    "args": ["1703430744103"],
                    "conn_id": self.conn_id,
                }
            await ws.send(orjson.dumps(pong))
            return
        args = list(req.get("args", []))
        if op == "subscribe":
            bad = [a for a in args if a.rsplit(".", 1)[-1] in self.refuse]
            if bad:
                await ws.send(self._ack(req, False, f"error:handler not found,topic:{bad[0]}"))
                return
            await ws.send(self._ack(req, True, "subscribe" if self.market == "spot" else ""))
            self.topics.update(args)
            for a in args:
                if a.startswith("orderbook."):
                    await ws.send(self.snapshot_frame(a.rsplit(".", 1)[-1]))
            self.subscribed.set()
        elif op == "unsubscribe":
            await ws.send(self._ack(req, True, "unsubscribe" if self.market == "spot" else ""))
            self.topics.difference_update(args)

    async def wait_subscribed(self, n_topics: int, within_s: float = 10.0) -> None:
        for _ in range(int(within_s * 100)):
            if len(self.topics) >= n_topics and self.clients:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{n_topics} topics not subscribed within {within_s}s")

    def _levels(self, side: Side, reverse: bool) -> list[list[str]]:
        return [[_fmt(p), _fmt(q)] for p, q in sorted(side.items(), reverse=reverse)[: self.depth_n]]

    def snapshot_frame(self, symbol: str, ts: int | None = None) -> bytes:
        b = self.book(symbol)
        ts = ts if ts is not None else self.last_ts
        data = {
            "s": symbol,
            "b": self._levels(b.bids, True),
            "a": self._levels(b.asks, False),
            "u": b.last_u,
            "seq": b.last_u * 7,
        }
        return orjson.dumps(
            {"topic": f"orderbook.{self.depth_n}.{symbol}", "ts": ts, "type": "snapshot", "data": data, "cts": ts - 32}
        )

    def delta_frame(
        self, symbol: str, bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]], ts: int
    ) -> bytes:
        b = self.book(symbol)
        b.apply(bids, asks)
        b.last_u += 1
        self.last_ts = max(self.last_ts, ts)
        data = {
            "s": symbol,
            "b": [[_fmt(p), _fmt(q)] for p, q in bids],
            "a": [[_fmt(p), _fmt(q)] for p, q in asks],
            "u": b.last_u,
            "seq": b.last_u * 7,
        }
        # linear frames put "type" before "ts": key order must not matter
        if self.market == "linear":
            return orjson.dumps(
                {"topic": f"orderbook.{self.depth_n}.{symbol}", "type": "delta", "ts": ts, "data": data, "cts": ts - 20}
            )
        return orjson.dumps(
            {"topic": f"orderbook.{self.depth_n}.{symbol}", "ts": ts, "type": "delta", "data": data, "cts": ts - 20}
        )

    async def delta(
        self,
        symbol: str,
        bids: list[tuple[Decimal, Decimal]],
        asks: list[tuple[Decimal, Decimal]],
        ts: int,
        *,
        drop: bool = False,
    ) -> bytes:
        frame = self.delta_frame(symbol, bids, asks, ts)
        if not drop:
            await self.broadcast(frame)
        return frame

    async def service_restart(self, symbol: str, ts: int) -> None:
        """Bybit restarted its book service: a snapshot with u=1 arrives and must replace the book."""
        b = self.book(symbol)
        b.last_u = 1
        await self.broadcast(self.snapshot_frame(symbol, ts))

    def new_trade_id(self) -> str:
        if self.market == "linear":
            return str(uuid.UUID(int=self.rng.getrandbits(128)))
        self.trade_seq += self.rng.randint(1, 5)  # spot ids grow but are not contiguous
        return str(self.trade_seq)

    async def trades(
        self, symbol: str, items: Iterable[tuple[str, str, str, int]], *, resend: list[str] | None = None
    ) -> list[str]:
        """Send one publicTrade frame with (price, size, side, T) items; `resend` repeats earlier trade ids."""
        data = []
        ids = []
        for price, size, side, t in items:
            tid = self.new_trade_id()
            ids.append(tid)
            data.append({"i": tid, "T": t, "p": price, "v": size, "S": side, "s": symbol, "BT": False})
        for tid in resend or []:
            data.append({"i": tid, "T": 1_703_430_744_000, "p": "1", "v": "1", "S": "Buy", "s": symbol, "BT": False})
        frame = {
            "topic": f"publicTrade.{symbol}",
            "ts": max((d["T"] for d in data), default=0),
            "type": "snapshot",
            "data": data,
        }
        if self.clients:
            self.sent_trades.setdefault(symbol, set()).update(ids)
        await self.broadcast(orjson.dumps(frame))
        return ids

    async def kline(self, symbol: str, start: int, confirm: bool) -> None:
        k = {"start": start, "end": start + 59_999, "interval": "1", "open": "100", "close": "101",
             "high": "102", "low": "99", "volume": "2.081", "turnover": "210.2", "confirm": confirm,
             "timestamp": start + 1000}  # fmt: skip
        await self.broadcast(
            orjson.dumps({"topic": f"kline.1.{symbol}", "data": [k], "ts": start + 1000, "type": "snapshot"})
        )
