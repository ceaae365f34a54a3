"""A seeded, reproducible synthetic market with labelled injected anomalies.

Why a simulator: the exchanges are not reachable from every machine, real labelled anomalies are few, and a demo
must show an alert within a minute or two. The simulator gives every part of the service (ingest, features, the
worker, the API, the benchmarks) a realistic stream whose ground truth is known exactly.

What is realistic about it:
- prices: GARCH(1,1)-like volatility clustering with Student-t (df 4) innovations, per asset, shared by every
  instrument quoting that asset (Binance and Bybit BTCUSDT move together up to a small basis; BTCUSDC differs
  from BTCUSDT only by the USDC peg);
- trades: Poisson taker orders whose rate follows an intraday (UTC) pattern and the current volatility; an order
  larger than the touch sweeps several levels and prints several trades in the same millisecond, as Binance does;
  log-normal sizes rounded to the lot size;
- books: the top levels around the mid with depth growing away from it.

Injected anomalies, each labelled (type, key, start_ms, end_ms, onset_ms):
- pump_and_dump: quiet accumulation (mild buy pressure and drift), then a rush of taker buys sweeping the book
  (bursts of trades in the same millisecond, volume x50-150, price +30..150 %), then the dump;
- flash_crash: a sell sweep of -5..-12 % within a minute, then a partial recovery;
- wash_trading: bursts of equal-size buy/sell pairs at one price with no price impact;
- spoofing_like: a large bid (or ask) wall a few ticks from the touch that appears and vanishes repeatedly and
  is never traded against, while the price drifts the other way;
- depeg: the quote currency USDC loses 3..10 % against USD; every USDC-quoted pair rises against its USDT twin.

Two ways to run it: `MarketSimulator` (offline, as fast as the CPU goes, for tests, training and benchmarks; fixed
tick rates with `SimConfig(fixed_rates=True)`) and `SimulatorSource` (a runtime Component in
service/ingest/components.py terms, paced against the wall clock for `rmad run --source simulator`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gzip
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.bus.base import TopicSpec
from service.ingest.publisher import MarketPublisher
from service.runtime import Health
from service.schemas.market import Bar, BookTop, PublishedMarketEvent, Trade, encode

if TYPE_CHECKING:
    from service.bus.base import Bus, Producer
    from service.settings import Settings

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------------------------ schedule


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


def plan_anomaly(
    kind: LabelType,
    start_ms: int,
    instruments: Sequence[InstrumentSpec],
    seed: int,
    time_scale: float = 1.0,
) -> AnomalySpec | None:
    """Draw one anomaly of `kind` starting at `start_ms` (None when no instrument fits, e.g. no USDC pair)."""
    r = _rng(seed, 1000)

    def dur(lo_s: float, hi_s: float) -> int:
        return max(1000, int(r.uniform(lo_s, hi_s) * 1000 * time_scale))

    def pick(cands: Sequence[InstrumentSpec]) -> InstrumentSpec | None:
        return cands[int(r.integers(len(cands)))] if cands else None

    if kind == "pump_and_dump":
        inst = pick([i for i in instruments if i.pump_target]) or pick(list(instruments))
        if inst is None:
            return None
        onset = start_ms + dur(600, 1800)
        peak = onset + dur(60, 180)
        end = peak + dur(600, 1200)
        return AnomalySpec(kind, (inst.key,), start_ms, onset, end, float(r.uniform(0.3, 1.5)), seed, peak_ms=peak)
    if kind == "flash_crash":
        inst = pick([i for i in instruments if not i.pump_target]) or pick(list(instruments))
        if inst is None:
            return None
        bottom = start_ms + dur(20, 90)
        end = bottom + dur(300, 900)
        return AnomalySpec(kind, (inst.key,), start_ms, start_ms, end, float(r.uniform(0.05, 0.12)), seed, bottom)
    if kind == "wash_trading":
        inst = pick(list(instruments))
        if inst is None:
            return None
        end = start_ms + dur(180, 600)
        return AnomalySpec(kind, (inst.key,), start_ms, start_ms, end, float(r.uniform(5.0, 15.0)), seed)
    if kind == "spoofing_like":
        inst = pick([i for i in instruments if not i.pump_target]) or pick(list(instruments))
        if inst is None:
            return None
        walls: list[tuple[int, int]] = []
        t = start_ms
        end = start_ms + dur(120, 400)
        while t < end:
            on = t + int(r.uniform(1, 4) * 1000 * time_scale)
            off = on + max(1000, int(r.uniform(3, 15) * 1000 * time_scale))
            walls.append((on, min(off, end)))
            t = off
        side: Literal["bid", "ask"] = "bid" if r.random() < 0.5 else "ask"
        return AnomalySpec(
            kind, (inst.key,), start_ms, walls[0][0], end, float(r.uniform(20, 50)), seed, walls=tuple(walls), side=side
        )
    if kind == "depeg":
        usdc = [i.key for i in instruments if i.peg == "USDC"]
        if not usdc:
            return None
        end = start_ms + dur(1200, 3600)
        return AnomalySpec(kind, tuple(usdc), start_ms, start_ms, end, float(r.uniform(0.03, 0.10)), seed, peg="USDC")
    raise ValueError(f"unknown anomaly kind {kind!r}")


class AnomalySchedule:
    """The automatic plan: one anomaly every `every_s` (jittered), cycling through the kinds; endless and lazy."""

    def __init__(self, cfg: SimConfig) -> None:
        self._cfg = cfg
        self._rng = _rng(cfg.seed, 1)
        self._next_ms = cfg.start_ms + int(cfg.first_anomaly_s * 1000)
        self._n = 0

    def until(self, t_ms: int) -> list[AnomalySpec]:
        """Anomalies whose start is at or before `t_ms` that were not returned yet."""
        out: list[AnomalySpec] = []
        kinds = self._cfg.anomaly_kinds
        while kinds and self._next_ms <= t_ms:
            kind = kinds[self._n % len(kinds)]
            spec = plan_anomaly(
                kind,
                self._next_ms,
                self._cfg.instruments,
                seed=self._cfg.seed * 1_000_003 + self._n,
                time_scale=self._cfg.anomaly_time_scale,
            )
            if spec is not None:
                out.append(spec)
            self._n += 1
            jitter = float(self._rng.uniform(-0.1, 0.1))
            self._next_ms += int(self._cfg.anomaly_every_s * 1000 * (1 + jitter))
        return out


# -------------------------------------------------------------------------------------------------- effects


@dataclass(slots=True)
class _Effect:
    log_offset: float = 0.0
    rate_mult: float = 1.0
    buy_shift: float = 0.0
    sweep_mean: float = 1.2  # levels one taker order fills on average; > 1 gives same-millisecond trade bursts
    wash_hz: float = 0.0
    wash_mult: float = 0.0
    wall: tuple[str, int, float] | None = None  # (side, level, size multiple)
    tag: str = ""


def _apply(spec: AnomalySpec, t: int, eff: _Effect) -> None:
    """Add the effect of `spec` at time `t` (ms) to `eff`. Price offsets persist after the anomaly ends."""
    if t < spec.start_ms:
        return
    active = t < spec.end_ms
    if spec.kind == "pump_and_dump":
        acc_gain, final = 0.03, -0.03
        peak_off = math.log1p(spec.magnitude)
        if t < spec.onset_ms:
            u = (t - spec.start_ms) / max(1, spec.onset_ms - spec.start_ms)
            eff.log_offset += acc_gain * u
            eff.rate_mult *= 1 + 2.5 * u
            eff.buy_shift += 0.15
            eff.tag = eff.tag or "pump_accumulation"
        elif t < spec.peak_ms:
            u = (t - spec.onset_ms) / max(1, spec.peak_ms - spec.onset_ms)
            eff.log_offset += acc_gain + (peak_off - acc_gain) * (1 - (1 - u) ** 2)
            eff.rate_mult *= 40 + 110 * (1 - u)
            eff.buy_shift += 0.42
            eff.sweep_mean = max(eff.sweep_mean, 4.0)
            eff.tag = "pump_and_dump"
        elif active:
            u = (t - spec.peak_ms) / max(1, spec.end_ms - spec.peak_ms)
            e4 = math.exp(-4.0)
            eff.log_offset += final + (peak_off - final) * (math.exp(-4 * u) - e4) / (1 - e4)
            eff.rate_mult *= 1 + 30 * math.exp(-3 * u)
            eff.buy_shift -= 0.3
            eff.sweep_mean = max(eff.sweep_mean, 2.5)
            eff.tag = "pump_and_dump"
        else:
            eff.log_offset += final
    elif spec.kind == "flash_crash":
        bottom = math.log(1 - spec.magnitude)
        rec = 0.85
        if t < spec.peak_ms:
            u = (t - spec.start_ms) / max(1, spec.peak_ms - spec.start_ms)
            eff.log_offset += bottom * u**0.7
            eff.rate_mult *= 25
            eff.buy_shift -= 0.38
            eff.sweep_mean = max(eff.sweep_mean, 3.0)
            eff.tag = "flash_crash"
        elif active:
            u = (t - spec.peak_ms) / max(1, spec.end_ms - spec.peak_ms)
            e3 = math.exp(-3.0)
            eff.log_offset += bottom * (1 - rec * (1 - math.exp(-3 * u)) / (1 - e3))
            eff.rate_mult *= 1 + 10 * math.exp(-3 * u)
            eff.buy_shift += 0.12
            eff.tag = "flash_crash"
        else:
            eff.log_offset += bottom * (1 - rec)
    elif spec.kind == "wash_trading":
        if active:
            eff.wash_hz += 1.2
            eff.wash_mult = max(eff.wash_mult, spec.magnitude)
            eff.tag = eff.tag or "wash_trading"
    elif spec.kind == "spoofing_like":
        drift = 0.003 if spec.side == "bid" else -0.003
        if active:
            u = (t - spec.start_ms) / max(1, spec.end_ms - spec.start_ms)
            eff.log_offset += drift * u
            for on, off in spec.walls:
                if on <= t < off:
                    eff.wall = (spec.side, 3, spec.magnitude)
                    break
            eff.tag = eff.tag or "spoofing_like"
        else:
            eff.log_offset += drift
    elif spec.kind == "depeg" and active:
        eff.rate_mult *= 3.0
        eff.tag = eff.tag or "depeg"


def _depeg_level(spec: AnomalySpec, t: int) -> float:
    """How far the pegged currency is below 1 at `t` (a fraction); ramps in, holds, recovers."""
    if not spec.start_ms <= t < spec.end_ms:
        return 0.0
    u = (t - spec.start_ms) / max(1, spec.end_ms - spec.start_ms)
    shape = u / 0.2 if u < 0.2 else 1.0 if u < 0.7 else 1 - (u - 0.7) / 0.3
    return spec.magnitude * shape


def intraday_factor(t_ms: int) -> float:
    """Relative trade intensity by UTC time: quiet Asian night, EU open, a larger US-session peak; weekends lower."""
    h = (t_ms % DAY_MS) / 3_600_000
    f = 1.0 + 0.7 * math.exp(-(((h - 14.5) / 2.5) ** 2)) + 0.3 * math.exp(-(((h - 8.0) / 2.0) ** 2))
    f -= 0.35 * math.exp(-(((h - 4.0) / 2.5) ** 2))
    weekday = (t_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = Saturday, Sunday
    return f * (0.7 if weekday >= 5 else 1.0) / 1.25


# ------------------------------------------------------------------------------------------------ simulator


@dataclass(slots=True)
class _InstState:
    spec: InstrumentSpec
    asset_idx: int
    basis: float = 0.0
    next_trade_id: int = 1
    book_seq: int = 1
    last_price: float = 0.0
    bar_open_ms: int = 0
    bar: list[float] = field(default_factory=list)  # o, h, l, c, volume, buy volume, trades


class MarketSimulator:
    """Generates the market step by step; `events()` yields time-ordered events, `labels` the ground truth.

    Reproducible: all randomness comes from numpy PCG64 streams seeded from `SimConfig.seed`, drawn in a fixed
    order, so equal configs give equal streams on every machine.
    """

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.t_ms = cfg.start_ms
        self._rng = _rng(cfg.seed, 0)
        names = [a.name for a in cfg.assets]
        self._assets = cfg.assets
        self._logp = np.log(np.array([a.price0 for a in cfg.assets], dtype=np.float64))
        step_frac = cfg.step_ms / DAY_MS
        self._var0 = np.array([a.daily_vol**2 * step_frac for a in cfg.assets])
        self._var = self._var0.copy()
        self._alpha, self._beta = 0.06, 0.92
        self._df = 4.0
        self._tscale = math.sqrt((self._df - 2) / self._df)
        self._pegs: dict[str, float] = {"USDT": 0.0, "USDC": 0.0}  # log deviation from 1
        self._inst = [_InstState(i, names.index(i.asset)) for i in cfg.instruments]
        self._by_key = {s.spec.key: s for s in self._inst}
        if len(self._by_key) != len(self._inst):
            raise ValueError("instrument keys (venue:symbol) must be unique")
        self._schedule = None if cfg.anomalies is not None else AnomalySchedule(cfg)
        self._planned: list[AnomalySpec] = sorted(cfg.anomalies or (), key=lambda a: a.start_ms)
        self._released = 0  # planned anomalies already active (their labels are in self.labels)
        self.active: list[AnomalySpec] = []
        self.labels: list[SimLabel] = []
        self._next_book_ms = cfg.start_ms
        for s in self._inst:
            s.last_price = self._mid(s, 0.0)
            s.bar_open_ms = cfg.start_ms - cfg.start_ms % cfg.bar_interval_ms
            s.bar = []

    # -- public

    @property
    def end_ms(self) -> int | None:
        return None if self.cfg.duration_s is None else self.cfg.start_ms + int(self.cfg.duration_s * 1000)

    def events(self) -> Iterator[SimEvent]:
        """Every event until the configured duration (endless when `duration_s` is None)."""
        end = self.end_ms
        while end is None or self.t_ms < end:
            yield from self.step()

    def run_until(self, t_ms: int) -> list[SimEvent]:
        """Generate whole steps until simulated time reaches `t_ms` (the real-time source calls this)."""
        out: list[SimEvent] = []
        end = self.end_ms
        while self.t_ms < t_ms and (end is None or self.t_ms < end):
            out.extend(self.step())
        return out

    def new_labels(self, since: int) -> list[SimLabel]:
        return self.labels[since:]

    def step(self) -> list[SimEvent]:
        """Advance one step (`step_ms`) and return its events sorted by event time."""
        cfg = self.cfg
        t0 = self.t_ms
        t1 = t0 + cfg.step_ms
        self._activate(t1)
        out: list[SimEvent] = []
        if cfg.emit_bars:
            for s in self._inst:
                out.extend(self._close_bars(s, t0))
        self._advance_prices(t0)
        for s in self._inst:
            out.extend(self._trades(s, t0))
        if cfg.emit_books and t1 > self._next_book_ms:
            for s in self._inst:
                out.append(self._book(s, t1 - 1))
            self._next_book_ms += cfg.book_every_ms
        out.sort(key=lambda e: e.close_ms if isinstance(e, SimBar) else e.ts_ms)
        self.t_ms = t1
        return out

    # -- internals

    def _activate(self, t1: int) -> None:
        if self._schedule is not None:
            self._planned.extend(self._schedule.until(t1))
        while self._released < len(self._planned) and self._planned[self._released].start_ms < t1:
            spec = self._planned[self._released]
            self.active.append(spec)
            self.labels.extend(spec.labels())
            self._released += 1
        # effects persist (price offsets) but stop costing time once long over
        self.active = [a for a in self.active if a.end_ms + 10 * DAY_MS > t1]

    def _effect(self, key: str, t: int) -> _Effect:
        eff = _Effect()
        for spec in self.active:
            if key in spec.keys:
                _apply(spec, t, eff)
        return eff

    def _peg_log(self, peg: str | None, t: int) -> float:
        if peg is None:
            return 0.0
        level = self._pegs.get(peg, 0.0)
        for spec in self.active:
            if spec.kind == "depeg" and spec.peg == peg:
                level += math.log1p(-_depeg_level(spec, t))
        return level

    def _mid(self, s: _InstState, offset: float, t: int | None = None) -> float:
        t = self.t_ms if t is None else t
        return math.exp(self._logp[s.asset_idx] - self._peg_log(s.spec.peg, t) + s.basis + offset)

    def _advance_prices(self, t0: int) -> None:
        r = self._rng
        z = r.standard_t(self._df, size=len(self._assets)) * self._tscale
        sigma = np.sqrt(self._var)
        ret = sigma * z
        self._logp += ret
        omega = self._var0 * (1 - self._alpha - self._beta)
        self._var = np.minimum(omega + self._alpha * ret**2 + self._beta * self._var, 25 * self._var0)
        for peg in self._pegs:  # stablecoins wander a few bps around 1 (mean-reverting)
            self._pegs[peg] = 0.98 * self._pegs[peg] + float(r.normal(0, 2e-5))
        for s in self._inst:
            s.basis = 0.95 * s.basis + float(r.normal(0, s.spec.basis_bps * 1e-4 * 0.3))

    def _vol_factor(self, asset_idx: int) -> float:
        ratio = math.sqrt(self._var[asset_idx] / self._var0[asset_idx])
        return float(min(4.0, ratio**0.8))

    def _trades(self, s: _InstState, t0: int) -> list[SimEvent]:
        cfg, r, spec = self.cfg, self._rng, s.spec
        eff = self._effect(spec.key, t0)
        rate = spec.rate_hz * cfg.rate_scale * eff.rate_mult
        if not cfg.fixed_rates:
            rate *= intraday_factor(t0) * self._vol_factor(s.asset_idx)
        n = int(r.poisson(rate * cfg.step_ms / 1000))
        mid = self._mid(s, eff.log_offset, t0)
        out: list[SimEvent] = []
        tick, dec = spec.tick, spec.decimals
        bid = math.floor(mid / tick) * tick
        ask = bid + tick
        if n:
            offs = np.sort(r.integers(0, cfg.step_ms, size=n))
            buy_p = min(0.97, max(0.03, 0.5 + eff.buy_shift))
            buys = r.random(n) < buy_p
            sizes = r.lognormal(math.log(spec.size_mean) - 0.72, 1.2, size=n)
            fills = r.geometric(1 / eff.sweep_mean, size=n)
            tag = eff.tag if eff.tag in ("pump_and_dump", "flash_crash") else ""
            for off, is_buy, size, k in zip(offs.tolist(), buys.tolist(), sizes.tolist(), fills.tolist(), strict=True):
                ts = t0 + off
                per = size / k
                for j in range(k):  # one taker order sweeping k levels: k trades in the same millisecond
                    px = ask + j * tick if is_buy else bid - j * tick
                    if px <= 0:
                        px = tick
                    q = max(spec.lot, round(per / spec.lot) * spec.lot)
                    out.append(self._trade(s, ts, px, q, "buy" if is_buy else "sell", dec, tag))
            s.last_price = px
        if eff.wash_hz > 0:
            m = int(r.poisson(eff.wash_hz * cfg.step_ms / 1000))
            px = round((bid + ask) / 2 / tick) * tick
            for off in np.sort(r.integers(0, max(1, cfg.step_ms - 1), size=m)).tolist():
                q = float(np.round(spec.size_mean * eff.wash_mult, 0 if spec.size_mean >= 1 else 3)) or spec.size_mean
                q = max(spec.lot, round(q / spec.lot) * spec.lot)
                first: Literal["buy", "sell"] = "buy" if r.random() < 0.5 else "sell"
                second: Literal["buy", "sell"] = "sell" if first == "buy" else "buy"
                out.append(self._trade(s, t0 + off, px, q, first, dec, "wash_trading"))
                out.append(self._trade(s, t0 + off + int(r.integers(0, 2)), px, q, second, dec, "wash_trading"))
        return out

    def _trade(
        self, s: _InstState, ts: int, px: float, q: float, side: Literal["buy", "sell"], dec: int, tag: str
    ) -> SimTrade:
        tid = s.next_trade_id
        s.next_trade_id += 1
        qs = f"{q:.{s.spec.lot_decimals}f}"
        ps = f"{px:.{dec}f}"
        if self.cfg.emit_bars:
            self._bar_add(s, float(ps), float(qs), side == "buy")
        return SimTrade(ts, s.spec.venue, s.spec.symbol, tid, ps, qs, side, tag)

    def _bar_add(self, s: _InstState, px: float, q: float, is_buy: bool) -> None:
        b = s.bar
        if not b:
            s.bar = [px, px, px, px, q, q if is_buy else 0.0, 1]
            return
        b[1] = max(b[1], px)
        b[2] = min(b[2], px)
        b[3] = px
        b[4] += q
        if is_buy:
            b[5] += q
        b[6] += 1

    def _close_bars(self, s: _InstState, t0: int) -> list[SimEvent]:
        """Close every bar interval that ended at or before `t0`; an interval without trades is a flat bar."""
        iv = self.cfg.bar_interval_ms
        out: list[SimEvent] = []
        spec = s.spec
        while s.bar_open_ms + iv <= t0:
            if s.bar:
                o, h, lo, c, v, bv, n = s.bar
            else:
                o = h = lo = c = float(f"{s.last_price:.{spec.decimals}f}")
                v = bv = 0.0
                n = 0
            dec, ld = spec.decimals, spec.lot_decimals
            out.append(
                SimBar(
                    spec.venue,
                    spec.symbol,
                    s.bar_open_ms,
                    s.bar_open_ms + iv - 1,
                    f"{o:.{dec}f}",
                    f"{h:.{dec}f}",
                    f"{lo:.{dec}f}",
                    f"{c:.{dec}f}",
                    f"{v:.{ld}f}",
                    int(n),
                    f"{bv:.{ld}f}",
                    s.bar_open_ms < self.cfg.start_ms,
                )
            )
            s.bar_open_ms += iv
            s.bar = []
        return out

    def _book(self, s: _InstState, ts: int) -> SimBook:
        r, spec = self._rng, s.spec
        eff = self._effect(spec.key, ts)
        mid = self._mid(s, eff.log_offset, ts)
        tick, dec, ld = spec.tick, spec.decimals, spec.lot_decimals
        bid = math.floor(mid / tick) * tick
        levels = self.cfg.depth_levels
        base = spec.size_mean * 3
        bsz = base * (1 + 0.25 * np.arange(levels)) * r.lognormal(0, 0.4, size=levels)
        asz = base * (1 + 0.25 * np.arange(levels)) * r.lognormal(0, 0.4, size=levels)
        if eff.wall is not None:
            side, lvl, mult = eff.wall
            lvl = min(lvl, levels - 1)
            (bsz if side == "bid" else asz)[lvl] *= mult
        bids = tuple(
            (f"{max(tick, bid - i * tick):.{dec}f}", f"{max(spec.lot, float(q)):.{ld}f}")
            for i, q in enumerate(bsz.tolist())
        )
        asks = tuple(
            (f"{bid + (i + 1) * tick:.{dec}f}", f"{max(spec.lot, float(q)):.{ld}f}") for i, q in enumerate(asz.tolist())
        )
        s.book_seq += 1
        return SimBook(ts, spec.venue, spec.symbol, bids, asks, s.book_seq)


# ---------------------------------------------------------------------------------------------- file output


def write_labels(labels: Sequence[SimLabel], out_dir: Path, stem: str = "labels") -> tuple[Path, Path]:
    """Write the ground truth as JSON (a list of objects) and CSV (type,key,start_ms,end_ms,onset_ms,...)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, cpath = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    rows = [lab.model_dump() for lab in labels]
    jpath.write_text(json.dumps(rows, indent=1) + "\n")
    cols = ["type", "key", "start_ms", "end_ms", "onset_ms", "magnitude", "seed"]
    with cpath.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({c: row[c] for c in cols})
    return jpath, cpath


