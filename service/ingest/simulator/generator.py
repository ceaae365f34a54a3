"""The offline market simulator: prices, trades, books and bars per instrument, as fast as the CPU goes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from service.ingest.simulator.definitions import (
    DAY_MS,
    AnomalySpec,
    InstrumentSpec,
    SimBar,
    SimBook,
    SimConfig,
    SimEvent,
    SimLabel,
    SimTrade,
)
from service.ingest.simulator.schedule import (
    AnomalySchedule,
    Effect,
    apply_effect,
    depeg_level,
    intraday_factor,
    seeded_rng,
)

if TYPE_CHECKING:
    pass


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
        self.seeded_rng = seeded_rng(cfg.seed, 0)
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

    def _effect(self, key: str, t: int) -> Effect:
        eff = Effect()
        for spec in self.active:
            if key in spec.keys:
                apply_effect(spec, t, eff)
        return eff

    def _peg_log(self, peg: str | None, t: int) -> float:
        if peg is None:
            return 0.0
        level = self._pegs.get(peg, 0.0)
        for spec in self.active:
            if spec.kind == "depeg" and spec.peg == peg:
                level += math.log1p(-depeg_level(spec, t))
        return level

    def _mid(self, s: _InstState, offset: float, t: int | None = None) -> float:
        t = self.t_ms if t is None else t
        return math.exp(self._logp[s.asset_idx] - self._peg_log(s.spec.peg, t) + s.basis + offset)

    def _advance_prices(self, t0: int) -> None:
        r = self.seeded_rng
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
        cfg, r, spec = self.cfg, self.seeded_rng, s.spec
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
        r, spec = self.seeded_rng, s.spec
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
