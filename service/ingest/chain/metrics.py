"""Prometheus metrics of chain ingest (`rmad_chain_*`), registered on service.metrics.REGISTRY.

Labels are bounded: `chain` is ethereum or bitcoin, `reason` a fixed code chosen by the code.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from service.metrics import REGISTRY

BLOCKS = Counter("rmad_chain_blocks_total", "Blocks fully published, by chain.", ["chain"], registry=REGISTRY)
TRANSACTIONS = Counter(
    "rmad_chain_transactions_total", "Transactions published (not per address), by chain.", ["chain"], registry=REGISTRY
)
EVENTS = Counter(
    "rmad_chain_events_total",
    "Per-address events written to chain.txs, by chain and kind (tx, retraction).",
    ["chain", "kind"],
    registry=REGISTRY,
)
REORGS = Counter("rmad_chain_reorgs_total", "Chain reorganisations handled, by chain.", ["chain"], registry=REGISTRY)
REORG_DEPTH = Histogram(
    "rmad_chain_reorg_depth_blocks",
    "Orphaned blocks per reorganisation, by chain.",
    ["chain"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
    registry=REGISTRY,
)
DEEP_REORGS = Counter(
    "rmad_chain_deep_reorgs_total",
    "Reorgs reaching past the kept window or past final (feature-applied) blocks: not fully retractable.",
    ["chain"],
    registry=REGISTRY,
)
BACKFILLED = Counter(
    "rmad_chain_backfilled_blocks_total",
    "Blocks published while catching up (behind the head: after a restart, a drop or a burst).",
    ["chain"],
    registry=REGISTRY,
)
HEAD_LAG_BLOCKS = Gauge(
    "rmad_chain_head_lag_blocks", "Node head minus the last published block, by chain.", ["chain"], registry=REGISTRY
)
HEAD_LAG_SECONDS = Gauge(
    "rmad_chain_head_lag_seconds",
    "Wall clock minus the timestamp of the last published block, by chain.",
    ["chain"],
    registry=REGISTRY,
)
TIP = Gauge("rmad_chain_tip_block", "Last fully published block number, by chain.", ["chain"], registry=REGISTRY)
FEATURE_TXS = Counter(
    "rmad_chain_feature_updates_total",
    "Transactions applied to address features (once each), by chain.",
    ["chain"],
    registry=REGISTRY,
)
RECONNECTS = Counter(
    "rmad_chain_reconnects_total", "Node reconnects, by chain and reason.", ["chain", "reason"], registry=REGISTRY
)
CONNECTED = Gauge("rmad_chain_connected", "1 while connected to the node, by chain.", ["chain"], registry=REGISTRY)