def read_labels(path: Path) -> list[SimLabel]:
    """Read labels written by `write_labels` (JSON or CSV)."""
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return [SimLabel.model_validate(row) for row in csv.DictReader(fh)]
    return [SimLabel.model_validate(row) for row in json.loads(path.read_text())]


class TradesCsvWriter:
    """Writes trades in the Binance trade CSV layout of ../shared/data/binance-pump-trades, one file per key.

    Why that layout: training and evaluation read the real pump files in it, so a simulated market goes through
    exactly the same loaders (`binance-trades-csv`). btc_volume is price x amount (the quote volume).
    """

    HEADER = ("symbol", "timestamp", "datetime", "side", "price", "amount", "btc_volume")

    def __init__(self, out_dir: Path, suffix: str = ".csv.gz") -> None:
        self.out_dir = out_dir
        self.suffix = suffix
        self._files: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.paths: dict[str, Path] = {}
        self.rows = 0

    def write(self, e: SimTrade) -> None:
        from datetime import UTC, datetime

        entry = self._files.get((e.venue, e.symbol))
        if entry is None:
            path = self.out_dir / f"{e.venue}_{e.symbol}_trades{self.suffix}"
            opener: Any = gzip.open if self.suffix.endswith(".gz") else open
            fh = opener(path, "wt", newline="")
            w = csv.writer(fh)
            w.writerow(self.HEADER)
            entry = self._files[(e.venue, e.symbol)] = (fh, w)
            self.paths[f"{e.venue}:{e.symbol}"] = path
        dt = datetime.fromtimestamp(e.ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        entry[1].writerow([e.symbol, e.ts_ms, dt, e.side, e.price, e.size, repr(float(e.price) * float(e.size))])
        self.rows += 1

    def close(self) -> None:
        for fh, _ in self._files.values():
            fh.close()
        self._files.clear()


def write_trades_csv(events: Iterable[SimEvent], path: Path, key: str) -> int:
    """One key's trades in the Binance trade CSV layout (see TradesCsvWriter); returns the number of rows."""
    venue, _, symbol = key.partition(":")
    w = TradesCsvWriter(path.parent)
    w.paths[key] = path
    opener: Any = gzip.open if path.suffix == ".gz" else open
    fh = opener(path, "wt", newline="")
    writer = csv.writer(fh)
    writer.writerow(TradesCsvWriter.HEADER)
    w._files[(venue, symbol)] = (fh, writer)
    try:
        for e in events:
            if isinstance(e, SimTrade) and e.venue == venue and e.symbol == symbol:
                w.write(e)
    finally:
        w.close()
    return w.rows


def _levels(levels: tuple[tuple[str, str], ...]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in levels]


def to_market(e: SimEvent, ingest_ms: int | None = None) -> PublishedMarketEvent:
    """The normalised event (service.schemas.market) for a simulator event; ingest time defaults to event time."""
    if isinstance(e, SimTrade):
        return Trade(
            venue=e.venue,
            symbol=e.symbol,
            event_time_ms=e.ts_ms,
            ingest_time_ms=e.ts_ms if ingest_ms is None else ingest_ms,
            trade_id=str(e.trade_id),
            price=Decimal(e.price),
            size=Decimal(e.size),
            side=e.side,
        )
    if isinstance(e, SimBook):
        bids, asks = _levels(e.bids), _levels(e.asks)
        bd = sum((q for _, q in bids), Decimal(0))
        ad = sum((q for _, q in asks), Decimal(0))
        tot = bd + ad
        return BookTop(
            venue=e.venue,
            symbol=e.symbol,
            event_time_ms=e.ts_ms,
            ingest_time_ms=e.ts_ms if ingest_ms is None else ingest_ms,
            update_id=e.seq,
            best_bid=bids[0][0] if bids else None,
            best_ask=asks[0][0] if asks else None,
            bid_size=bids[0][1] if bids else None,
            ask_size=asks[0][1] if asks else None,
            bids=bids,
            asks=asks,
            imbalance=float((bd - ad) / tot) if tot else 0.0,
            resync=e.seq == 2,  # the first book of a key: built from nothing, like a fresh snapshot
        )
    return Bar(
        venue=e.venue,
        symbol=e.symbol,
        event_time_ms=e.close_ms,
        ingest_time_ms=e.close_ms if ingest_ms is None else ingest_ms,
        interval=_interval_name(e.close_ms - e.open_ms + 1),
        open_time_ms=e.open_ms,
        close_time_ms=e.close_ms,
        open=Decimal(e.open),
        high=Decimal(e.high),
        low=Decimal(e.low),
        close=Decimal(e.close),
        volume=Decimal(e.volume),
        trades=e.trades,
        taker_buy_volume=Decimal(e.buy_volume),
        incomplete=e.incomplete,
    )


def _interval_name(ms: int) -> str:
    from service.ingest.readers import interval_name

    return interval_name(ms)


def market_events(cfg: SimConfig) -> Iterator[PublishedMarketEvent]:
    """The simulated market as normalised events (what the topics carry), for training and `rmad score`."""
    for e in MarketSimulator(cfg).events():
        yield to_market(e)


@dataclass(frozen=True, slots=True)
class GeneratedFiles:
    events: Path
    labels_json: Path
    labels_csv: Path
    trades_csv: dict[str, Path]
    counts: dict[str, int]
    labels: list[SimLabel]


def generate_files(cfg: SimConfig, out_dir: Path, *, trades_csv: bool = False) -> GeneratedFiles:
    """Write the simulated market to `out_dir`: events.jsonl.gz (format `events-jsonl`: every trade, book and bar,
    replayable with `rmad run --source replay:DIR/events.jsonl.gz`), labels.json / labels.csv (the ground truth,
    also published by the replay), and with `trades_csv` one Binance-layout trade CSV per key."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sim = MarketSimulator(cfg)
    counts: dict[str, int] = {"trade": 0, "book": 0, "bar": 0}
    events_path = out_dir / "events.jsonl.gz"
    csvw = TradesCsvWriter(out_dir) if trades_csv else None
    try:
        with gzip.open(events_path, "wb", compresslevel=3) as fh:
            buf: list[bytes] = []
            for e in sim.events():
                buf.append(encode(to_market(e)))
                if len(buf) >= 4096:  # one compress call per batch, not per line
                    fh.write(b"\n".join(buf) + b"\n")
                    buf.clear()
                if isinstance(e, SimTrade):
                    counts["trade"] += 1
                    if csvw is not None:
                        csvw.write(e)
                elif isinstance(e, SimBook):
                    counts["book"] += 1
                else:
                    counts["bar"] += 1
            if buf:
                fh.write(b"\n".join(buf) + b"\n")
    finally:
        if csvw is not None:
            csvw.close()
    jpath, cpath = write_labels(sim.labels, out_dir)
    return GeneratedFiles(events_path, jpath, cpath, dict(csvw.paths) if csvw else {}, counts, list(sim.labels))


def with_pump_at(cfg: SimConfig, key: str, start_s: float, *, magnitude: float = 0.8, scale: float = 1.0) -> SimConfig:
    """A config whose only anomaly is one pump-and-dump on `key` starting `start_s` after the start."""
    start = cfg.start_ms + int(start_s * 1000)
    onset = start + int(120_000 * scale)
    peak = onset + int(90_000 * scale)
    end = peak + int(600_000 * scale)
    spec = AnomalySpec("pump_and_dump", (key,), start, onset, end, magnitude, cfg.seed, peak_ms=peak)
    return replace(cfg, anomalies=(spec,))


# ------------------------------------------------------------------------------------------ bus: labels, source


class LabelPublisher:
    """Publishes ground-truth labels to their topic (keyed like the market events) and optionally to files."""

    def __init__(self, producer: Producer, topic: str, out_dir: Path | None = None) -> None:
        self.producer = producer
        self.topic = topic
        self.out_dir = out_dir
        self.published: list[SimLabel] = []

    async def ensure_topic(self, bus: Bus, settings: Settings) -> None:
        """The runtime creates the standard topics; this one belongs to the simulator (and replays of its files)."""
        try:
            spec = TopicSpec(
                self.topic,
                settings.topic_partitions,
                settings.topic_replication_factor,
                {"retention.ms": str(settings.topic_retention_ms)},
            )
            await asyncio.wait_for(bus.create_topics([spec]), 10)
        except Exception as exc:  # the bus may come up later; the producer creates/retries on its own
            log.warning("could not create topic %s yet: %s", self.topic, exc)

    async def publish(self, label: SimLabel) -> None:
        await self.producer.send(self.topic, label.model_dump_json().encode(), key=label.key.encode())
        self.published.append(label)
        if self.out_dir is not None:
            write_labels(self.published, self.out_dir)


class SimulatorSource:
    """Runtime component for `rmad run --source simulator`: the simulated market, paced against the wall clock.

    Time: the simulated clock starts `sim_backfill_s` before now and runs at `sim_speed` simulated seconds per
    wall second until it catches up with now, then at 1x, so event times never lie in the future (the lag metric,
    the worker's windows and the dashboard's "last minutes" stay meaningful) while a demo still sees an anomaly
    within the first minute: with the defaults (20x, first anomaly 300 s after the start, phases compressed 2x)
    the first pump's rush starts 30-60 s after `rmad run`.
    """

    name = "ingest.simulator"

    def __init__(self, bus: Bus, settings: Settings, cfg: SimConfig | None = None) -> None:
        self._bus = bus
        self._settings = settings
        speed = settings.sim_speed
        backfill = settings.sim_backfill_s if speed > 1 else 0.0
        start = int(time.time() * 1000) - int(backfill * 1000)
        self.cfg = cfg or SimConfig(
            seed=settings.sim_seed,
            start_ms=start - start % 60_000,  # minute-aligned, so the first bar is whole
            duration_s=None,
            first_anomaly_s=settings.sim_first_anomaly_s,
            anomaly_every_s=settings.sim_anomaly_every_s,
            anomaly_time_scale=settings.sim_anomaly_time_scale,
            rate_scale=settings.sim_rate_scale,
        )
        self.speed = speed
        self.sim: MarketSimulator | None = None
        self.publisher: MarketPublisher | None = None
        self.labels: LabelPublisher | None = None
        self._producer: Producer | None = None
        self._task: asyncio.Task[None] | None = None
        self._error = ""
        self.events_published = 0
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._stopping.clear()
        self._producer = self._bus.producer()
        await self._producer.start()
        self.publisher = MarketPublisher(self._producer, self._settings)
        out = Path(self._settings.sim_labels_dir) if self._settings.sim_labels_dir else None
        self.labels = LabelPublisher(self._producer, self._settings.topic_sim_labels, out)
        await self.labels.ensure_topic(self._bus, self._settings)
        self.sim = MarketSimulator(self.cfg)
        log.info(
            "simulator: %d instruments, %gx until it catches up with now, first anomaly %.0f s after its start",
            len(self.cfg.instruments),
            self.speed,
            self.cfg.first_anomaly_s,
        )
        self._task = asyncio.create_task(self._run(), name="simulator")

    def target_ms(self, wall_elapsed_s: float, now_ms: int) -> int:
        """Simulated time due after `wall_elapsed_s`: start + speed x elapsed, never past now (when it started
        in the past)."""
        t = self.cfg.start_ms + int(wall_elapsed_s * 1000 * self.speed)
        return min(t, now_ms) if self.cfg.start_ms <= now_ms else t

    async def _run(self) -> None:
        assert self.sim is not None and self.publisher is not None and self.labels is not None
        sim, pub, labels = self.sim, self.publisher, self.labels
        wall0 = time.monotonic()
        seen_labels = 0
        last_flush = wall0
        max_chunk_ms = max(self.cfg.step_ms, int(1000 * max(1.0, self.speed) / 4))  # ~0.25 s of wall time
        try:
            while not self._stopping.is_set():  # stop() lets the chunk in hand finish, so it is sent whole
                now_ms = int(time.time() * 1000)
                target = self.target_ms(time.monotonic() - wall0, now_ms)
                target = min(target, sim.t_ms + max_chunk_ms)
                events = sim.run_until(target)
                for lab in sim.new_labels(seen_labels):
                    await labels.publish(lab)
                seen_labels = len(sim.labels)
                ingest_ms = int(time.time() * 1000)
                for e in events:
                    await pub.publish(to_market(e, ingest_ms))
                self.events_published += len(events)
                mono = time.monotonic()
                if mono - last_flush > 0.5:
                    await pub.flush()
                    last_flush = mono
                behind = self.target_ms(mono - wall0, ingest_ms) - sim.t_ms
                await asyncio.sleep(0 if behind > self.cfg.step_ms else self.cfg.step_ms / 1000 / self.speed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("simulator stopped")
            self._error = f"{type(exc).__name__}: {exc}"

    async def stop(self) -> None:
        """Stop simulating after the chunk in hand (at most ~0.25 s of wall time of events), then flush and close
        the producer: every event counted in `events_published` is in the topics when this returns."""
        self._stopping.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._producer is not None:
            try:
                if self.publisher is not None:
                    await self.publisher.flush()  # its open trade packs
            finally:
                await self._producer.stop()

    def health(self) -> Health:
        if self.sim is None:
            return Health(False, "not started")
        if self._error:
            return Health(False, f"simulator failed: {self._error}")
        lag_s = (time.time() * 1000 - self.sim.t_ms) / 1000
        return Health(
            True,
            f"simulated time {lag_s:.0f} s behind now, {self.events_published} events, {len(self.sim.labels)} labels",
        )


# ------------------------------------------------------------------------------------------------------ CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="directory for events.jsonl.gz and labels.json/csv")
    p.add_argument("--seconds", type=float, default=3600.0, help="simulated duration")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start-ms", type=int, default=DEFAULT_START_MS, help="simulated start (epoch ms)")
    p.add_argument("--first-anomaly-s", type=float, default=600.0)
    p.add_argument("--anomaly-every-s", type=float, default=1800.0)
    p.add_argument("--kinds", default=",".join(ANOMALY_KINDS), help="anomaly kinds to inject, comma separated")
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiplies every trade rate")
    p.add_argument("--fixed-rates", action="store_true", help="constant tick rates (no intraday/volatility link)")
    p.add_argument("--no-books", action="store_true", help="leave the order books out")
    p.add_argument("--trades-csv", action="store_true", help="also write one Binance-layout trade CSV per key")


def run(args: argparse.Namespace) -> int:
    """`rmad simulate`: write a simulated market and its labels to files (replayable, scoreable)."""
    names = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in names if k not in ANOMALY_KINDS]
    kinds = tuple(k for k in ANOMALY_KINDS if k in names)
    if unknown:
        print(f"rmad simulate: unknown anomaly kinds {unknown}; known: {', '.join(ANOMALY_KINDS)}")
        return 2
    cfg = SimConfig(
        seed=args.seed,
        start_ms=args.start_ms,
        duration_s=args.seconds,
        first_anomaly_s=args.first_anomaly_s,
        anomaly_every_s=args.anomaly_every_s,
        anomaly_kinds=kinds,
        rate_scale=args.rate_scale,
        fixed_rates=args.fixed_rates,
        emit_books=not args.no_books,
    )
    t0 = time.perf_counter()
    res = generate_files(cfg, args.out, trades_csv=args.trades_csv)
    dt = time.perf_counter() - t0
    total = sum(res.counts.values())
    print(f"wrote {res.events} ({total} events: {res.counts}) in {dt:.1f} s ({total / dt:,.0f} events/s)")
    print(f"labels: {res.labels_json}, {res.labels_csv} ({len(res.labels)} labels)")
    for lab in res.labels:
        print(f"  {lab.type:14s} {lab.key:22s} start {lab.start_ms} onset {lab.onset_ms} end {lab.end_ms}")
    for key, path in res.trades_csv.items():
        print(f"trades {key}: {path}")
    return 0
