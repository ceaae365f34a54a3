"""Settings owned by the ingest part (fields are read as RMAD_<FIELD>).

Lists (`RMAD_INGEST_SYMBOLS`, `RMAD_INGEST_VENUES`, `RMAD_INGEST_STREAMS`) accept `A,B,C` or a JSON list.
URLs default to the exchanges' real public endpoints; tests point them at local fake servers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

VenueName = Literal["binance-spot", "binance-usdm", "bybit-spot", "bybit-linear"]
StreamName = Literal["trades", "books", "bars"]

ALL_VENUES: tuple[VenueName, ...] = ("binance-spot", "binance-usdm", "bybit-spot", "bybit-linear")
ALL_STREAMS: tuple[StreamName, ...] = ("trades", "books", "bars")


def _split(value: object) -> object:
    """`"a, b"` -> `["a", "b"]`; JSON lists and real lists pass through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [p.strip() for p in text.split(",") if p.strip()]
    return value


class IngestSettings(BaseModel):
    """Knobs of the ingest part; composed into service.settings.Settings."""

    # --- what to follow
    ingest_venues: Annotated[list[VenueName], NoDecode] = Field(
        default_factory=lambda: list(ALL_VENUES), description="exchange feeds `rmad ingest` follows live"
    )
    ingest_symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
        description="exchange symbols (upper case, no separator) followed on every configured venue",
    )
    ingest_streams: Annotated[list[StreamName], NoDecode] = Field(
        default_factory=lambda: list(ALL_STREAMS), description="event kinds to subscribe to"
    )
    ingest_kline_interval: Literal["1m", "3m", "5m", "15m", "1h"] = Field(default="1m", description="candle stream")
    ingest_binance_trade_stream: Literal["aggTrade", "trade"] = Field(
        default="aggTrade", description="Binance trade stream (aggregated or raw trades)"
    )

    # --- packing trades into records (service/ingest/packing.py)
    ingest_pack_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="a market.trades record packs the trades of one partition published within this many ms "
        "(0: one record per trade)",
    )
    ingest_pack_max_trades: int = Field(default=500, ge=1, le=10_000, description="most trades in one packed record")
    ingest_pack_max_bytes: int = Field(
        default=256 * 1024, ge=1024, le=16 * 1024 * 1024, description="most bytes of one packed record"
    )

    # --- endpoints (real defaults; tests override)
    binance_spot_ws_url: str = Field(default="wss://stream.binance.com:9443", description="Binance spot websocket")
    binance_usdm_ws_url: str = Field(default="wss://fstream.binance.com", description="Binance USD-M futures websocket")
    binance_spot_rest_url: str = Field(default="https://api.binance.com", description="Binance spot depth snapshots")
    binance_usdm_rest_url: str = Field(default="https://fapi.binance.com", description="Binance USD-M snapshots")
    bybit_spot_ws_url: str = Field(default="wss://stream.bybit.com/v5/public/spot", description="Bybit v5 spot")
    bybit_linear_ws_url: str = Field(default="wss://stream.bybit.com/v5/public/linear", description="Bybit v5 linear")

    # --- exchange limits
    binance_spot_max_msgs_per_s: float = Field(default=5.0, gt=0, description="Binance spot inbound limit")
    binance_usdm_max_msgs_per_s: float = Field(default=10.0, gt=0, description="Binance futures inbound limit")
    binance_max_streams_per_connection: int = Field(
        default=1024, ge=1, le=1024, description="combined streams per connection (sharded beyond)"
    )
    binance_max_streams_per_subscribe: int = Field(default=200, ge=1, le=1024, description="streams per SUBSCRIBE")
    binance_depth_snapshot_limit: int = Field(default=1000, ge=5, le=5000, description="levels of the REST snapshot")
    binance_depth_speed: Literal["100ms", "250ms", "500ms", ""] = Field(
        default="100ms", description="depth diff stream speed (empty: the exchange default)"
    )
    bybit_max_args_per_subscribe: int = Field(default=10, ge=1, le=10, description="topics per subscribe message")
    bybit_max_topics_per_connection: int = Field(default=200, ge=1, description="topics per connection")
    bybit_ping_interval_s: float = Field(default=20.0, gt=0, description="client ping interval")
    bybit_book_depth: Literal[1, 50, 200, 1000] = Field(default=50, description="orderbook.<depth> topic")

    # --- connection lifecycle
    ingest_backoff_initial_s: float = Field(default=1.0, gt=0, description="first reconnect delay (jittered, doubling)")
    ingest_backoff_max_s: float = Field(default=60.0, gt=0, description="cap of the reconnect delay")
    ingest_open_timeout_s: float = Field(default=10.0, gt=0, description="websocket connect and handshake timeout")
    ingest_idle_timeout_s: float = Field(default=90.0, gt=0, description="no frame for this long -> reconnect")
    ingest_max_connection_age_s: float = Field(
        default=23 * 3600.0, gt=0, description="rotate before the exchanges' 24 h limit"
    )
    ingest_rest_timeout_s: float = Field(default=10.0, gt=0, description="depth snapshot request timeout")

    # --- normalisation and publishing
    ingest_book_levels: int = Field(default=20, ge=1, le=1000, description="levels per side in market.books")
    ingest_book_min_interval_ms: int = Field(
        default=100, ge=0, description="at most one BookTop per key per interval (event time); 0 = every update"
    )
    ingest_trade_dedupe_window: int = Field(default=20_000, ge=100, description="recent trade ids kept per key")

    # --- sources other than the live exchanges: replay and simulator
    ingest_source: str = Field(
        default="live",
        description="live | simulator | replay[:PATH[:FORMAT[:SPEED]]] | none (`--source` overrides it)",
    )
    replay_path: str | None = Field(default=None, description="file or directory replayed by `--source replay`")
    replay_format: str | None = Field(default=None, description="reader format; guessed from the name when unset")
    replay_speed: float = Field(default=1.0, ge=0, description="x real time; 0 = as fast as possible")
    replay_loop: bool = Field(default=False, description="start again at the end (event times move forward)")
    replay_rebase_time: bool = Field(default=False, description="shift event times so the replay starts now")
    replay_max_wait_s: float = Field(default=300.0, gt=0, description="longest single wait; longer holes are skipped")
    topic_sim_labels: str = Field(default="sim.labels", description="ground-truth labels of simulated anomalies")
    sim_seed: int = Field(default=7, description="simulator random seed (same seed, same market)")
    sim_speed: float = Field(default=20.0, gt=0, description="simulated seconds per wall second")
    sim_backfill_s: float = Field(
        default=3600.0, ge=0, description="simulated history before now, run at sim_speed until it catches up"
    )
    sim_first_anomaly_s: float = Field(default=300.0, ge=0, description="first anomaly, after the simulated start")
    sim_anomaly_every_s: float = Field(default=900.0, gt=0, description="simulated seconds between anomalies")
    sim_anomaly_time_scale: float = Field(default=0.5, gt=0, description="compresses each anomaly's own phases")
    sim_rate_scale: float = Field(default=1.0, gt=0, description="multiplies every simulated trade rate")
    sim_labels_dir: str | None = Field(default=None, description="also write labels.json/csv here as they occur")

    @field_validator("ingest_venues", "ingest_symbols", "ingest_streams", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split(value)

    @field_validator("ingest_symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        out = [s.upper() for s in value]
        for s in out:
            if not s.replace("-", "").isalnum() or not s.isascii():
                raise ValueError(f"symbol {s!r} must be ASCII letters, digits and '-', e.g. BTCUSDT or BTC-27DEC24")
        return out
