"""Publishes a block's transactions to `chain.txs`: one record per involved address, keyed `chain:address`.

Why per address: consumers keep per-address state (features, scores), and Kafka orders records only within a
partition, so each address's events must share a key. The transaction body is serialised once per transaction and
each address's record only adds `address` and `role`. Retractions are the same records with `kind="retraction"`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from prometheus_client import Counter

from service.bus.base import Producer
from service.ingest.chain import metrics
from service.ingest.chain.node import Block, MalformedResponse
from service.ingest.deadletter import DeadLetterWriter
from service.schemas.chain import ChainTx, involved_addresses


class ChainPublisher:
    def __init__(self, producer: Producer, topic: str, dead_letter_topic: str, *, max_io_per_event: int = 64) -> None:
        self.producer = producer
        self.topic = topic
        self.max_io_per_event = max_io_per_event
        self.dead_letters = DeadLetterWriter(producer, dead_letter_topic)
        self.events = 0
        self._counters: dict[tuple[str, str], Counter] = {}

    async def publish_tx(self, tx: ChainTx, kind: str = "tx", body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one record per involved address; returns the transaction's JSON dict (reused for storage)."""
        d = body if body is not None else tx.json_dict()
        chain = d["chain"]
        d["kind"] = kind
        n = 0
        # an exchange payout with hundreds of outputs would otherwise be copied whole into hundreds of records
        trim = len(tx.inputs) + len(tx.outputs) > self.max_io_per_event
        for address, role in involved_addresses(tx):
            rec = d
            if trim:
                rec = dict(
                    d,
                    inputs=[i for i in d["inputs"] if i["address"] == address],
                    outputs=[o for o in d["outputs"] if o["address"] == address],
                    io_truncated=True,
                )
            rec["address"] = address
            rec["role"] = role
            await self.producer.send(self.topic, orjson.dumps(rec), key=f"{chain}:{address}".encode())
            n += 1
        d["kind"] = "tx"
        self.events += n
        counter = self._counters.get((chain, kind))
        if counter is None:
            counter = self._counters[(chain, kind)] = metrics.EVENTS.labels(chain, kind)
        counter.inc(n)
        return d

    async def publish_block(self, block: Block) -> list[dict[str, Any]]:
        bodies = [await self.publish_tx(tx) for tx in block.txs]
        chain = block.chain.value
        metrics.TRANSACTIONS.labels(chain).inc(len(block.txs))
        return bodies

    async def retract_block(self, block: Block) -> None:
        """Publish the block's transactions again as retractions, in reverse order (undo order)."""
        for tx in reversed(block.txs):
            await self.publish_tx(tx, "retraction")

    async def dead_letter(self, chain: str, err: MalformedResponse) -> None:
        await self.dead_letters.write(
            chain, err.source or "node", err.raw or b"", err.reason, err.detail, int(time.time() * 1000)
        )

    async def flush(self) -> None:
        await self.producer.flush()
