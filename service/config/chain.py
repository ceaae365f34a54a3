"""Settings owned by the chain part (fields are read as RMAD_<FIELD>).

Everything is off by default: a chain source runs only when its node URL is set (`RMAD_CHAIN_ETH_WS_URL`, or both
`RMAD_CHAIN_BTC_RPC_URL` and `RMAD_CHAIN_BTC_ZMQ_URL`). No public node is assumed: point them at your own
geth/Erigon/Nethermind (websocket JSON-RPC) or Bitcoin Core (`-zmqpubhashblock=tcp://...`, `-rpcuser/-rpcpassword`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator


class ChainSettings(BaseModel):
    """Knobs of the chain part; composed into service.settings.Settings."""

    # --- Ethereum (any EVM node with eth_subscribe over websocket)
    chain_eth_ws_url: str | None = Field(default=None, description="ws(s)://host:8546 of an Ethereum node")
    chain_eth_confirmations: int = Field(
        default=12, ge=0, le=1000, description="blocks deep before a block's txs update address features"
    )
    chain_eth_start_block: int | None = Field(
        default=None, ge=0, description="first block when no checkpoint exists (default: the node's head)"
    )
    chain_eth_receipts: Literal["auto", "block", "tx"] = Field(
        default="auto",
        description="eth_getBlockReceipts (block), eth_getTransactionReceipt per tx (tx), or block then tx",
    )

    # --- Bitcoin Core (ZMQ hashblock + JSON-RPC)
    chain_btc_rpc_url: str | None = Field(default=None, description="http://user:pass@host:8332 of Bitcoin Core")
    chain_btc_zmq_url: str | None = Field(default=None, description="tcp://host:28332 (-zmqpubhashblock)")
    chain_btc_confirmations: int = Field(
        default=2, ge=0, le=1000, description="blocks deep before a block's txs update address features"
    )
    chain_btc_start_block: int | None = Field(
        default=None, ge=0, description="first block when no checkpoint exists (default: the node's head)"
    )
    chain_btc_poll_s: float = Field(
        default=30.0, gt=0, description="also ask getbestblockhash this often: ZMQ drops messages silently"
    )
    chain_btc_reorg_depth: int = Field(
        default=12,
        ge=2,
        le=1000,
        description="Bitcoin blocks kept to find a fork point (a verbose block is megabytes; reorgs are 1-2 deep)",
    )
    chain_btc_getblock_verbosity: Literal[2, 3] = Field(
        default=3, description="3 returns prevouts (Core >= 23), needed for sender addresses and values"
    )

    # --- shared
    chain_reorg_depth: int = Field(
        default=64, ge=2, le=10_000, description="Ethereum blocks kept to find a fork point and retract (N)"
    )
    chain_max_io_per_event: int = Field(
        default=64,
        ge=1,
        description="a Bitcoin tx with more inputs + outputs is published per address with only that address's",
    )
    chain_backfill_batch: int = Field(default=16, ge=1, le=1000, description="blocks fetched concurrently")
    chain_request_timeout_s: float = Field(default=30.0, gt=0, description="node RPC request timeout")
    chain_backoff_initial_s: float = Field(default=0.5, gt=0, description="first reconnect delay (doubling)")
    chain_backoff_max_s: float = Field(default=30.0, gt=0, description="cap of the reconnect delay")
    chain_features: bool = Field(default=True, description="update address activity features in the state store")
    chain_features_applied_ttl_s: int = Field(
        default=6 * 3600,
        ge=60,
        description="how long a tx's applied-once marker is kept (it only has to outlive a crash mid-block)",
    )
    chain_features_window_ttl_s: int = Field(
        default=2 * 86400, ge=3600, description="lifetime of the 1 h / 24 h degree window sets"
    )

    @field_validator("chain_eth_ws_url", "chain_btc_rpc_url", "chain_btc_zmq_url")
    @classmethod
    def _chain_blank_is_none(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else v.strip()

    @field_validator("chain_eth_ws_url")
    @classmethod
    def _chain_ws(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("ws://", "wss://")):
            raise ValueError("expected ws://host:port or wss://host/path")
        return v

    @field_validator("chain_btc_rpc_url")
    @classmethod
    def _chain_http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("expected http://user:pass@host:8332")
        return v

    @field_validator("chain_btc_zmq_url")
    @classmethod
    def _chain_zmq(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("tcp://", "ipc://")):
            raise ValueError("expected tcp://host:28332 or ipc:///path")
        return v

    @model_validator(mode="after")
    def _chain_consistent(self) -> ChainSettings:
        if (self.chain_btc_rpc_url is None) != (self.chain_btc_zmq_url is None):
            raise ValueError("RMAD_CHAIN_BTC_RPC_URL and RMAD_CHAIN_BTC_ZMQ_URL must be set together")
        for name, depth, confirmations in (
            ("RMAD_CHAIN_REORG_DEPTH", self.chain_reorg_depth, self.chain_eth_confirmations),
            ("RMAD_CHAIN_BTC_REORG_DEPTH", self.chain_btc_reorg_depth, self.chain_btc_confirmations),
        ):
            if depth <= confirmations:
                raise ValueError(
                    f"{name} ({depth}) must exceed the confirmations ({confirmations}): "
                    "blocks are kept until their txs are final"
                )
        return self

    @property
    def chain_eth_enabled(self) -> bool:
        return self.chain_eth_ws_url is not None

    @property
    def chain_btc_enabled(self) -> bool:
        return self.chain_btc_rpc_url is not None and self.chain_btc_zmq_url is not None
