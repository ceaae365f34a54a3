"""Per-bar market features, O(1) per bar, the same code in training and serving.

Every feature is scale-free (log returns, ratios to the symbol's own slow baseline, z-scores, counts through
log1p), so one model can score a 20-satoshi altcoin and BTCUSDT alike; raw price or volume levels never enter.
The slow baselines are EWMs over `long_span` bars; the first `warmup` bars of a stream are not trusted (training
drops them, the runtime marks them cold). No clock features: pumps start on the hour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from service.features.bars import TimeBar
from service.features.spec import DEFAULT_PARAMS, MARKET_FEATURES, FeatureParams


class _Ring:
    """Fixed-length ring with a running sum and sum of squares (re-summed every `n` pushes to stop drift)."""

    __slots__ = ("_i", "_k", "buf", "n", "ss", "sum")

    def __init__(self, n: int) -> None:
        self.n = n
        self.buf = [0.0] * n
        self._i = 0
        self._k = 0
        self.sum = 0.0
        self.ss = 0.0

    def push(self, x: float) -> None:
        old = self.buf[self._i]
        self.buf[self._i] = x
        self._i = (self._i + 1) % self.n
        self.sum += x - old
        self.ss += x * x - old * old
        self._k += 1
        if self._k % self.n == 0:
            self.sum = math.fsum(self.buf)
            self.ss = math.fsum(v * v for v in self.buf)

    def ago(self, lag: int) -> float:
        """Value pushed `lag` pushes ago (0 = the latest)."""
        return self.buf[(self._i - 1 - lag) % self.n]

    def mean_std(self) -> tuple[float, float]:
        m = self.sum / self.n
        return m, math.sqrt(max(self.ss / self.n - m * m, 0.0))


class _Ewm:
    """Exponentially weighted mean and variance (West's incremental form)."""

    __slots__ = ("alpha", "mean", "n", "var")

    def __init__(self, span: float) -> None:
        self.alpha = 2.0 / (span + 1.0)
        self.mean = 0.0
        self.var = 0.0
        self.n = 0

    def update(self, x: float) -> None:
        if self.n == 0:
            self.mean = x
        else:
            d = x - self.mean
            inc = self.alpha * d
            self.mean += inc
            self.var = (1.0 - self.alpha) * (self.var + d * inc)
        self.n += 1


def _clip(x: float, c: float) -> float:
    if x != x:  # NaN
        return 0.0
    return c if x > c else (-c if x < -c else x)


class MarketFeatureState:
    """Feature state of one symbol's bar stream. `update(bar)` returns the vector named by `MARKET_FEATURES`."""

    def __init__(self, params: FeatureParams = DEFAULT_PARAMS) -> None:
        p = params
        self.params = p
        self.bars_seen = 0
        self._prev_logc: float | None = None
        self._logc_short = _Ring(p.short + 1)
        self._r2_short = _Ring(p.short)
        self._r2_long = _Ewm(p.long_span)
        self._gain = 0.0
        self._loss = 0.0
        self._boll = _Ring(p.bollinger)
        self._ema_fast = _Ewm(p.macd_fast)
        self._ema_slow = _Ewm(p.macd_slow)
        self._ema_sig = _Ewm(p.macd_signal)
        self._ema_long_p = _Ewm(p.long_span)
        self._qv_long = _Ewm(p.long_span)
        self._qv_short = _Ring(p.short)
        self._volrel_long = _Ewm(p.long_span)
        self._tr_long = _Ewm(p.long_span)
        self._tr_short = _Ring(p.short)
        self._trrel_long = _Ewm(p.long_span)
        self._buy_short = _Ring(p.short)
        self._sell_short = _Ring(p.short)
        self._buyq_short = _Ring(p.short)
        self._empty_short = _Ring(p.short)
        self._rush_chunk = _Ring(p.chunk)
        self._rush_sell_chunk = _Ring(p.chunk)
        self._qv_chunk = _Ring(p.chunk)
        self._tr_chunk = _Ring(p.chunk)
        span = p.chunk * p.chunks
        self._rush_hist = _Ring(span)
        self._qv_hist = _Ring(span)
        self._tr_hist = _Ring(span)

    @property
    def warm(self) -> bool:
        """True once the slow baselines have seen `warmup` bars."""
        return self.bars_seen >= self.params.warmup

    def _chunk_stats(self, hist: _Ring) -> tuple[float, float]:
        """Mean and std of the last `chunks` non-overlapping chunk sums ending at this bar."""
        p = self.params
        vals = [hist.ago(j * p.chunk) for j in range(p.chunks)]
        m = sum(vals) / p.chunks
        v = sum((x - m) * (x - m) for x in vals) / p.chunks
        return m, math.sqrt(v)

    def update(self, bar: TimeBar) -> np.ndarray:
        """Consume one closed bar and return float32[len(MARKET_FEATURES)]."""
        p = self.params
        zc = p.z_clip
        logc = math.log(bar.close)
        prev = self._prev_logc if self._prev_logc is not None else logc
        ret = logc - prev
        self._prev_logc = logc
        # returns and volatility
        self._logc_short.push(logc)
        ret_short = logc - self._logc_short.ago(min(p.short, self.bars_seen))
        base_rv = math.sqrt(max(self._r2_long.mean, 0.0) * p.short)
        self._r2_short.push(ret * ret)
        self._r2_long.update(ret * ret)
        rv_short = math.sqrt(max(self._r2_short.sum, 0.0))
        rv_ratio = math.log((rv_short + 1e-6) / (base_rv + 1e-6))
        range_hl = math.log(bar.high / bar.low) if bar.low > 0.0 else 0.0
        vwap_dev = math.log(bar.close / bar.vwap) if (bar.volume > 0.0 and bar.vwap > 0.0) else 0.0
        # RSI (Wilder smoothing), mapped to [-1, 1]
        a = 1.0 / p.rsi
        self._gain += a * (max(ret, 0.0) - self._gain)
        self._loss += a * (max(-ret, 0.0) - self._loss)
        gl = self._gain + self._loss
        rsi = (self._gain - self._loss) / gl if gl > 1e-15 else 0.0
        # Bollinger position on log price
        self._boll.push(logc)
        n_b = min(self.bars_seen + 1, p.bollinger)
        if n_b >= 2:
            vals_sum = self._boll.sum if n_b == p.bollinger else sum(self._boll.ago(i) for i in range(n_b))
            vals_ss = self._boll.ss if n_b == p.bollinger else sum(self._boll.ago(i) ** 2 for i in range(n_b))
            mb = vals_sum / n_b
            sb = math.sqrt(max(vals_ss / n_b - mb * mb, 0.0))
            boll = (logc - mb) / (2.0 * sb) if sb > 1e-9 else 0.0
        else:
            boll = 0.0
        # MACD on log price
        self._ema_fast.update(logc)
        self._ema_slow.update(logc)
        macd = self._ema_fast.mean - self._ema_slow.mean
        self._ema_sig.update(macd)
        macd_hist = macd - self._ema_sig.mean
        price_dev = logc - self._ema_long_p.mean if self._ema_long_p.n else 0.0
        self._ema_long_p.update(logc)
        # volume against the symbol's own slow baseline (previous bars only, so a spike is not self-damped)
        qv = bar.quote_volume
        m = self._qv_long.mean
        self._qv_short.push(qv)
        if m > 0.0:
            vol_rel = math.log1p(qv / m)
            vol_rel_short = math.log1p(max(self._qv_short.sum, 0.0) / (p.short * m))
        else:
            vol_rel = vol_rel_short = 0.0
        vr = self._volrel_long
        vol_z = (vol_rel - vr.mean) / math.sqrt(vr.var + 1e-4) if vr.n else 0.0
        vr.update(vol_rel)
        self._qv_long.update(qv)
        # trade counts
        if bar.trades is not None:
            nt = float(bar.trades)
            mt = self._tr_long.mean
            self._tr_short.push(nt)
            if mt > 0.0:
                tr_rel = math.log1p(nt / mt)
                tr_rel_short = math.log1p(max(self._tr_short.sum, 0.0) / (p.short * mt))
            else:
                tr_rel = tr_rel_short = 0.0
            tl = self._trrel_long
            tr_z = (tr_rel - tl.mean) / math.sqrt(tl.var + 1e-4) if tl.n else 0.0
            tl.update(tr_rel)
            self._tr_long.update(nt)
        else:
            nt = 0.0
            tr_rel = tr_rel_short = tr_z = 0.0
        # taker flow
        if bar.taker_buy_volume is not None and bar.taker_sell_volume is not None:
            self._buy_short.push(bar.taker_buy_volume)
            self._sell_short.push(bar.taker_sell_volume)
            tot = self._buy_short.sum + self._sell_short.sum
            imb_short = (self._buy_short.sum - self._sell_short.sum) / tot if tot > 1e-15 else 0.0
            imb = bar.imbalance
        else:
            imb = imb_short = 0.0
        if bar.taker_buy_quote is not None:
            self._buyq_short.push(bar.taker_buy_quote)
            buy_rel = math.log1p(max(self._buyq_short.sum, 0.0) / (p.short * m)) if m > 0.0 else 0.0
        else:
            buy_rel = 0.0
        self._empty_short.push(1.0 if bar.empty else 0.0)
        empty_frac = self._empty_short.sum / min(self.bars_seen + 1, p.short)
        # rush orders and La Morgia-style chunk statistics
        self._rush_chunk.push(float(bar.rush_orders or 0))
        self._rush_sell_chunk.push(float(bar.rush_sell_orders or 0))
        self._qv_chunk.push(qv)
        self._tr_chunk.push(nt)
        self._rush_hist.push(self._rush_chunk.sum)
        self._qv_hist.push(self._qv_chunk.sum)
        self._tr_hist.push(self._tr_chunk.sum)
        r_mean, r_std = self._chunk_stats(self._rush_hist)
        _, q_std = self._chunk_stats(self._qv_hist)
        _, t_std = self._chunk_stats(self._tr_hist)
        vol_chunk_std = math.log1p(q_std / (p.chunk * m)) if m > 0.0 else 0.0
        self.bars_seen += 1
        out = (
            ret,
            ret_short,
            range_hl,
            vwap_dev,
            rv_short,
            _clip(rv_ratio, zc),
            rsi,
            _clip(boll, zc),
            macd,
            macd_hist,
            price_dev,
            _clip(vol_rel, zc),
            _clip(vol_rel_short, zc),
            _clip(vol_z, zc),
            _clip(tr_rel, zc),
            _clip(tr_rel_short, zc),
            _clip(tr_z, zc),
            imb,
            imb_short,
            _clip(buy_rel, zc),
            math.log1p(max(self._rush_chunk.sum, 0.0)),
            math.log1p(max(r_mean, 0.0)),
            math.log1p(r_std),
            math.log1p(max(self._rush_sell_chunk.sum, 0.0)),
            _clip(vol_chunk_std, zc),
            math.log1p(t_std),
            empty_frac,
        )
        return np.asarray(out, dtype=np.float32)

    def update_many(self, bars: Iterable[TimeBar]) -> np.ndarray:
        """Feature matrix float32[N, F] for a bar sequence (training and replay)."""
        rows = [self.update(b) for b in bars]
        if not rows:
            return np.zeros((0, len(MARKET_FEATURES)), dtype=np.float32)
        return np.stack(rows)
