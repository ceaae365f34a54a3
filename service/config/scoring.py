"""Settings owned by the scoring part (fields are read as RMAD_<FIELD>)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ScoringSettings(BaseModel):
    """Knobs of the streaming worker; composed into service.settings.Settings.

    Why so many: latency (batch size, max wait), memory (queue bound, idle eviction), event-time correctness
    (lateness) and alert noise (hysteresis, cool-down) trade against each other differently per deployment.
    """

    scoring_group_id: str = Field(default="rmad-worker", description="consumer group of the scoring workers")
    scoring_batch_size: int = Field(default=256, ge=1, le=65_536, description="max windows per inference call")
    scoring_max_wait_ms: float = Field(default=2.0, ge=0, le=10_000, description="max wait to fill a batch")
    scoring_queue_bound: int = Field(
        default=4096, ge=1, description="windows waiting for inference before partitions are paused"
    )
    scoring_fetch_max_wait_ms: int = Field(
        default=10, ge=0, le=5000, description="broker-side fetch wait of the worker's consumer (latency vs idle polls)"
    )
    scoring_inline_inference_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="run a batch on the event loop when its predicted inference time is at most this (0: always "
        "in a thread)",
    )
    scoring_poll_records: int = Field(default=2000, ge=1, description="max records taken per poll")
    scoring_bar_interval_ms: int | None = Field(
        default=None, ge=1, description="trade bar interval; default: the manifest's bar_interval_s"
    )
    scoring_allowed_lateness_ms: int = Field(default=0, ge=0, description="event-time lateness before a bar closes")
    scoring_idle_eviction_s: float = Field(default=900.0, gt=0, description="drop a key's window state after idle")
    scoring_max_keys: int = Field(default=100_000, ge=1, description="hard cap on keys held (oldest evicted)")
    scoring_warmup_bars: int | None = Field(
        default=None, ge=0, description="bars a key's features warm up before its windows are scored (default: spec)"
    )
    scoring_history_bars: int | None = Field(
        default=None, ge=0, description="bars re-read on restart beyond the window (default: feature warm-up)"
    )
    scoring_checkpoint_interval_ms: int = Field(
        default=1000, ge=0, description="max time between offset commits / alert-state checkpoints"
    )
    centres_online: bool = Field(default=True, description="update the shared cluster centres from normal windows")
    centres_half_life_s: float = Field(default=3600.0, gt=0, description="half-life of the online centre counts")
    centres_refresh_ms: int = Field(
        default=0, ge=0, description="min time between centre version checks (0: before every batch)"
    )
    alert_hysteresis: float = Field(
        default=0.8, gt=0, le=1, description="re-arm when the score falls below threshold * hysteresis"
    )
    alert_cooldown_s: float = Field(default=300.0, ge=0, description="min event time between alerts of one key")
    alert_top_features: int = Field(default=3, ge=1, le=32, description="features named in an explanation")
    alert_dedupe_ttl_s: float = Field(default=14 * 86400.0, gt=0, description="how long alert ids are remembered")
    spoofing_enabled: bool = Field(default=True, description="watch market.books for pulled walls (spoofing-like)")
    spoofing_wall_mult: float = Field(default=8.0, gt=1, description="wall = level size / side median at least")
    spoofing_min_flips: int = Field(default=3, ge=1, description="pulled walls within the window that alert")
    spoofing_window_s: float = Field(default=120.0, gt=0, description="event-time window of the flip count")
    wash_enabled: bool = Field(default=True, description="flag bulk equal-size buy/sell pairs (wash-trading-like)")
    wash_min_pairs: int = Field(default=10, ge=1, description="matched pairs within the window that alert")
    wash_min_share: float = Field(default=0.3, gt=0, le=1, description="and their share of the window's volume")
    wash_window_s: float = Field(default=60.0, gt=0, description="event-time window of the pair count")
    crossvenue_enabled: bool = Field(default=True, description="compare the same asset across venues / quotes")
    crossvenue_z: float = Field(default=8.0, gt=0, description="basis deviation, in basis std, that alerts")
    crossvenue_min_bps: float = Field(default=50.0, ge=0, description="and at least this many basis points")
    crossvenue_half_life_bars: float = Field(default=360.0, gt=0, description="half-life of the usual basis")
    crossvenue_warmup_bars: int = Field(default=60, ge=1, description="bars of a pair before it can alert")
