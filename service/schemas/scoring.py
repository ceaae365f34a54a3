"""Scores and alerts: what the worker produces and the API serves.

Alert ids are derived from (model version, key, window end) so a replay or a restarted worker produces the same
ids, and consumers can de-duplicate at-least-once delivery by id.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class AnomalyType(StrEnum):
    PUMP_AND_DUMP = "pump_and_dump"
    CRASH = "crash"
    VOLUME_SURGE = "volume_surge"
    DEPEG = "depeg"
    SPOOFING_LIKE = "spoofing_like"
    SUSPICIOUS_TRANSFER = "suspicious_transfer"
    OTHER = "other"


class Severity(StrEnum):
    """Ordered low -> critical; `rank` gives the order for `min_severity` filters."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return ["low", "medium", "high", "critical"].index(self.value)


class Verdict(StrEnum):
    """What a score says about its window: below the note level, at or above it, at or above the watch level,
    above the alert threshold, at or above the critical level (the manifest's tiers, ordered)."""

    NORMAL = "normal"
    NOTE = "note"
    WATCH = "watch"
    ANOMALOUS = "anomalous"
    CRITICAL = "critical"


class Action(StrEnum):
    REVIEW_NOW = "review_now"
    WATCH = "watch"
    NOTE = "note"


class BranchScores(BaseModel):
    model_config = ConfigDict(frozen=True)

    md: float = Field(description="multi-domain VAE score (reconstruction + KDE latent density)")
    trans: float = Field(description="Transformer-clustering reconstruction score")
    clust: float = Field(description="distance of the embedding to its expected cluster centre")


class FeatureContribution(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    value: float = Field(description="the window's value (unscaled) of this feature, last bar")
    normal: float = Field(description="the typical (training median) value")
    error: float = Field(description="per-feature reconstruction error from the model")


class Score(BaseModel):
    """One scored window (topic `scores`, keyed by `key`)."""

    schema_version: int = SCHEMA_VERSION
    key: str = Field(description="venue:symbol or chain:address")
    window_end_ms: int
    fused: float
    branches: BranchScores
    weights: BranchScores = Field(description="fusion weights the gate gave each branch")
    threshold: float
    model_name: str
    model_version: str
    incomplete: bool = Field(default=False, description="the window contains a gap reported by ingest")
    last_event_ms: int = Field(description="event time of the window's last tick")
    scored_ms: int


def alert_id(model_version: str, key: str, window_end_ms: int) -> str:
    """Deterministic id: the same window scored by the same model always yields the same alert id."""
    raw = f"{model_version}|{key}|{window_end_ms}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class Alert(BaseModel):
    """An explained alert (topic `alerts`, keyed by `key`; also kept in the API's alert log)."""

    schema_version: int = SCHEMA_VERSION
    id: str
    key: str
    venue: str = Field(description="exchange venue, or chain name for on-chain alerts")
    symbol: str = Field(description="market symbol, or address for on-chain alerts")
    window_end_ms: int
    created_ms: int
    anomaly_type: AnomalyType
    severity: Severity
    action: Action
    score: float
    threshold: float
    branches: BranchScores
    weights: BranchScores
    top_features: list[FeatureContribution] = Field(default_factory=list)
    explanation: str
    model_name: str
    model_version: str
    incomplete: bool = False
