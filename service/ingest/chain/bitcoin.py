"""Bitcoin Core: ZMQ `hashblock` notifications plus JSON-RPC over HTTP (`getblock <hash> 3`).

Why verbosity 3: it adds each input's `prevout` (address and value of the spent output; Bitcoin Core >= 23), which
is what gives a transaction its senders and its fee (inputs - outputs) without a -txindex lookup per input.
Verbosity 2 still works (`RMAD_CHAIN_BTC_GETBLOCK_VERBOSITY=2`) but inputs then carry no address or value.

ZMQ is a hint, not a log: a SUB socket reconnects by itself and silently loses what was published meanwhile. The
follower therefore treats every notification as "ask the node for its best block" (`getblockchaininfo`), notices
sequence gaps, and also polls on a timer; the blocks themselves always come from RPC, in height order.

Amounts are parsed from the JSON as decimals (never floats) and converted to integer satoshis exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import struct
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import zmq
import zmq.asyncio

from service.ingest.chain.node import Block, BlockRef, MalformedResponse, NodeUnavailable, RpcError
from service.schemas.chain import Chain, ChainTx, TxInput, TxOutput

log = logging.getLogger(__name__)

_SAT = Decimal(100_000_000)


def sats(v: Any, name: str) -> int:
    """BTC amount (a JSON number parsed as Decimal) -> satoshis, refusing anything not a whole satoshi."""
    if isinstance(v, bool) or not isinstance(v, Decimal | int):
        raise ValueError(f"{name}: expected a BTC amount, got {v!r}")
    q = Decimal(v) * _SAT
    if q != q.to_integral_value() or q < 0:
        raise ValueError(f"{name}: {v} is not a whole number of satoshis")
    return int(q)


def _hex64(v: Any, name: str) -> str:
    if not isinstance(v, str) or len(v) != 64:
        raise ValueError(f"{name}: expected a 64-char hex hash, got {v!r}")
    int(v, 16)
    return v.lower()


def _script_address(spk: Any) -> tuple[str | None, str]:
    if not isinstance(spk, dict):
        raise ValueError("scriptPubKey is not an object")
    addr = spk.get("address")
    if addr is None:  # Bitcoin Core < 22
        addrs = spk.get("addresses")
        if isinstance(addrs, list) and len(addrs) == 1:
            addr = addrs[0]
    if addr is not None and not isinstance(addr, str):
        raise ValueError("scriptPubKey.address is not a string")
    return addr, str(spk.get("type", ""))


def _bad(reason: str, detail: str, raw: Any, source: str) -> MalformedResponse:
    data = json.dumps(raw, default=str) if not isinstance(raw, bytes | str) else raw
    return MalformedResponse(reason, detail, raw=data, source=source)


def parse_block(raw: Any, ingest_ms: int | None = None, source: str = "getblock") -> Block:
    """Normalise `getblock <hash> 3` (or 2) into a Block of ChainTx with inputs (prevouts) and outputs."""
    if not isinstance(raw, dict):
        raise _bad("not_an_object", f"block is {type(raw).__name__}", raw, source)
    try:
        number = raw.get("height")
        if not isinstance(number, int) or number < 0:
            raise ValueError(f"height: expected a non-negative integer, got {number!r}")
        bhash = _hex64(raw.get("hash"), "hash")
        parent_raw = raw.get("previousblockhash")
        parent = "0" * 64 if parent_raw is None and number == 0 else _hex64(parent_raw, "previousblockhash")
        t = raw.get("time")
        if not isinstance(t, int):
            raise ValueError(f"time: expected unix seconds, got {t!r}")
        txs_raw = raw.get("tx")
        if not isinstance(txs_raw, list):
            raise ValueError("tx: expected a list")
    except ValueError as exc:
        raise _bad("bad_block_field", str(exc), raw, source) from None
    now = int(time.time() * 1000) if ingest_ms is None else ingest_ms
    out = []
    for i, tx in enumerate(txs_raw):
        try:
            out.append(_parse_tx(tx, number, bhash, t * 1000, now, i))
        except (ValueError, TypeError, AttributeError, LookupError, ArithmeticError) as exc:
            reason = "not_full_transactions" if isinstance(tx, str) else "bad_transaction"
            raise _bad(reason, f"tx {i}: {exc}", raw, source) from None
    return Block(Chain.BITCOIN, number, bhash, parent, t * 1000, tuple(out))


def _parse_tx(tx: Any, number: int, bhash: str, time_ms: int, now: int, index: int) -> ChainTx:
    if not isinstance(tx, dict):
        raise ValueError("transaction is not an object")
    txid = _hex64(tx.get("txid"), "txid")
    vin, vout = tx.get("vin"), tx.get("vout")
    if not isinstance(vin, list) or not isinstance(vout, list) or not vin:
        raise ValueError("vin/vout: expected lists")
    inputs: list[TxInput] = []
    has_prevouts = True
    for j, i in enumerate(vin):
        if not isinstance(i, dict):
            raise ValueError(f"vin {j} is not an object")
        if "coinbase" in i:
            inputs.append(TxInput())
            continue
        prev = i.get("prevout")
        if prev is None:
            has_prevouts = False
            inputs.append(TxInput(txid=_hex64(i.get("txid"), "vin.txid"), vout=int(i["vout"])))
            continue
        addr, _ = _script_address(prev.get("scriptPubKey"))
        inputs.append(
            TxInput(
                txid=_hex64(i.get("txid"), "vin.txid"),
                vout=int(i["vout"]),
                address=addr,
                value=sats(prev.get("value"), f"vin {j} prevout.value"),
            )
        )
    outputs: list[TxOutput] = []
    for j, o in enumerate(vout):
        if not isinstance(o, dict):
            raise ValueError(f"vout {j} is not an object")
        addr, kind = _script_address(o.get("scriptPubKey"))
        n = o.get("n")
        if not isinstance(n, int):
            raise ValueError(f"vout {j}: n is not an integer")
        outputs.append(TxOutput(n=n, address=addr, value=sats(o.get("value"), f"vout {j} value"), script_type=kind))
    total_out = sum(o.value for o in outputs)
    coinbase = inputs[0].txid is None
    fee: int | None
    if coinbase:
        fee = 0
    elif has_prevouts:
        fee = sum(i.value for i in inputs) - total_out
        if fee < 0:
            raise ValueError(f"inputs are worth less than outputs ({fee} sat)")
    else:
        fee = sats(tx["fee"], "fee") if "fee" in tx else None
    size = tx.get("size", 0)
    first = next((i.address for i in inputs if i.address), None) or next((o.address for o in outputs if o.address), "")
    # pydantic validates again in Rust: cheaper than model_construct, which runs in Python
    return ChainTx(
        chain=Chain.BITCOIN,
        address=first or "",
        role="sender",
        tx_hash=txid,
        tx_index=index,
        block_number=number,
        block_hash=bhash,
        time_ms=time_ms,
        ingest_time_ms=now,
        value=total_out,
        fee=fee,
        status=1,
        input_size=int(size) if isinstance(size, int) else 0,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
    )


class BitcoinNode:
    """NodeClient for Bitcoin Core: RPC over HTTP (basic auth from the URL), notifications over ZMQ SUB."""

    chain = Chain.BITCOIN

    def __init__(self, rpc_url: str, zmq_url: str, *, timeout_s: float = 30.0, verbosity: int = 3) -> None:
        parts = urlsplit(rpc_url)
        self._auth = (parts.username or "", parts.password or "") if parts.username else None
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        self.rpc_url = urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))
        self.zmq_url = zmq_url
        self.timeout_s = timeout_s
        self.verbosity = verbosity
        self._http: httpx.AsyncClient | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._sub: zmq.asyncio.Socket | None = None
        self._ids = itertools.count(1)
        self._seq: int | None = None
        self.missed_notifications = 0

    async def connect(self) -> None:
        await self.close()
        self._http = httpx.AsyncClient(auth=self._auth, timeout=self.timeout_s)
        self._ctx = zmq.asyncio.Context()
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)  # Bitcoin Core's advice: never drop notifications on our side
        sub.setsockopt(zmq.SUBSCRIBE, b"hashblock")
        sub.setsockopt(zmq.TCP_KEEPALIVE, 1)
        try:
            sub.connect(self.zmq_url)
        except zmq.ZMQError as exc:
            sub.close()
            raise NodeUnavailable(f"cannot connect to {self.zmq_url}: {exc}") from exc
        self._sub = sub
        self._seq = None
        await self._rpc("getblockchaininfo", [])  # fail now when RPC is unreachable or refuses the credentials

    async def close(self) -> None:
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
            self._http = None

    async def _rpc(self, method: str, params: list[Any]) -> Any:
        http = self._http
        if http is None:
            raise NodeUnavailable("not connected")
        body = {"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": params}
        try:
            resp = await http.post(self.rpc_url, json=body)
        except (httpx.TransportError, OSError) as exc:
            raise NodeUnavailable(f"{method}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code in (401, 403):
            raise NodeUnavailable(f"{method}: the node refused the RPC credentials (HTTP {resp.status_code})")
        try:
            obj = json.loads(resp.content, parse_float=Decimal)
        except ValueError:
            if resp.status_code >= 500 or resp.status_code == 503:
                raise NodeUnavailable(f"{method}: HTTP {resp.status_code}") from None
            raise _bad("invalid_json", f"HTTP {resp.status_code}", resp.content[:65536], method) from None
        if not isinstance(obj, dict):
            raise _bad("not_an_object", "response is not an object", obj, method)
        err = obj.get("error")
        if err is not None:
            if not isinstance(err, dict):
                raise _bad("bad_error_object", "error is not an object", obj, method)
            raise RpcError(int(err.get("code", 0)), str(err.get("message", "")))
        if "result" not in obj:
            raise _bad("missing_result", "response without result", obj, method)
        return obj["result"]

    async def next_head(self, timeout_s: float) -> BlockRef | None:
        """Wait for a hashblock notification; always None (the follower asks `head`), or raises on a bad frame."""
        sub = self._sub
        if sub is None:
            raise NodeUnavailable("not connected")
        if not await sub.poll(int(timeout_s * 1000)):
            return None
        parts = await sub.recv_multipart()
        if len(parts) != 3 or parts[0] != b"hashblock" or len(parts[1]) != 32 or len(parts[2]) != 4:
            raise MalformedResponse("bad_zmq_message", f"{len(parts)} parts", raw=b"|".join(parts), source="zmq")
        (seq,) = struct.unpack("<I", parts[2])
        if self._seq is not None and seq != (self._seq + 1) & 0xFFFFFFFF:
            self.missed_notifications += 1
            log.info(
                "bitcoin: zmq sequence jumped %d -> %d (notifications lost); syncing to the best block", self._seq, seq
            )
        self._seq = seq
        return None

    async def head(self) -> BlockRef:
        info = await self._rpc("getblockchaininfo", [])
        try:
            if not isinstance(info, dict) or not isinstance(info.get("blocks"), int):
                raise ValueError("blocks: expected an integer")
            return BlockRef(info["blocks"], _hex64(info.get("bestblockhash"), "bestblockhash"))
        except ValueError as exc:
            raise _bad("bad_head", str(exc), info, "getblockchaininfo") from None

    async def block_by_number(self, number: int) -> Block:
        h = await self._rpc("getblockhash", [number])
        try:
            h = _hex64(h, "getblockhash")
        except ValueError as exc:
            raise _bad("bad_block_hash", str(exc), h, "getblockhash") from None
        return await self.block_by_hash(h)

    async def block_by_hash(self, block_hash: str) -> Block:
        raw = await self._rpc("getblock", [block_hash, self.verbosity])
        return parse_block(raw)
