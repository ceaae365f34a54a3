"""The `ingest` role's chain sources: one ChainFollower per configured node (none when no URL is set)."""

from __future__ import annotations

import argparse

from service.ingest.chain.follower import ChainFollower, FollowerConfig
from service.ingest.chain.node import NodeClient
from service.ingest.chain.publisher import ChainPublisher
from service.runtime import Component, Health, Runtime
from service.schemas.chain import Chain
from service.settings import Settings


class _ProducerOwner:
    """Starts the chain sources' shared producer before the followers and stops it after them."""

    name = "chain-producer"

    def __init__(self, publisher: ChainPublisher) -> None:
        self.publisher = publisher
        self.started = False

    async def start(self) -> None:
        await self.publisher.producer.start()
        self.started = True

    async def stop(self) -> None:
        await self.publisher.producer.stop()

    def health(self) -> Health:
        return Health(self.started, "" if self.started else "not started")


def follower_config(settings: Settings, chain: Chain) -> FollowerConfig:
    eth = chain == Chain.ETHEREUM
    return FollowerConfig(
        chain=chain,
        confirmations=settings.chain_eth_confirmations if eth else settings.chain_btc_confirmations,
        reorg_depth=settings.chain_reorg_depth if eth else settings.chain_btc_reorg_depth,
        backfill_batch=settings.chain_backfill_batch,
        start_block=settings.chain_eth_start_block if eth else settings.chain_btc_start_block,
        poll_s=30.0 if eth else settings.chain_btc_poll_s,
        backoff_initial_s=settings.chain_backoff_initial_s,
        backoff_max_s=settings.chain_backoff_max_s,
        features=settings.chain_features,
        applied_ttl_s=settings.chain_features_applied_ttl_s,
        window_ttl_s=settings.chain_features_window_ttl_s,
    )


def chain_nodes(settings: Settings) -> list[NodeClient]:
    nodes: list[NodeClient] = []
    if settings.chain_eth_ws_url is not None:
        from service.ingest.chain.ethereum import EthereumNode

        nodes.append(
            EthereumNode(
                settings.chain_eth_ws_url,
                timeout_s=settings.chain_request_timeout_s,
                receipts=settings.chain_eth_receipts,
            )
        )
    if settings.chain_btc_rpc_url is not None and settings.chain_btc_zmq_url is not None:
        from service.ingest.chain.bitcoin import BitcoinNode

        nodes.append(
            BitcoinNode(
                settings.chain_btc_rpc_url,
                settings.chain_btc_zmq_url,
                timeout_s=settings.chain_request_timeout_s,
                verbosity=settings.chain_btc_getblock_verbosity,
            )
        )
    return nodes


def build_chain_components(runtime: Runtime, args: argparse.Namespace) -> list[Component]:
    """Active only when a chain node URL is configured."""
    settings = runtime.settings
    nodes = chain_nodes(settings)
    if not nodes:
        return []
    publisher = ChainPublisher(
        runtime.bus.producer(),
        settings.topic_chain,
        settings.topic_dead_letters,
        max_io_per_event=settings.chain_max_io_per_event,
    )
    out: list[Component] = [_ProducerOwner(publisher)]
    for node in nodes:
        out.append(ChainFollower(node, publisher, runtime.state, follower_config(settings, node.chain)))
    return out
