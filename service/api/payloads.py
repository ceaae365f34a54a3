"""Request and response bodies of the /v1 API (pydantic at the edge; every field documented for the OpenAPI)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
)

from service.features.bars import MAX_PRICE, MAX_SIZE, MIN_PRICE
from service.schemas.addresses import bitcoin_address, chain_address, market_symbol
from service.schemas.scoring import Alert, AnomalyType, BranchScores, FeatureContribution, Score, Severity, Verdict

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/@+\-]+$")]
StrictFloat = Annotated[float, Strict()]  # a JSON number: `true` and "100" are refused
StrictInt = Annotated[int, Strict()]


_VENUE = re.compile(r"[a-z0-9][a-z0-9.\-]{0,31}")


def _venue(v: object) -> object:
    if isinstance(v, str):
        name = v.strip().lower()
        if not _VENUE.fullmatch(name):
            raise ValueError("not a venue name (lower-case letters, digits and dashes, e.g. binance-spot)")
        return name
    return v


VenueIn = Annotated[str, BeforeValidator(_venue), Field(description="venue, e.g. binance-spot; lower-cased")]
SymbolIn = Annotated[
    str,
    Field(min_length=1, max_length=64),
    AfterValidator(market_symbol),
    Field(description="exchange symbol; normalised to upper case without separators (btc/usdt -> BTCUSDT)"),
]


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


class FieldProblem(BaseModel):
    field: str = Field(description="the failing field, e.g. body.trade.price or query.min_severity")
    msg: str = Field(description="what is wrong with it")
    type: str = Field(description="a short machine-readable code, e.g. float_type, missing, value_error")
    loc: list[str | int] = Field(description="the field's path as a list")


class Problem(BaseModel):
    """The body of every 4xx and 5xx answer: `detail` for people; `fields`/`errors` name what to fix."""

    detail: str = Field(description="what went wrong, naming the fields when fields are at fault")
    fields: list[str] = Field(default_factory=list, description="failing fields (empty when no field is at fault)")
    errors: list[FieldProblem] = Field(default_factory=list, description="one entry per failing field")


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
    time_ms: StrictInt = Field(ge=0, le=10**14, description="block or first-seen time, ms UTC")
    inputs: list[ChainLegIn] | None = Field(default=None, max_length=1000, description="bitcoin inputs")
    outputs: list[ChainLegIn] | None = Field(default=None, max_length=1000, description="bitcoin outputs")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("from_address", "to_address")
    @classmethod
    def _address(cls, v: str | None, info: ValidationInfo) -> str | None:
        chain = info.data.get("chain")
        return v if v is None or chain is None else chain_address(chain, v)

    @field_validator("inputs", "outputs")
    @classmethod
    def _legs_on_bitcoin(cls, v: list[ChainLegIn] | None, info: ValidationInfo) -> list[ChainLegIn] | None:
        if v is not None and info.data.get("chain") != "bitcoin":
            raise ValueError("inputs and outputs are Bitcoin's; an Ethereum transaction has from/to")
        return v


class ChainLegIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(bitcoin_address)]
    value: str = Field(pattern=r"^\d{1,78}$")


class TradeIn(BaseModel):
    """An exchange trade to score against the symbol's live market window."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["trade"] = "trade"
    venue: VenueIn
    symbol: SymbolIn
    price: StrictFloat = Field(ge=MIN_PRICE, le=MAX_PRICE, allow_inf_nan=False, description="a JSON number")
    size: StrictFloat = Field(gt=0, le=MAX_SIZE, allow_inf_nan=False, description="base units, a JSON number")
    side: Literal["buy", "sell"] = Field(description="the taker's side")
    time_ms: StrictInt = Field(ge=0, le=10**14, description="trade time, ms UTC (near now: RMAD_EVENT_TIME_*)")


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
    transaction: TransactionScore | None = Field(
        default=None,
        description="the transaction judged for itself (POST /v1/score/transaction(s)); docs/api-scoring.md",
    )


class TxDriver(BaseModel):
    name: str = Field(description="size, price, rush, wash; value_vs_sender, value_vs_receiver, fee_share, ...")
    score: float = Field(description="this component on the transaction scale (3 note, 5 watch, 8 alert)")
    value: float = Field(description="the transaction's value of it")
    typical: float | None = Field(description="what is usual in its context, where that is one number")
    why: str


class TransactionScore(BaseModel):
    score: float = Field(description="the largest driver's score")
    verdict: Verdict = Field(description="normal below 3, note from 3, watch from 5, anomalous from 8")
    drivers: list[TxDriver] = Field(description="components, largest first")
    context: int = Field(description="recent trades (or address history entries) the judgement used")
    summary: str


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[TransactionIn] = Field(min_length=1, description="transactions or trades (size-limited)")


class BatchOut(BaseModel):
    items: list[ScoreResult]


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Name = Field(default="market", description="model name")
    key: Name = Field(default="adhoc:window", description="label echoed back")
    features: list[list[StrictFloat]] | None = Field(
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

    start_ms: StrictInt = Field(ge=0, le=10**14)
    open: StrictFloat = Field(gt=0, allow_inf_nan=False)
    high: StrictFloat = Field(gt=0, allow_inf_nan=False)
    low: StrictFloat = Field(gt=0, allow_inf_nan=False)
    close: StrictFloat = Field(gt=0, allow_inf_nan=False)
    volume: StrictFloat = Field(ge=0, allow_inf_nan=False)
    trades: StrictInt | None = Field(default=None, ge=0)
    taker_buy_volume: StrictFloat | None = Field(default=None, ge=0, allow_inf_nan=False)


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
ScoreResult.model_rebuild()
WindowIn.model_rebuild()
