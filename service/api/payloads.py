"""Request and response bodies of the /v1 API (pydantic at the edge; every field documented for the OpenAPI)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from service.schemas.scoring import Alert, AnomalyType, BranchScores, FeatureContribution, Score, Severity, Verdict

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/@+\-]+$")]


def _seq(v: str) -> str:
    from service.api.alertlog import is_seq

    if not is_seq(v):
        raise ValueError("not an alert-log sequence (ms-n, each below 2**64)")
    return v


Seq = Annotated[
    str,
    Field(pattern=r"^\d{1,20}-\d{1,20}$", description="alert-log sequence (opaque cursor)"),
    AfterValidator(_seq),
]


class Problem(BaseModel):
    detail: str


class FeedbackVerdict(StrEnum):
    CONFIRM = "confirm"
    DISMISS = "dismiss"


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: FeedbackVerdict = Field(description="confirm: a real anomaly; dismiss: a false alarm")
    note: str = Field(default="", max_length=2000, description="free text for the analyst's reasoning")


class FeedbackOut(BaseModel):
    alert_id: str
    verdict: FeedbackVerdict
    note: str
    key_id: str
    time_ms: int


class AlertRecord(BaseModel):
    seq: str = Field(description="position in the alert log: a cursor and a resume point for streams")
    alert: Alert
    feedback: FeedbackOut | None = None


class AlertPage(BaseModel):
    items: list[AlertRecord]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null at the end")


class ScoresOut(BaseModel):
    key: str
    items: list[Score] = Field(description="newest first")


class TapeBar(BaseModel):
    t: int = Field(description="bar start, ms UTC")
    o: float
    h: float
    l: float  # noqa: E741
    c: float
    v: float


class TapeOut(BaseModel):
    key: str
    bars: list[TapeBar] = Field(description="oldest first")


class SymbolsOut(BaseModel):
    keys: list[str] = Field(description="venue:symbol keys with recent market data, most recent first")


class PartOut(BaseModel):
    ok: bool
    detail: str


class StatusOut(BaseModel):
    """What the dashboard's health panel shows."""

    parts: dict[str, PartOut]
    ingest_lag_s: float | None = Field(description="event time -> ingest time of the newest market event seen")
    market_age_s: float | None = Field(description="now - time the newest market record was written to the bus")
    score_age_s: float | None = Field(description="now - time the newest score was produced (worker freshness)")
    score_lag_s: float | None = Field(description="newest score's scored time - its last event time")
    alert_age_s: float | None = Field(description="now - time the newest alert was written to the bus")
    consumer_lag_s: dict[str, float] = Field(description="age of the newest record each api follower handled")
    model_name: str | None
    model_version: str | None
    alerts_logged: int
    subscribers: int


# --- webhooks


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="http(s) URL that receives POSTed alerts")
    venues: list[Name] = Field(default_factory=list, max_length=64)
    symbols: list[Name] = Field(default_factory=list, max_length=256)
    types: list[AnomalyType] = Field(default_factory=list, max_length=16)
    min_severity: Severity | None = None
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="your own signing secret; omitted: one derived from the server's secret is returned once",
    )
    description: str = Field(default="", max_length=500)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: AnyHttpUrl) -> AnyHttpUrl:
        if v.scheme not in ("http", "https"):
            raise ValueError("url must be http or https")
        return v


class WebhookOut(BaseModel):
    id: str
    url: str
    venues: list[str]
    symbols: list[str]
    types: list[str]
    min_severity: Severity | None
    created_ms: int
    description: str
    status: dict[str, int | str | None] = Field(default_factory=dict)


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret (shown once): verify X-RMAD-Signature with it")
    signature_header: str = Field(description="header carrying t=<unix ms>,v1=<hex HMAC-SHA256(secret, t.body)>")


class DeliveryOut(BaseModel):
    alert_id: str
    seq: str
    attempt: int
    outcome: Literal["delivered", "retry", "failed"]
    http_status: int | None
    error: str
    time_ms: int


class RedeliverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")


