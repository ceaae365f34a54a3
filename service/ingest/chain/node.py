"""What the follower needs from a node, whatever the chain: heads, blocks by number and by hash.

Errors are split by what the follower does about them: `NodeUnavailable` (connection lost, timeout, node error)
-> reconnect with backoff; `MalformedResponse` (the node answered something that does not follow the protocol)
-> keep the raw answer in the dead-letter topic with a reason code, then retry the same request. A block is
never skipped because its response was bad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.ingest.errors import ParseError
from service.schemas.chain import Chain, ChainTx


@dataclass(frozen=True, slots=True)
class BlockRef:
    number: int
    hash: str


@dataclass(frozen=True, slots=True)
class Block:
    """A normalised block: transactions are tx-level ChainTx (`address` = the first involved address)."""

    chain: Chain
    number: int
    hash: str
    parent_hash: str
    time_ms: int
    txs: tuple[ChainTx, ...]

    @property
    def ref(self) -> BlockRef:
        return BlockRef(self.number, self.hash)


class NodeUnavailable(ConnectionError):
    """The node cannot be reached or did not answer in time; reconnect and resume from the checkpoint."""


class RpcError(NodeUnavailable):
    """The node answered with a JSON-RPC error object (retried like an unavailable node)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"rpc error {code}: {message}")
        self.code = code
        self.message = message


class MalformedResponse(ParseError):
    """A response that breaks the protocol; `raw` is kept in the dead-letter record, `source` names the call."""

    def __init__(self, reason: str, detail: str = "", *, raw: bytes | str = b"", source: str = "") -> None:
        super().__init__(reason, detail)
        self.raw = raw
        self.source = source


class NodeClient(Protocol):
    """A connection to one node. `connect` also subscribes to new heads."""

    chain: Chain

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def next_head(self, timeout_s: float) -> BlockRef | None:
        """The next announced head, or None when the announcement carries no usable ref or none came in time.

        Raises NodeUnavailable when the subscription is gone, MalformedResponse for a bad announcement.
        """

    async def head(self) -> BlockRef: ...

    async def block_by_number(self, number: int) -> Block: ...

    async def block_by_hash(self, block_hash: str) -> Block: ...
