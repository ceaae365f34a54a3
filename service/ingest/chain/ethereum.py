"""Ethereum over websocket JSON-RPC: `eth_subscribe("newHeads")`, `eth_getBlockByNumber(n, true)`, receipts.

One websocket carries the subscription and every request (JSON-RPC ids match answers to requests, so block and
receipt requests of a backfill batch are in flight together). Receipts give status, gas used and the effective gas
price (fee = gasUsed x effectiveGasPrice) and the created contract's address: `eth_getBlockReceipts` (geth,
Erigon, Nethermind, Besu, Reth) when the node has it, else `eth_getTransactionReceipt` per transaction.

`parse_block` turns the node's JSON (hex quantities, 0x-prefixed data) into ChainTx; anything that does not follow
the format raises MalformedResponse with a reason code, and the raw block goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from service.ingest.chain.node import Block, BlockRef, MalformedResponse, NodeUnavailable, RpcError
from service.schemas.chain import Chain, ChainTx

log = logging.getLogger(__name__)

_HEX = frozenset("0123456789abcdefABCDEF")
_CLOSED = object()
# JSON-RPC codes meaning "this node does not have eth_getBlockReceipts"
_NO_METHOD = (-32601, -32602, -32600)


# --------------------------------------------------------------------------------------------- field parsers
def _bad(reason: str, detail: str, raw: Any, source: str) -> MalformedResponse:
    try:
        data = orjson.dumps(raw)
    except TypeError:
        data = repr(raw).encode()
    return MalformedResponse(reason, detail, raw=data, source=source)


def qty(v: Any, name: str) -> int:
    """A JSON-RPC QUANTITY: "0x" + hex digits, no leading zeros required to be checked."""
    if not isinstance(v, str) or len(v) < 3 or v[:2] != "0x" or not _HEX.issuperset(v[2:]):
        raise ValueError(f"{name}: expected a hex quantity, got {v!r}")
    return int(v, 16)


def hash32(v: Any, name: str) -> str:
    if not isinstance(v, str) or len(v) != 66 or v[:2] != "0x" or not _HEX.issuperset(v[2:]):
        raise ValueError(f"{name}: expected a 32-byte 0x hash, got {v!r}")
    return v.lower()


def address(v: Any, name: str) -> str:
    if not isinstance(v, str) or len(v) != 42 or v[:2] != "0x" or not _HEX.issuperset(v[2:]):
        raise ValueError(f"{name}: expected a 20-byte 0x address, got {v!r}")
    return v.lower()


def data(v: Any, name: str) -> str:
    if not isinstance(v, str) or v[:2] != "0x" or len(v) % 2 or not _HEX.issuperset(v[2:]):
        raise ValueError(f"{name}: expected 0x-prefixed hex data, got {v!r}"[:200])
    return v


def parse_head(header: Any) -> BlockRef:
    """A newHeads notification's header -> (number, hash)."""
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    return BlockRef(qty(header.get("number"), "number"), hash32(header.get("hash"), "hash"))


def parse_block(
    raw: Any, receipts: list[Any], ingest_ms: int | None = None, source: str = "eth_getBlockByNumber"
) -> Block:
    """Normalise a full block (`eth_getBlockByNumber(n, true)`) and its receipts into a Block of ChainTx."""
    if not isinstance(raw, dict):
        raise _bad("not_an_object", f"block is {type(raw).__name__}", raw, source)
    try:
        number = qty(raw.get("number"), "number")
        bhash = hash32(raw.get("hash"), "hash")
        parent = hash32(raw.get("parentHash"), "parentHash")
        time_ms = qty(raw.get("timestamp"), "timestamp") * 1000
        txs_raw = raw.get("transactions")
        if not isinstance(txs_raw, list):
            raise ValueError("transactions: expected a list")
    except ValueError as exc:
        raise _bad("bad_block_field", str(exc), raw, source) from None
    by_hash: dict[str, dict[str, Any]] = {}
    for r in receipts:
        if not isinstance(r, dict) or not isinstance(r.get("transactionHash"), str):
            raise _bad("bad_receipt", "receipt without transactionHash", r, "receipts")
        by_hash[r["transactionHash"].lower()] = r
    now = int(time.time() * 1000) if ingest_ms is None else ingest_ms
    out: list[ChainTx] = []
    for i, t in enumerate(txs_raw):
        if not isinstance(t, dict):
            raise _bad("not_full_transactions", f"transaction {i} is {type(t).__name__}", raw, source)
        try:
            out.append(_parse_tx(t, by_hash, number, bhash, time_ms, now, i))
        except ValueError as exc:
            raise _bad("bad_transaction", f"tx {i}: {exc}", raw, source) from None
        except LookupError as exc:
            raise _bad("missing_receipt", str(exc), receipts, "receipts") from None
    return Block(Chain.ETHEREUM, number, bhash, parent, time_ms, tuple(out))


