"""Per-bar kline features for the `market-kline` model, O(1) per bar, the same code in training and serving.

Why a feature set of its own: the trade-bar set (service/features/market.py) is built for 5 s bars of small caps,
where rush orders and trade counts carry the signal; kline caches of the majors carry OHLCV only, and a -5 % move
means something else on a calm Sunday than in the middle of a liquidation cascade. Every feature here is
therefore measured against the key's *own* trailing robust baseline, computed from earlier bars only:

- returns over 1, 3, 12 and 36 bars, the bar's wicks, and the drawdown from (run-up over) the trailing 36-bar
  high (low), each in units of the key's robust per-bar volatility (an EW mean of winsorised |return|, so one
  crash bar does not inflate the yardstick it is measured with);
- realised volatility of the last 12 bars and the bar range against that baseline;
- quote volume of the bar and of the last 3 bars against the key's EW median-like volume baseline (EW mean of
  log volume, so a spike does not drag the baseline up by its size);
- the volatility regime itself: the short volatility baseline over the long one (a wild day is not a calm day).

Window lengths are in bars, so the same spec serves 1 m and 5 m klines; the model's manifest says which
intervals it takes. Trade counts and taker volume are not model inputs: the kline caches the model is trained on
do not carry them (a feature always 0 in training and live on an exchange stream would be an anomaly by itself).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from service.features.bars import TimeBar as Bar

KLINE_SPEC_VERSION = 1


@dataclass(frozen=True, slots=True)
class KlineParams:
    """Lengths in bars. The slow baselines are EW spans; `warmup` bars are not trusted (training drops them)."""

    vol_span: int = 720  # EW span of the robust per-bar volatility (12 h at 1 m, 2.5 d at 5 m)
    vol_span_short: int = 60  # the short volatility baseline (regime feature)
    vol_span_long: int = 2880  # the long volatility baseline (regime feature)
    winsor: float = 4.0  # |return| above winsor * baseline counts as winsor * baseline in the baseline
    # absolute volatility floor per sqrt(minute): the yardstick is sqrt(trailing^2 + floor^2 * minutes per bar),
    # so on a dead-calm key a 0.3 % wiggle is not "20 standard deviations" while -5 % still is
    vol_floor: float = 0.001
    volume_span: int = 720  # EW span of the log-volume baseline
    mid: int = 12  # bars of the mid-horizon return and realised volatility
    long: int = 36  # bars of the long-horizon return and of the drawdown / run-up reference
    z_clip: float = 60.0
    warmup: int = 720


KLINE_DEFAULT_PARAMS = KlineParams()

#: Ordered names of the vector `KlineFeatureState.update` returns (no clock features).
KLINE_FEATURES: tuple[str, ...] = (
    "ret_1_z",  # log return of this bar / robust per-bar volatility
    "ret_3_z",  # log return over 3 bars / (vol * sqrt 3)
    "ret_6_z",  # log return over 6 bars / (vol * sqrt 6)
    "ret_mid_z",  # log return over `mid` bars / (vol * sqrt mid)
    "ret_long_z",  # log return over `long` bars / (vol * sqrt long)
    "drawdown_z",  # log(close / highest high of the last `long` bars) / (vol * sqrt long), <= 0
    "runup_z",  # log(close / lowest low of the last `long` bars) / (vol * sqrt long), >= 0
    "low_wick_z",  # log(low / previous close) / vol, <= 0 mostly
    "high_wick_z",  # log(high / previous close) / vol
    "range_rel",  # log(bar range / EW mean range)
    "rv_mid_rel",  # log(realised volatility over `mid` bars / (vol * sqrt mid))
    "vol_regime",  # log(short volatility baseline / long volatility baseline)
    "qv_rel",  # log quote volume - EW mean of log quote volume
    "qv_rel_3",  # log of the last 3 bars' mean quote volume - EW mean of log quote volume
    "ret_1",  # raw log return of this bar (for typing and explanations)
)
N_KLINE_FEATURES = len(KLINE_FEATURES)
#: Columns of a kline row the model takes (others, e.g. trades or taker volume, are ignored).
KLINE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
#: Bar intervals the model takes (ms): 1 m native, 5 m native or resampled.
KLINE_INTERVALS_MS: tuple[int, ...] = (60_000, 300_000)


def kline_spec_dict(params: KlineParams = KLINE_DEFAULT_PARAMS) -> dict[str, object]:
    return {"version": KLINE_SPEC_VERSION, "names": list(KLINE_FEATURES), "params": asdict(params)}


def kline_spec_hash(params: KlineParams = KLINE_DEFAULT_PARAMS) -> str:
    blob = json.dumps(kline_spec_dict(params), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


KLINE_SPEC_HASH = kline_spec_hash()

_TINY = 1e-9


class _RollExt:
    """Rolling max (or min) of the last n values with a monotonic deque: O(1) amortised."""

    __slots__ = ("_d", "_i", "n", "sign")

    def __init__(self, n: int, sign: float) -> None:
        self.n = n
        self.sign = sign  # +1 max, -1 min
        self._d: deque[tuple[int, float]] = deque()
        self._i = 0

    def push(self, x: float) -> float:
        v = self.sign * x
        d = self._d
        while d and d[-1][1] <= v:
            d.pop()
        d.append((self._i, v))
        while d[0][0] <= self._i - self.n:
            d.popleft()
        self._i += 1
        return self.sign * d[0][1]


class KlineFeatureState:
    """Streaming kline features of one key; `update(bar)` -> float32[N_KLINE_FEATURES]."""

    def __init__(self, params: KlineParams = KLINE_DEFAULT_PARAMS) -> None:
        self.params = params
        p = params
        self.bars_seen = 0
        self._a_vol = 2.0 / (p.vol_span + 1.0)
        self._a_short = 2.0 / (p.vol_span_short + 1.0)
        self._a_long = 2.0 / (p.vol_span_long + 1.0)
        self._a_qv = 2.0 / (p.volume_span + 1.0)
        self._vol = 0.0  # EW mean of winsorised |ret| (x sqrt(pi/2) ~ per-bar std for a normal)
        self._vol_short = 0.0
        self._vol_long = 0.0
        self._range = 0.0
        self._lqv = 0.0
        self._logc: deque[float] = deque(maxlen=p.long + 1)
        self._r2: deque[float] = deque(maxlen=p.mid)
        self._r2_sum = 0.0
        self._qv3: deque[float] = deque(maxlen=3)
        self._hi = _RollExt(p.long, 1.0)
        self._lo = _RollExt(p.long, -1.0)
        self._prev_close: float | None = None

    @property
    def warm(self) -> bool:
        return self.bars_seen >= self.params.warmup

    def _ret(self, lag: int) -> float:
        c = self._logc
        k = min(lag, len(c) - 1)
        return c[-1] - c[-1 - k] if k > 0 else 0.0

    def update(self, bar: Bar) -> np.ndarray:
        p = self.params
        zc = p.z_clip
        close = bar.close if bar.close > 0.0 else (self._prev_close or 1.0)
        high = bar.high if bar.high > 0.0 else close
        low = bar.low if bar.low > 0.0 else close
        prev = self._prev_close if self._prev_close is not None else bar.open if bar.open > 0.0 else close
        logc = math.log(close)
        ret = logc - math.log(prev)
        self._logc.append(logc)
        first = self.bars_seen == 0
        # yardsticks from earlier bars only
        trail = self._vol * 1.2533 if not first else abs(ret) + 1e-4
        minutes = max(bar.interval_ms, 1) / 60_000.0
        vol = math.sqrt(trail * trail + p.vol_floor * p.vol_floor * minutes)
        rng = math.log(high / low) if low > 0.0 else 0.0
        ret3, ret6, retm, retl = self._ret(3), self._ret(6), self._ret(p.mid), self._ret(p.long)
        hi = self._hi.push(high)
        lo = self._lo.push(low)
        dd = math.log(close / hi) if hi > 0.0 else 0.0
        ru = math.log(close / lo) if lo > 0.0 else 0.0
        low_w = math.log(low / prev) if prev > 0.0 else 0.0
        high_w = math.log(high / prev) if prev > 0.0 else 0.0
        # realised volatility over `mid` bars (this bar included)
        r2 = ret * ret
        if len(self._r2) == self._r2.maxlen:
            self._r2_sum -= self._r2[0]
        self._r2.append(r2)
        self._r2_sum += r2
        rv = math.sqrt(max(self._r2_sum, 0.0))
        n_mid = len(self._r2)
        range_base = self._range if not first else rng
        qv = bar.quote_volume if bar.quote_volume > 0.0 else bar.volume * close
        lqv = math.log1p(max(qv, 0.0))
        self._qv3.append(qv)
        lqv3 = math.log1p(sum(self._qv3) / len(self._qv3))
        lqv_base = self._lqv if not first else lqv
        vs = self._vol_short if not first else vol
        vl = self._vol_long if not first else vol
        out = (
            _clip(ret / vol, zc),
            _clip(ret3 / (vol * math.sqrt(3.0)), zc),
            _clip(ret6 / (vol * math.sqrt(6.0)), zc),
            _clip(retm / (vol * math.sqrt(p.mid)), zc),
            _clip(retl / (vol * math.sqrt(p.long)), zc),
            _clip(dd / (vol * math.sqrt(p.long)), zc),
            _clip(ru / (vol * math.sqrt(p.long)), zc),
            _clip(low_w / vol, zc),
            _clip(high_w / vol, zc),
            _clip(math.log((rng + 1e-6) / (range_base + 1e-6)), zc),
            _clip(math.log((rv + 1e-6) / (vol * math.sqrt(n_mid) + 1e-6)), zc),
            _clip(math.log((vs + 1e-6) / (vl + 1e-6)), zc),
            _clip(lqv - lqv_base, zc),
            _clip(lqv3 - lqv_base, zc),
            ret,
        )
        # update the baselines with this bar (winsorised, so a crash bar does not widen its own yardstick much)
        a = abs(ret)
        if first:
            self._vol = self._vol_short = self._vol_long = a / 1.2533 + 1e-5
            self._range = rng
            self._lqv = lqv
        else:
            cap = p.winsor * max(self._vol, 1e-6)
            aw = min(a, cap)
            self._vol += self._a_vol * (aw - self._vol)
            self._vol_short += self._a_short * (min(a, p.winsor * max(self._vol_short, 1e-6)) - self._vol_short)
            self._vol_long += self._a_long * (aw - self._vol_long)
            self._range += self._a_vol * (min(rng, p.winsor * max(self._range, 1e-6)) - self._range)
            self._lqv += self._a_qv * (lqv - self._lqv)
        self._prev_close = close
        self.bars_seen += 1
        return np.asarray(out, dtype=np.float32)

    def update_many(self, bars: Iterable[Bar]) -> np.ndarray:
        rows = [self.update(b) for b in bars]
        if not rows:
            return np.zeros((0, N_KLINE_FEATURES), dtype=np.float32)
        return np.stack(rows)


def _clip(x: float, c: float) -> float:
    if x != x:  # NaN
        return 0.0
    return c if x > c else -c if x < -c else x


def crash_score(row: np.ndarray) -> float:
    """The statistical crash branch on one feature row: how many (floored) robust standard deviations the key
    fell, at the worst of four horizons (1, 3, 6 and `mid` bars). The same formula runs inside the exported graph
    (models/kline/graph.py) and in the evaluation."""
    return float(max(-row[0], -row[1], -row[2], -row[3], 0.0))


#: Indices of the features `crash_score` reads (the exported graph un-scales these columns).
CRASH_COLUMNS: tuple[int, ...] = (0, 1, 2, 3)


def resample_bars(bars: list[Bar], interval_ms: int) -> list[Bar]:
    """Aggregate consecutive bars into `interval_ms` bars aligned to multiples of it (5 m from 1 m klines).

    A partial bucket at the end is dropped (not yet closed); a bucket with a missing sub-bar is flagged
    incomplete."""
    out: list[Bar] = []
    cur: list[Bar] = []
    start = None
    for b in bars:
        s = b.start_ms - b.start_ms % interval_ms
        if start is not None and s != start:
            out.append(_merge(cur, start, interval_ms))
            cur = []
        start = s
        cur.append(b)
    if cur and start is not None and cur[-1].end_ms >= start + interval_ms:
        out.append(_merge(cur, start, interval_ms))
    return out


def _merge(cur: list[Bar], start: int, interval_ms: int) -> Bar:
    vol = sum(b.volume for b in cur)
    qv = sum(b.quote_volume for b in cur)
    n_sub = interval_ms // max(cur[0].interval_ms, 1)
    incomplete = any(b.incomplete for b in cur) or len(cur) < n_sub
    return Bar(
        start,
        interval_ms,
        cur[0].open,
        max(b.high for b in cur),
        min(b.low for b in cur),
        cur[-1].close,
        vol,
        qv,
        qv / vol if vol > 0.0 else cur[-1].close,
        None,
        None,
        None,
        None,
        None,
        None,
        incomplete,
    )
