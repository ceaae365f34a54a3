"""The simulator's vocabulary: labels, asset/instrument/anomaly specs, the run config and its events."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    pass


LabelType = Literal["pump_and_dump", "flash_crash", "wash_trading", "spoofing_like", "depeg"]
ANOMALY_KINDS: tuple[LabelType, ...] = ("pump_and_dump", "flash_crash", "spoofing_like", "wash_trading", "depeg")

# The alert type (service.schemas.scoring.AnomalyType value) a detector is expected to raise for each label.
EXPECTED_ALERT_TYPE: dict[str, str] = {
    "pump_and_dump": "pump_and_dump",
    "flash_crash": "crash",
    "wash_trading": "volume_surge",
    "spoofing_like": "spoofing_like",
    "depeg": "depeg",
}

DAY_MS = 86_400_000
DEFAULT_START_MS = 1_699_999_980_000  # 2023-11-14 22:13:00 UTC: fixed (reproducible runs), minute-aligned


class SimLabel(BaseModel):
    """Ground truth for one injected anomaly on one key (`venue:symbol`); what tests and evaluations score."""

    model_config = ConfigDict(frozen=True)

    type: LabelType
    key: str = Field(description="venue:symbol, the same key as the market topics")
    start_ms: int = Field(description="first moment the anomaly affects the market (pump: accumulation starts)")
    onset_ms: int = Field(description="the moment a detector should be judged from (pump: the rush of buys)")
    end_ms: int = Field(description="the anomaly's effects are over (pump: the dump has run its course)")
    magnitude: float = Field(default=0.0, description="peak price move (fraction) or volume multiple")
    seed: int = 0


# --------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class AssetSpec:
    """A price process (in USD, or in BTC for BTC-quoted small caps)."""

    name: str
    price0: float
    daily_vol: float


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """One tradable pair on one venue. Its mid = asset price / peg value (for stablecoin quotes) x basis."""

    venue: str
    symbol: str
    asset: str
    tick: float
    lot: float
    rate_hz: float  # taker orders per second at the daily mean
    size_mean: float  # mean order size in base units
    peg: str | None = None  # "USDT" / "USDC": quote currency whose USD value scales the price
    basis_bps: float = 1.0  # cross-venue basis noise (standard deviation, bps)
    pump_target: bool = False  # small caps: where pumps are injected

    @property
    def key(self) -> str:
        return f"{self.venue}:{self.symbol}"

    @property
    def decimals(self) -> int:
        return max(0, -math.floor(math.log10(self.tick) + 1e-9))

    @property
    def lot_decimals(self) -> int:
        return max(0, -math.floor(math.log10(self.lot) + 1e-9))


DEFAULT_ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec("BTC", 60_000.0, 0.025),
    AssetSpec("ETH", 3_000.0, 0.035),
    AssetSpec("ALT1", 1.36e-6, 0.06),  # priced in BTC, like the pump coins in ../shared/data
    AssetSpec("ALT2", 1.2e-4, 0.05),
)

DEFAULT_INSTRUMENTS: tuple[InstrumentSpec, ...] = (
    InstrumentSpec("sim-binance", "BTCUSDT", "BTC", 0.01, 0.00001, 8.0, 0.05, peg="USDT"),
    InstrumentSpec("sim-binance", "BTCUSDC", "BTC", 0.01, 0.00001, 1.5, 0.03, peg="USDC"),
    InstrumentSpec("sim-binance", "ETHUSDT", "ETH", 0.01, 0.0001, 5.0, 0.8, peg="USDT"),
    InstrumentSpec("sim-binance", "ALT1BTC", "ALT1", 1e-8, 1.0, 0.3, 2_000.0, basis_bps=0.0, pump_target=True),
    InstrumentSpec("sim-binance", "ALT2BTC", "ALT2", 1e-7, 0.1, 0.4, 60.0, basis_bps=0.0, pump_target=True),
    InstrumentSpec("sim-bybit", "BTCUSDT", "BTC", 0.01, 0.000001, 5.0, 0.04, peg="USDT"),
    InstrumentSpec("sim-bybit", "ETHUSDT", "ETH", 0.01, 0.00001, 3.0, 0.6, peg="USDT"),
)


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    """One planned anomaly. `keys` lists the instruments it touches (a depeg touches every USDC pair)."""

    kind: LabelType
    keys: tuple[str, ...]
    start_ms: int
    onset_ms: int
    end_ms: int
    magnitude: float
    seed: int
    # kind-specific timing (ms): pump peak, crash bottom; spoofing walls as (on_ms, off_ms) pairs
    peak_ms: int = 0
    walls: tuple[tuple[int, int], ...] = ()
    side: Literal["bid", "ask"] = "bid"
    peg: str = ""

    def labels(self) -> list[SimLabel]:
        return [
            SimLabel(
                type=self.kind,
                key=k,
                start_ms=self.start_ms,
                onset_ms=self.onset_ms,
                end_ms=self.end_ms,
                magnitude=self.magnitude,
                seed=self.seed,
            )
            for k in self.keys
        ]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything that decides the generated market; equal configs give byte-identical streams."""

    seed: int = 7
    start_ms: int = DEFAULT_START_MS
    duration_s: float | None = 3600.0  # None: endless (the real-time source)
    step_ms: int = 1000
    depth_levels: int = 10
    book_every_ms: int = 1000
    bar_interval_ms: int = 60_000
    emit_books: bool = True
    emit_bars: bool = True
    assets: tuple[AssetSpec, ...] = DEFAULT_ASSETS
    instruments: tuple[InstrumentSpec, ...] = DEFAULT_INSTRUMENTS
    rate_scale: float = 1.0  # multiplies every instrument's trade rate
    fixed_rates: bool = False  # no intraday pattern and no volatility link: constant tick rates for benchmarks
    # anomalies: an explicit plan, or an automatic schedule (first at `first_anomaly_s`, then every `every_s`)
    anomalies: tuple[AnomalySpec, ...] | None = None
    first_anomaly_s: float = 600.0
    anomaly_every_s: float = 1800.0
    anomaly_kinds: tuple[LabelType, ...] = ANOMALY_KINDS
    # compresses each anomaly's own durations (accumulation, dump, recovery, ...) for short demos and tests
    anomaly_time_scale: float = 1.0


# ------------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SimTrade:
    ts_ms: int
    venue: str
    symbol: str
    trade_id: int
    price: str
    size: str
    side: Literal["buy", "sell"]
    anomaly: str = ""  # the label type this trade belongs to ("" = normal flow); wash pairs and sweeps are marked


@dataclass(frozen=True, slots=True)
class SimBook:
    ts_ms: int
    venue: str
    symbol: str
    bids: tuple[tuple[str, str], ...]
    asks: tuple[tuple[str, str], ...]
    seq: int


@dataclass(frozen=True, slots=True)
class SimBar:
    venue: str
    symbol: str
    open_ms: int
    close_ms: int  # last millisecond of the interval, as Binance klines
    open: str
    high: str
    low: str
    close: str
    volume: str
    trades: int
    buy_volume: str
    incomplete: bool = False  # the interval began before the simulation did


SimEvent = SimTrade | SimBook | SimBar
