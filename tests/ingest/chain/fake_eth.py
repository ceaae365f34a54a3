"""A local Ethereum node speaking websocket JSON-RPC with geth's field formats (hex quantities, 0x data).

Implements eth_subscribe("newHeads") / eth_unsubscribe, eth_blockNumber, eth_chainId, eth_getBlockByNumber,
eth_getBlockByHash, eth_getBlockReceipts and eth_getTransactionReceipt over a FakeChain. Test controls: `mine`,
`reorg` (announces every block of the new chain, as geth does), `go_down`/`come_up` (connections cut, port
closed, blocks keep coming), and `inject` (the next answer to a method is malformed).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from harness.servers import free_port
from tests.ingest.chain.fakechain import EthTx, FakeBlock, FakeChain


def hx(n: int) -> str:
    return hex(n)


class FakeEthNode:
    def __init__(self, chain: FakeChain, *, block_receipts: bool = True) -> None:
        self.chain = chain
        self.block_receipts = block_receipts
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self._server: Server | None = None
        self._subs: dict[ServerConnection, str] = {}
        self._faults: dict[str, list[str]] = {}
        self.requests: dict[str, int] = {}
        self.connections = 0

    # ---------------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port, max_size=None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._subs.clear()

    async def go_down(self) -> None:
        """The node disappears: every connection is cut (no close frame) and the port stops listening."""
        conns = list(self._subs)
        if self._server is not None:
            self._server.close(close_connections=False)
        for c in conns:
            c.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None
        self._subs.clear()

    async def come_up(self) -> None:
        await self.start()

    # ------------------------------------------------------------------------------------------- chain control
    async def mine(self, n: int = 1, **kw: Any) -> list[FakeBlock]:
        blocks = self.chain.mine(n, **kw)
        for b in blocks:
            await self._announce(b)
        return blocks

    async def reorg(self, depth: int, new_length: int) -> tuple[list[FakeBlock], list[FakeBlock]]:
        orphaned, new = self.chain.reorg(depth, new_length)
        for b in new:
            await self._announce(b)
        return orphaned, new

    def inject(self, method: str, fault: str, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with `fault`: missing_hash, bad_value, bad_receipts."""
        self._faults.setdefault(method, []).extend([fault] * times)

    async def send_garbage(self, text: str = "this is not json {") -> None:
        for c in list(self._subs):
            with contextlib.suppress(ConnectionClosed):
                await c.send(text)

    async def _announce(self, b: FakeBlock) -> None:
        for conn, sub in list(self._subs.items()):
            msg = {
                "jsonrpc": "2.0",
                "method": "eth_subscription",
                "params": {"subscription": sub, "result": self._header(b)},
            }
            with contextlib.suppress(ConnectionClosed):
                await conn.send(orjson.dumps(msg).decode())

    # ------------------------------------------------------------------------------------------------ formats
    def _header(self, b: FakeBlock) -> dict[str, Any]:
        return {
            "baseFeePerGas": hx(7 * 10**9),
            "difficulty": "0x0",
            "extraData": "0x",
            "gasLimit": hx(30_000_000),
            "gasUsed": hx(sum(t.gas_used for t in b.txs if isinstance(t, EthTx))),
            "hash": b.hash,
            "logsBloom": "0x" + "00" * 256,
            "miner": "0x" + "95" * 20,
            "mixHash": "0x" + "11" * 32,
            "nonce": "0x0000000000000000",
            "number": hx(b.number),
            "parentHash": b.parent,
            "receiptsRoot": "0x" + "22" * 32,
            "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
            "stateRoot": "0x" + "33" * 32,
            "timestamp": hx(b.time_s),
            "transactionsRoot": "0x" + "44" * 32,
            "withdrawalsRoot": "0x" + "55" * 32,
        }

    def _tx(self, b: FakeBlock, i: int, t: EthTx) -> dict[str, Any]:
        return {
            "accessList": [],
            "blockHash": b.hash,
            "blockNumber": hx(b.number),
            "chainId": "0x1",
            "from": t.frm,
            "gas": hx(t.gas_used + 10_000),
            "gasPrice": hx(t.price),
            "hash": t.hash,
            "input": t.input,
            "maxFeePerGas": hx(t.price * 2),
            "maxPriorityFeePerGas": hx(10**9),
            "nonce": hx(t.nonce),
            "r": "0x" + "66" * 32,
            "s": "0x" + "77" * 32,
            "to": t.to,
            "transactionIndex": hx(i),
            "type": "0x2",
            "v": "0x1",
            "value": hx(t.value),
            "yParity": "0x1",
        }

    def _block(self, b: FakeBlock, full: bool) -> dict[str, Any]:
        d = self._header(b)
        d["size"] = hx(1000 + 120 * len(b.txs))
        d["uncles"] = []
        d["withdrawals"] = []
        txs = [t for t in b.txs if isinstance(t, EthTx)]
        d["transactions"] = [self._tx(b, i, t) for i, t in enumerate(txs)] if full else [t.hash for t in txs]
        return d

    def _receipt(self, b: FakeBlock, i: int, t: EthTx, cumulative: int) -> dict[str, Any]:
        return {
            "blockHash": b.hash,
            "blockNumber": hx(b.number),
            "contractAddress": t.contract,
            "cumulativeGasUsed": hx(cumulative),
            "effectiveGasPrice": hx(t.price),
            "from": t.frm,
            "gasUsed": hx(t.gas_used),
            "logs": [],
            "logsBloom": "0x" + "00" * 256,
            "status": hx(t.status),
            "to": t.to,
            "transactionHash": t.hash,
            "transactionIndex": hx(i),
            "type": "0x2",
        }

    def _receipts(self, b: FakeBlock) -> list[dict[str, Any]]:
        out, cum = [], 0
        for i, t in enumerate(b.txs):
            assert isinstance(t, EthTx)
            cum += t.gas_used
            out.append(self._receipt(b, i, t, cum))
        return out

    def _find(self, ref: Any) -> FakeBlock | None:
        if ref == "latest":
            return self.chain.tip
        if isinstance(ref, str) and len(ref) == 66:
            return self.chain.by_hash.get(ref)
        if isinstance(ref, str) and ref.startswith("0x"):
            return self.chain.block(int(ref, 16))
        return None

    # ----------------------------------------------------------------------------------------------- requests
    async def _handle(self, conn: ServerConnection) -> None:
        self.connections += 1
        try:
            async for message in conn:
                req = orjson.loads(message)
                resp = self._answer(conn, req)
                await conn.send(orjson.dumps(resp).decode())
        except ConnectionClosed:
            pass
        finally:
            self._subs.pop(conn, None)

    def _answer(self, conn: ServerConnection, req: dict[str, Any]) -> dict[str, Any]:
        method, params, rid = req.get("method"), req.get("params") or [], req.get("id")
        self.requests[method] = self.requests.get(method, 0) + 1

        def ok(result: Any) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": rid, "result": result}

        def err(code: int, msg: str) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": msg}}

        fault = self._faults.get(method, [])
        fault_now = fault.pop(0) if fault else None
        if method == "eth_subscribe":
            if params != ["newHeads"]:
                return err(-32602, "unsupported subscription")
            sub = "0x" + f"{self.connections:032x}"
            self._subs[conn] = sub
            return ok(sub)
        if method == "eth_unsubscribe":
            return ok(self._subs.pop(conn, None) is not None)
        if method == "eth_chainId":
            return ok("0x1")
        if method == "eth_blockNumber":
            return ok(hx(self.chain.tip.number))
        if method in ("eth_getBlockByNumber", "eth_getBlockByHash"):
            b = self._find(params[0])
            if b is None:
                return ok(None)
            if fault_now is not None and not params[1]:  # faults target full-block fetches only
                fault.insert(0, fault_now)
                fault_now = None
            block = self._block(b, bool(params[1]))
            if fault_now == "missing_hash":
                del block["hash"]
            elif fault_now == "bad_value" and block["transactions"]:
                block["transactions"][0]["value"] = "0xZZ"
            elif fault_now == "not_object":
                return ok("0xdeadbeef")
            return ok(block)
        if method == "eth_getBlockReceipts":
            if not self.block_receipts:
                return err(-32601, "the method eth_getBlockReceipts does not exist/is not available")
            b = self._find(params[0])
            if b is None:
                return ok(None)
            receipts = self._receipts(b)
            if fault_now == "bad_receipts" and receipts:
                receipts[0] = {"status": "0x1"}
            return ok(receipts)
        if method == "eth_getTransactionReceipt":
            for b in self.chain.canonical:
                for r in self._receipts(b):
                    if r["transactionHash"] == params[0]:
                        return ok(r)
            return ok(None)
        return err(-32601, f"the method {method} does not exist/is not available")
