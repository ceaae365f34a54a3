"""A local Bitcoin Core: ZMQ PUB `hashblock` (3 frames: topic, 32-byte hash, 4-byte LE sequence) and JSON-RPC
over HTTP with basic auth (getblockchaininfo, getbestblockhash, getblockcount, getblockhash, getblock 0-3).

Amounts are written as Bitcoin Core writes them: JSON numbers with exactly 8 decimals. `getblock <hash> 3`
includes each input's `prevout`; 2 does not (as in Core >= 23). Test controls: `mine`, `reorg`, `go_down` /
`come_up` (ZMQ publisher and RPC port closed; blocks keep coming and their notifications are lost), `inject`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import struct
from typing import Any

import zmq
import zmq.asyncio

from harness.servers import free_port
from tests.ingest.chain.fakechain import BtcTx, FakeBlock, FakeChain

_AMT = re.compile(r'"__amt__(-?\d+\.\d{8})"')


def amt(sat: int) -> str:
    """A placeholder replaced by a bare 8-decimal JSON number after encoding."""
    return f"__amt__{sat // 100_000_000}.{sat % 100_000_000:08d}"


class FakeBitcoinCore:
    def __init__(self, chain: FakeChain, *, user: str = "rmad", password: str = "secret") -> None:
        self.chain = chain
        self.user, self.password = user, password
        self.rpc_port = free_port()
        self.zmq_port = free_port()
        self.rpc_url = f"http://{user}:{password}@127.0.0.1:{self.rpc_port}/"
        self.zmq_url = f"tcp://127.0.0.1:{self.zmq_port}"
        self._ctx = zmq.asyncio.Context()
        self._pub: zmq.asyncio.Socket | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._seq = 0
        self._faults: dict[str, list[str]] = {}
        self.requests: dict[str, int] = {}

    # ---------------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        pub = self._ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(self.zmq_url)
        self._pub = pub
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.rpc_port)

    async def stop(self) -> None:
        await self.go_down()
        self._ctx.term()

    async def go_down(self) -> None:
        if self._pub is not None:
            self._pub.close(linger=0)
            self._pub = None
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def come_up(self) -> None:
        await self.start()

    # ------------------------------------------------------------------------------------------- chain control
    async def mine(self, n: int = 1, **kw: Any) -> list[FakeBlock]:
        blocks = self.chain.mine(n, **kw)
        for b in blocks:
            await self._notify(b)
        return blocks

    async def reorg(self, depth: int, new_length: int) -> tuple[list[FakeBlock], list[FakeBlock]]:
        orphaned, new = self.chain.reorg(depth, new_length)
        for b in new:  # Core announces every block connected to the new best chain
            await self._notify(b)
        return orphaned, new

    def inject(self, method: str, fault: str, times: int = 1) -> None:
        """Next `times` answers of `method`: fractional_sat, missing_height, bad_json, zmq_garbage (see code)."""
        self._faults.setdefault(method, []).extend([fault] * times)

    async def _notify(self, b: FakeBlock) -> None:
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        if self._pub is not None:
            await self._pub.send_multipart([b"hashblock", bytes.fromhex(b.hash), struct.pack("<I", seq)])

    async def send_zmq_garbage(self) -> None:
        if self._pub is not None:
            await self._pub.send_multipart([b"hashblock", b"short"])

    # ------------------------------------------------------------------------------------------------ formats
    def _tx(self, b: FakeBlock, t: BtcTx, verbosity: int) -> dict[str, Any]:
        vin: list[dict[str, Any]] = []
        for i in t.vin:
            if i.txid is None:
                vin.append({"coinbase": "03" + f"{b.number:06x}", "txinwitness": ["00" * 32], "sequence": 4294967295})
                continue
            d: dict[str, Any] = {
                "txid": i.txid,
                "vout": i.vout,
                "scriptSig": {"asm": "", "hex": ""},
                "txinwitness": ["30" * 36, "02" * 33],
                "sequence": 4294967293,
            }
            if verbosity >= 3:
                d["prevout"] = {
                    "generated": False,
                    "height": max(0, b.number - 10),
                    "value": amt(i.sat),
                    "scriptPubKey": {
                        "asm": "0 " + "ab" * 20,
                        "desc": f"addr({i.address})#xxxxxxxx",
                        "hex": "0014" + "ab" * 20,
                        "address": i.address,
                        "type": "witness_v0_keyhash",
                    },
                }
            vin.append(d)
        vout = []
        for n, o in enumerate(t.vout):
            spk: dict[str, Any] = {"asm": "", "hex": "", "type": o.kind}
            if o.address is not None:
                spk.update({"address": o.address, "desc": f"addr({o.address})#yyyyyyyy"})
            else:
                spk.update({"asm": "OP_RETURN 726d6164", "hex": "6a04726d6164", "desc": "raw(6a04726d6164)#zzzzzzzz"})
            vout.append({"value": amt(o.sat), "n": n, "scriptPubKey": spk})
        d = {
            "txid": t.txid,
            "hash": t.txid,
            "version": 2,
            "size": 200 + 60 * len(vin),
            "vsize": 150,
            "weight": 600,
            "locktime": 0,
            "vin": vin,
            "vout": vout,
            "hex": "02000000",
        }
        if t.vin[0].txid is not None:
            d["fee"] = amt(sum(i.sat for i in t.vin) - sum(o.sat for o in t.vout))
        return d

    def _block(self, b: FakeBlock, verbosity: int) -> dict[str, Any]:
        d: dict[str, Any] = {
            "hash": b.hash,
            "confirmations": self.chain.tip.number - b.number + 1 if self.chain.block(b.number) is b else -1,
            "height": b.number,
            "version": 536870912,
            "versionHex": "20000000",
            "merkleroot": "aa" * 32,
            "time": b.time_s,
            "mediantime": b.time_s - 300,
            "nonce": 12345,
            "bits": "17034219",
            "difficulty": 90666502495565.78,
            "chainwork": "00" * 32,
            "nTx": len(b.txs),
            "strippedsize": 900,
            "size": 1000,
            "weight": 3600,
        }
        if b.number > 0:
            d["previousblockhash"] = b.parent
        nxt = self.chain.block(b.number + 1)
        if nxt is not None and self.chain.block(b.number) is b:
            d["nextblockhash"] = nxt.hash
        txs = [t for t in b.txs if isinstance(t, BtcTx)]
        d["tx"] = [t.txid for t in txs] if verbosity == 1 else [self._tx(b, t, verbosity) for t in txs]
        return d

    # ------------------------------------------------------------------------------------------------- server
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload = self._answer(headers, body)
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    def _answer(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if headers.get("authorization") != expected:
            return 401, b""
        req = json.loads(body)
        method, params, rid = req.get("method"), req.get("params") or [], req.get("id")
        self.requests[method] = self.requests.get(method, 0) + 1
        faults = self._faults.get(method, [])
        fault = faults.pop(0) if faults else None
        if fault == "bad_json":
            return 200, b'{"result": {"hash": '

        def ok(result: Any) -> tuple[int, bytes]:
            text = json.dumps({"result": result, "error": None, "id": rid})
            return 200, _AMT.sub(r"\1", text).encode()

        def err(code: int, msg: str) -> tuple[int, bytes]:
            return 500, json.dumps({"result": None, "error": {"code": code, "message": msg}, "id": rid}).encode()

        tip = self.chain.tip
        if method == "getblockchaininfo":
            return ok({"chain": "main", "blocks": tip.number, "headers": tip.number, "bestblockhash": tip.hash})
        if method == "getbestblockhash":
            return ok(tip.hash)
        if method == "getblockcount":
            return ok(tip.number)
        if method == "getblockhash":
            b = self.chain.block(int(params[0]))
            return ok(b.hash) if b is not None else err(-8, "Block height out of range")
        if method == "getblock":
            b = self.chain.by_hash.get(params[0])
            if b is None:
                return err(-5, "Block not found")
            verbosity = int(params[1]) if len(params) > 1 else 1
            block = self._block(b, verbosity)
            if fault == "fractional_sat" and block["tx"]:
                block["tx"][0]["vout"][0]["value"] = "__amt__0.00000001"
                text = json.dumps({"result": block, "error": None, "id": rid})
                return 200, _AMT.sub(r"\1", text).replace("0.00000001,", "0.000000015,", 1).encode()
            if fault == "missing_height":
                del block["height"]
            return ok(block)
        return err(-32601, "Method not found")
