"""Settings owned by the api part (fields are read as RMAD_<FIELD>)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

DEV_API_KEY = "rmad-dev-key"


class ApiSettings(BaseModel):
    """Knobs of the api part; composed into service.settings.Settings.

    Why a development key at all: `make run` should open a working dashboard with nothing configured. It is accepted
    only when RMAD_ENV=development (the explicit development setting); with `test` or `production` it is refused, so
    no default secret works outside development.
    """

    api_dev_key: SecretStr = Field(
        default=SecretStr(DEV_API_KEY),
        description="API key with every scope, accepted only when RMAD_ENV=development; empty disables it.",
    )
    api_max_body_bytes: int = Field(
        default=4 << 20, ge=1024, le=1 << 30, description="Largest request body accepted; a larger one is 413."
    )
    api_max_json_depth: int = Field(
        default=32, ge=4, le=256, description="Deepest array/object nesting accepted in a body; deeper is 400."
    )
    api_stream_revoke_check_s: float = Field(
        default=0.5, gt=0, le=60, description="How often an open stream checks that its key is still valid."
    )
    api_rate_per_s: float = Field(default=200.0, gt=0, description="Token-bucket refill per API key, requests/s.")
    api_rate_burst: int = Field(default=400, ge=1, description="Token-bucket capacity per API key.")
    api_key_cache_s: float = Field(
        default=2.0,
        ge=0,
        description="How long a verified key is trusted before Redis is asked again (revocation lag).",
    )
    api_batch_max: int = Field(default=256, ge=1, le=10_000, description="Most items in POST /v1/score/transactions.")
    api_alert_log_maxlen: int = Field(default=100_000, ge=100, description="Capped length of the persistent alert log.")
    api_alert_ttl_s: float = Field(default=30 * 86400, gt=0, description="How long an alert stays fetchable by id.")
    api_scores_per_key: int = Field(default=720, ge=10, description="Latest scores kept per key for GET /v1/scores.")
    api_tape_per_key: int = Field(
        default=3600, ge=10, description="Price/volume bars kept per key for the dashboard (an hour of 1 s bars)."
    )
    api_tape_interval_ms: int = Field(default=1000, ge=100, description="Bar width the api builds from trades.")
    api_stream_queue: int = Field(default=256, ge=1, description="Alerts buffered per subscriber before it is cut.")
    api_stream_heartbeat_s: float = Field(default=15.0, gt=0, description="Heartbeat interval on WebSocket/SSE.")
    api_stream_poll_s: float = Field(default=0.05, gt=0, description="How often the hub reads new alerts from the log.")
    api_stream_max_lag_s: float = Field(
        default=60.0, gt=0, description="A subscriber catching up from the log further behind than this is cut."
    )
    api_stream_send_timeout_s: float = Field(default=5.0, gt=0, description="A send stuck longer cuts the subscriber.")
    api_stream_backlog_max: int = Field(default=10_000, ge=1, description="Most alerts replayed on resume.")
    api_webhook_timeout_s: float = Field(default=5.0, gt=0, description="HTTP timeout of one webhook delivery.")
    api_webhook_max_attempts: int = Field(default=6, ge=1, le=50, description="Deliveries tried before giving up.")
    api_webhook_backoff_s: float = Field(default=1.0, gt=0, description="First retry delay; doubles each attempt.")
    api_webhook_backoff_max_s: float = Field(default=300.0, gt=0, description="Cap of the retry delay.")
    api_followers: bool = Field(
        default=True, description="Run the api's topic followers (alert log, latest scores, price tape)."
    )
