"""One Settings class for every process, read from `RMAD_*` environment variables.

Why one class: every part (ingest, worker, api) is configured the same way, a bad value is refused at start-up
(not at first use, minutes later), and the error names the environment variable a person has to fix.
Concern-specific fields live in mixins under `service/config/` so each part owns its knobs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.config.api import ApiSettings
from service.config.chain import ChainSettings
from service.config.eventtime import EventTimeSettings
from service.config.ingest import IngestSettings
from service.config.kafka import KafkaFetchSettings
from service.config.model import ModelSettings
from service.config.scoring import ScoringSettings

ENV_PREFIX = "RMAD_"
DEV_SECRET = "dev-insecure-secret-change-me"

_COMPRESSION = Literal["none", "gzip", "snappy", "lz4", "zstd"]


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the variable and the expected form."""


def _check_host_port_list(value: str) -> str:
    """Kafka bootstrap servers: `host:port[,host:port...]`, each port 1-65535."""
    expected = "expected host:port[,host:port...], e.g. 127.0.0.1:9092"
    parts = [p.strip() for p in value.split(",")]
    if not parts or any(not p for p in parts):
        raise ValueError(expected)
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not host or host.strip("[]:") == "" or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r} is not host:port; {expected}")
    return ",".join(parts)


class Settings(
    IngestSettings,
    ChainSettings,
    ModelSettings,
    ScoringSettings,
    ApiSettings,
    KafkaFetchSettings,
    EventTimeSettings,
    BaseSettings,
):
    """All runtime configuration. Unset Kafka/Redis means the embedded in-process bus/state."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    env: Literal["development", "test", "production"] = Field(
        default="development",
        description="production refuses the development secret; only development accepts RMAD_API_DEV_KEY",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="root log level")
    secret_key: SecretStr = Field(
        default=SecretStr(DEV_SECRET), description="Signs webhooks and peppers API key hashes."
    )
    shutdown_grace_s: float = Field(default=10.0, gt=0, description="Seconds to drain and commit on SIGTERM.")

    # --- HTTP
    host: str = Field(default="127.0.0.1", description="HTTP bind address (0.0.0.0 for every interface)")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port")

    # --- Topics (the contract between processes)
    topic_trades: str = Field(default="market.trades", description="normalised exchange trades")
    topic_books: str = Field(default="market.books", description="order-book tops (BookTop)")
    topic_bars: str = Field(default="market.bars", description="closed exchange candles")
    topic_chain: str = Field(default="chain.txs", description="on-chain transactions, one record per address")
    topic_scores: str = Field(default="scores", description="one score per scored window")
    topic_alerts: str = Field(default="alerts", description="explained alerts")
    topic_dead_letters: str = Field(default="deadletters", description="refused input with a reason code")
    topic_partitions: int = Field(
        default=6, ge=1, le=10_000, description="partitions of topics created at start-up; bounds worker parallelism"
    )
    topic_replication_factor: int = Field(default=1, ge=1, le=16, description="replicas of topics created at start-up")
    topic_retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000, ge=-1, description="retention of topics created at start-up (-1: forever)"
    )

    # --- Kafka (unset: the in-process bus)
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset runs the in-process bus (one process only)"
    )
    kafka_client_id: str = Field(default="rmad", description="client id the broker logs")
    kafka_acks: Literal["all", "1", "0"] = Field(default="all", description="producer acknowledgements")
    kafka_enable_idempotence: bool = Field(
        default=False, description="Turn on for Apache Kafka; Tansu rejects idempotent producers."
    )
    kafka_linger_ms: int = Field(default=5, ge=0, le=60_000, description="producer wait to fill a batch")
    kafka_max_batch_bytes: int = Field(default=1 << 20, ge=1024, description="largest producer batch per partition")
    kafka_compression: _COMPRESSION = Field(default="none", description="producer compression")
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1000, description="broker request timeout")
    kafka_session_timeout_ms: int = Field(
        default=10_000, ge=1000, description="a consumer silent this long leaves its group (rebalance)"
    )
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100, description="consumer-group heartbeat")
    kafka_max_poll_records: int = Field(default=2_000, ge=1, description="most records one poll returns")
    kafka_fetch_max_wait_ms: int = Field(
        default=500, ge=0, le=60_000, description="How long the broker may park an empty fetch (default consumers)."
    )
    kafka_auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="where a group without committed offsets starts"
    )
    kafka_commit_interval_ms: int = Field(default=1_000, ge=0, description="Max time between offset commits.")

    # --- In-process bus bounds (so the embedded mode cannot grow without limit)
    memory_bus_max_records_per_partition: int = Field(
        default=1_000_000, ge=1000, description="in-process bus: oldest records are trimmed beyond this"
    )

    # --- Redis (unset: the in-process state)
    redis_url: str | None = Field(
        default=None, description="redis://host:port[/db]; unset keeps state in the process (one process only)"
    )
    redis_key_prefix: str = Field(default="rmad:", description="prefix of every key this service writes")
    redis_socket_timeout_s: float = Field(default=5.0, gt=0, description="Redis socket and pool-wait timeout")

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        return _check_host_port_list(v)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected redis://host:port[/db], rediss://... or unix:///path")
        return v

    @model_validator(mode="after")
    def _no_default_secret_outside_development(self) -> Settings:
        if self.env == "production" and self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError(
                "RMAD_SECRET_KEY: the development default is refused when RMAD_ENV=production; set a random secret"
            )
        return self

    @property
    def embedded_bus(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def embedded_state(self) -> bool:
        return self.redis_url is None


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        name = ENV_PREFIX + loc[0].upper() if loc else "settings"
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) and loc else ""
        lines.append(f"{name}: {msg}{shown}" if loc else msg)
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise SettingsError with the variable names on any bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        raise SettingsError(_explain(err)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (FastAPI dependency and CLI default)."""
    return load_settings()