def _parse_tx(
    t: dict[str, Any], receipts: dict[str, dict[str, Any]], number: int, bhash: str, time_ms: int, now: int, i: int
) -> ChainTx:
    h = hash32(t.get("hash"), "hash")
    frm = address(t.get("from"), "from")
    to_raw = t.get("to")
    to = None if to_raw is None else address(to_raw, "to")
    value = qty(t.get("value"), "value")
    inp = data(t.get("input", "0x"), "input")
    r = receipts.get(h)
    if r is None:
        raise LookupError(f"no receipt for transaction {h}")
    rb = r.get("blockHash")
    if rb is not None and hash32(rb, "receipt.blockHash") != bhash:
        raise NodeUnavailable(f"receipt of {h} belongs to block {rb}, not {bhash} (reorg while fetching)")
    gas_used = qty(r.get("gasUsed"), "receipt.gasUsed")
    price_raw = r.get("effectiveGasPrice", t.get("gasPrice"))
    fee = gas_used * qty(price_raw, "effectiveGasPrice") if price_raw is not None else None
    blob_gas = r.get("blobGasUsed")  # EIP-4844 blob transactions also pay for blob gas
    if fee is not None and blob_gas is not None:
        fee += qty(blob_gas, "receipt.blobGasUsed") * qty(r.get("blobGasPrice"), "receipt.blobGasPrice")
    status_raw = r.get("status")
    status = None if status_raw is None else qty(status_raw, "receipt.status")  # pre-Byzantium: root, no status
    created = r.get("contractAddress")
    contract = address(created, "contractAddress") if (to is None and created is not None) else None
    # pydantic validates again in Rust: cheaper than model_construct, which runs in Python
    return ChainTx(
        chain=Chain.ETHEREUM,
        address=frm,
        role="sender",
        tx_hash=h,
        tx_index=i,
        block_number=number,
        block_hash=bhash,
        time_ms=time_ms,
        ingest_time_ms=now,
        from_address=frm,
        to_address=to,
        contract_address=contract,
        value=value,
        fee=fee,
        status=status,
        input_size=(len(inp) - 2) // 2,
        method=inp[:10] if len(inp) >= 10 else None,
    )