class Accepted(BaseModel):
    accepted: bool
    detail: str


# --- scoring


class ChainTxIn(BaseModel):
    """An on-chain transaction to score."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["chain"] = "chain"
    chain: Literal["ethereum", "bitcoin"] = Field(description="which chain")
    hash: str = Field(min_length=1, max_length=128, pattern=r"^(0x)?[0-9a-fA-F]+$")
    from_address: str = Field(alias="from", min_length=1, max_length=128)
    to_address: str | None = Field(default=None, alias="to", max_length=128)
    value: str = Field(
        pattern=r"^\d{1,78}$", description="amount in the chain's base unit (wei, satoshi) as a decimal string"
    )
    fee: str = Field(default="0", pattern=r"^\d{1,78}$", description="fee in base units, decimal string")
    time_ms: int = Field(ge=0, le=10**14, description="block or first-seen time, ms UTC")
    inputs: list[ChainLegIn] | None = Field(default=None, max_length=1000, description="bitcoin inputs")
    outputs: list[ChainLegIn] | None = Field(default=None, max_length=1000, description="bitcoin outputs")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ChainLegIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(min_length=1, max_length=128)
    value: str = Field(pattern=r"^\d{1,78}$")


class TradeIn(BaseModel):
    """An exchange trade to score against the symbol's live market window."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["trade"] = "trade"
    venue: Name
    symbol: Name
    price: float = Field(gt=0, allow_inf_nan=False, le=1e15)
    size: float = Field(gt=0, allow_inf_nan=False, le=1e15)
    side: Literal["buy", "sell"]
    time_ms: int = Field(ge=0, le=10**14, description="trade time, ms UTC")


TransactionIn = Annotated[ChainTxIn | TradeIn, Field(discriminator="kind")]


class ScoreResult(BaseModel):
    key: str
    fused: float
    branches: BranchScores
    weights: BranchScores
    threshold: float
    verdict: Verdict
    anomaly_type: AnomalyType | None
    severity: Severity | None
    explanation: str
    top_features: list[FeatureContribution]
    model_name: str
    model_version: str
    context_bars: int = Field(description="bars of live market context the window used (0 for chain)")
    warm: bool = Field(description="false when the context was shorter than the model's window (padded)")


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[TransactionIn] = Field(min_length=1, description="transactions or trades (size-limited)")


class BatchOut(BaseModel):
    items: list[ScoreResult]


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Name = Field(default="market", description="model name")
    key: Name = Field(default="adhoc:window", description="label echoed back")
    features: list[list[float]] | None = Field(
        default=None,
        max_length=4096,
        description="an unscaled [T, F] feature window in the manifest's feature order (or give `bars`)",
    )
    bars: list[BarIn] | None = Field(default=None, max_length=4096, description="OHLCV bars, oldest first")
    window_end_ms: int | None = Field(
        default=None,
        ge=0,
        le=10**14,
        description="when the window ends (ms UTC); given, the explanation names it as the worker's alert does",
    )


class BarIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_ms: int = Field(ge=0, le=10**14)
    open: float = Field(gt=0, allow_inf_nan=False)
    high: float = Field(gt=0, allow_inf_nan=False)
    low: float = Field(gt=0, allow_inf_nan=False)
    close: float = Field(gt=0, allow_inf_nan=False)
    volume: float = Field(ge=0, allow_inf_nan=False)
    trades: int | None = Field(default=None, ge=0)
    taker_buy_volume: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class ModelOut(BaseModel):
    name: str
    version: str
    kind: str
    window: int
    features: list[str]
    thresholds: dict[str, float | None]
    created_ms: int
    provider: str
    loaded_ms: int
    card: str | None = Field(description="the model card (markdown), when shipped")
    calibration: dict[str, object] = Field(description="threshold calibration from the manifest's evaluation")


class ModelsOut(BaseModel):
    models: list[ModelOut]
    failures: dict[str, str] = Field(description="artifact versions refused, with the reason")


ChainTxIn.model_rebuild()
WindowIn.model_rebuild()
