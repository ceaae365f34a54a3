"""Checkpoints in the state store: the last fully published block per chain, and the recent window's blocks.

Order of writes for a block: events published and flushed -> block body saved -> checkpoint moved. So after any
stop or crash, everything at or below the checkpoint was acknowledged by the bus, and the follower resumes at
checkpoint + 1: no block skipped, none published twice after its checkpoint (a crash between the flush and the
checkpoint write republishes that one block: at-least-once). A reorg moves the checkpoint back to the fork point
once the retractions are flushed. A second checkpoint records how far address features have been applied.

Keys (under the store's prefix): `chain:<chain>:checkpoint` (JSON {number, hash}), `chain:<chain>:features`
(block number), `chain:<chain>:window` (hash number -> block hash), `chain:<chain>:block:<number>` (JSON body).
"""

from __future__ import annotations

from typing import Any

import orjson

from service.ingest.chain.node import Block, BlockRef
from service.schemas.chain import Chain, ChainTx
from service.state.base import StateStore


def encode_block(block: Block, tx_dicts: list[dict[str, Any]] | None = None) -> bytes:
    txs = tx_dicts if tx_dicts is not None else [t.json_dict() for t in block.txs]
    return orjson.dumps(
        {
            "chain": block.chain.value,
            "number": block.number,
            "hash": block.hash,
            "parent_hash": block.parent_hash,
            "time_ms": block.time_ms,
            "txs": txs,
        }
    )


def decode_block(data: bytes) -> Block:
    d = orjson.loads(data)
    return Block(
        chain=Chain(d["chain"]),
        number=int(d["number"]),
        hash=str(d["hash"]),
        parent_hash=str(d["parent_hash"]),
        time_ms=int(d["time_ms"]),
        txs=tuple(ChainTx.model_validate(t) for t in d["txs"]),
    )


class CheckpointStore:
    def __init__(self, state: StateStore, chain: Chain) -> None:
        self.state = state
        self.chain = chain
        base = f"chain:{chain.value}"
        self.k_checkpoint = base + ":checkpoint"
        self.k_features = base + ":features"
        self.k_window = base + ":window"
        self._k_block = base + ":block:"

    async def checkpoint(self) -> BlockRef | None:
        raw = await self.state.get(self.k_checkpoint)
        if raw is None:
            return None
        d = orjson.loads(raw)
        return BlockRef(int(d["number"]), str(d["hash"]))

    async def set_checkpoint(self, ref: BlockRef | None) -> None:
        if ref is None:
            await self.state.delete(self.k_checkpoint)
        else:
            await self.state.set(self.k_checkpoint, orjson.dumps({"number": ref.number, "hash": ref.hash}))

    async def features_checkpoint(self) -> int | None:
        raw = await self.state.get(self.k_features)
        return None if raw is None else int(raw)

    async def set_features_checkpoint(self, number: int) -> None:
        await self.state.set(self.k_features, number)

    async def save_block(self, block: Block, tx_dicts: list[dict[str, Any]] | None = None) -> None:
        await self.state.set(self._k_block + str(block.number), encode_block(block, tx_dicts))
        await self.state.hset(self.k_window, {str(block.number): block.hash})

    async def drop_blocks(self, numbers: list[int]) -> None:
        if not numbers:
            return
        await self.state.delete(*[self._k_block + str(n) for n in numbers])
        await self.state.hdel(self.k_window, *[str(n) for n in numbers])

    async def window_blocks(self, up_to: int) -> list[Block]:
        """The saved blocks at or below `up_to` whose body matches the window index (others are dropped)."""
        index = await self.state.hgetall(self.k_window)
        out: list[Block] = []
        stale: list[int] = []
        for n_s, h in index.items():
            n = int(n_s)
            if n > up_to:
                stale.append(n)
                continue
            raw = await self.state.get(self._k_block + n_s)
            if raw is None:
                stale.append(n)
                continue
            b = decode_block(raw)
            if b.hash != h.decode():
                stale.append(n)
                continue
            out.append(b)
        await self.drop_blocks(stale)
        return out