# ----------------------------------------------------------------------------------------------- the client
class EthereumNode:
    """NodeClient over one websocket. Reconnecting is the follower's job: `connect` after `close`."""

    chain = Chain.ETHEREUM

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        receipts: str = "auto",
        max_message_bytes: int = 512 * 1024 * 1024,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.receipts_mode = receipts
        self.max_message_bytes = max_message_bytes
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._block_receipts = receipts != "tx"
        self._subscription: str | None = None

    async def connect(self) -> None:
        await self.close()
        try:
            self._ws = await asyncio.wait_for(
                connect(
                    self.url, max_size=self.max_message_bytes, ping_interval=20, ping_timeout=20, open_timeout=None
                ),
                self.timeout_s,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise NodeUnavailable(f"cannot connect to {self.url}: {exc}") from exc
        self._events = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_loop(self._ws))
        sub = await self._call("eth_subscribe", ["newHeads"])
        if not isinstance(sub, str):
            raise _bad("bad_subscription", "eth_subscribe did not return an id", sub, "eth_subscribe")
        self._subscription = sub

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        self._fail_pending(NodeUnavailable("connection closed"))

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    async def _read_loop(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self._dispatch(message)
        except ConnectionClosed:
            pass
        finally:
            self._fail_pending(NodeUnavailable("connection closed"))
            self._events.put_nowait(_CLOSED)

    def _dispatch(self, message: str | bytes) -> None:
        try:
            obj = orjson.loads(message)
        except orjson.JSONDecodeError:
            self._events.put_nowait(MalformedResponse("invalid_json", "", raw=message, source="websocket"))
            return
        for item in obj if isinstance(obj, list) else [obj]:
            if isinstance(item, dict) and isinstance(item.get("id"), int) and item["id"] in self._pending:
                fut = self._pending.pop(item["id"])
                if not fut.done():
                    fut.set_result(item)
            elif isinstance(item, dict) and item.get("method") == "eth_subscription":
                self._events.put_nowait(item.get("params"))
            else:
                self._events.put_nowait(
                    MalformedResponse(
                        "unexpected_message", "no matching request", raw=orjson.dumps(item), source="websocket"
                    )
                )

    async def _call(self, method: str, params: list[Any]) -> Any:
        ws = self._ws
        if ws is None:
            raise NodeUnavailable("not connected")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).decode())
            resp = await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError:
            raise NodeUnavailable(f"{method} timed out after {self.timeout_s}s") from None
        except ConnectionClosed as exc:
            raise NodeUnavailable(f"connection closed during {method}") from exc
        finally:
            self._pending.pop(rid, None)
        err = resp.get("error")
        if err is not None:
            if not isinstance(err, dict):
                raise _bad("bad_error_object", "error is not an object", resp, method)
            raise RpcError(int(err.get("code", 0)), str(err.get("message", "")))
        if "result" not in resp:
            raise _bad("missing_result", "response without result or error", resp, method)
        return resp["result"]

    async def next_head(self, timeout_s: float) -> BlockRef | None:
        try:
            ev = await asyncio.wait_for(self._events.get(), timeout_s)
        except TimeoutError:
            return None
        if ev is _CLOSED:
            raise NodeUnavailable("websocket closed")
        if isinstance(ev, MalformedResponse):
            raise ev
        try:
            if not isinstance(ev, dict):
                raise ValueError("params is not an object")
            return parse_head(ev.get("result"))
        except ValueError as exc:
            raise _bad("bad_head", str(exc), ev, "eth_subscription") from None

    async def head(self) -> BlockRef:
        raw = await self._call("eth_getBlockByNumber", ["latest", False])
        try:
            return parse_head(raw)
        except ValueError as exc:
            raise _bad("bad_head", str(exc), raw, "eth_getBlockByNumber") from None

    async def block_by_number(self, number: int) -> Block:
        raw = await self._call("eth_getBlockByNumber", [hex(number), True])
        if raw is None:
            raise NodeUnavailable(f"node has no block {number} yet")
        return await self._complete(raw, "eth_getBlockByNumber")

    async def block_by_hash(self, block_hash: str) -> Block:
        raw = await self._call("eth_getBlockByHash", [block_hash, True])
        if raw is None:
            raise NodeUnavailable(f"node does not know block {block_hash}")
        return await self._complete(raw, "eth_getBlockByHash")

    async def _complete(self, raw: Any, source: str) -> Block:
        if not isinstance(raw, dict):
            raise _bad("not_an_object", "block is not an object", raw, source)
        try:  # the header first: receipts are asked for by this block's hash
            hash32(raw.get("hash"), "hash")
            qty(raw.get("number"), "number")
        except ValueError as exc:
            raise _bad("bad_block_field", str(exc), raw, source) from None
        txs = raw.get("transactions")
        receipts: list[Any] = []
        if isinstance(txs, list) and txs:
            receipts = await self._receipts(raw)
        return parse_block(raw, receipts, source=source)

    async def _receipts(self, raw: dict[str, Any]) -> list[Any]:
        if self._block_receipts:
            try:
                res = await self._call("eth_getBlockReceipts", [raw.get("hash")])
            except RpcError as exc:
                if self.receipts_mode != "auto" or exc.code not in _NO_METHOD:
                    raise
                log.info("node has no eth_getBlockReceipts (%s); fetching receipts per transaction", exc)
                self._block_receipts = False
            else:
                if not isinstance(res, list):
                    raise _bad(
                        "bad_receipts", "eth_getBlockReceipts did not return a list", res, "eth_getBlockReceipts"
                    )
                return res
        hashes = [t.get("hash") for t in raw.get("transactions", []) if isinstance(t, dict)]
        res = await asyncio.gather(*(self._call("eth_getTransactionReceipt", [h]) for h in hashes))
        if any(r is None for r in res):
            raise NodeUnavailable("a receipt is not available yet")
        return list(res)
