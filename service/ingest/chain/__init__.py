"""On-chain ingest: Ethereum (websocket JSON-RPC) and Bitcoin Core (ZMQ + JSON-RPC) into `chain.txs`.

`ChainFollower` is chain-agnostic: it follows a node through the small `NodeClient` interface (heads, blocks by
number and by hash), handles reorgs with a window of recent blocks (`reorg.RecentBlocks`), checkpoints the last
fully published block in the state store (`checkpoint.CheckpointStore`), backfills whatever it missed in order,
publishes one event per involved address (`publisher.ChainPublisher`) and applies a block's transactions to the
address activity features (service.features.chain) once the block is `confirmations` deep.
"""

from service.ingest.chain.follower import ChainFollower
from service.ingest.chain.node import Block, BlockRef, MalformedResponse, NodeClient, NodeUnavailable

__all__ = ["Block", "BlockRef", "ChainFollower", "MalformedResponse", "NodeClient", "NodeUnavailable"]
