"""The market feature specification: ordered names, parameters and their hash.

Training writes `SPEC_HASH` and `MARKET_FEATURES` into every manifest; the runtime refuses a model whose names or
hash differ from this module, so a change to any window length, span or clip value here (or to the order of the
names) forces a retrain instead of silently feeding a model features it never saw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

#: Bump when the meaning of a feature changes without its name or parameters changing.
SPEC_VERSION = 1


@dataclass(frozen=True, slots=True)
class FeatureParams:
    """Window lengths are in bars, so one spec serves 5 s trade bars and 1 m kline bars alike."""

    short: int = 12  # "one minute" at 5 s bars: multi-bar returns, realised volatility, volume sums
    rsi: int = 14
    bollinger: int = 20
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    long_span: int = 720  # EWM span of the slow baselines (one hour at 5 s bars)
    chunk: int = 5  # La Morgia chunk = 5 bars (25 s at 5 s bars)
    chunks: int = 12  # rolling chunks for the rush-order / volume mean and std
    z_clip: float = 50.0  # clip of every z-score and ratio feature
    warmup: int = 720  # bars before the slow baselines are trusted (training drops them)


#: Value range the scaled features are clipped to (applied by `RobustScaler.transform`, training and serving).
SCALED_CLIP = 20.0

DEFAULT_PARAMS = FeatureParams()

#: Ordered names of the vector `MarketFeatureState.update` returns. No time-of-day features: pumps start on the
#: hour, so clock features would leak the label.
MARKET_FEATURES: tuple[str, ...] = (
    "ret_1",  # log return of the close, this bar
    "ret_short",  # log return over `short` bars
    "range_hl",  # log(high / low) of this bar
    "vwap_dev",  # log(close / vwap), 0 on empty bars
    "rv_short",  # realised volatility: sqrt(sum of squared returns over `short` bars)
    "rv_ratio",  # log of rv_short over the slow baseline of realised volatility
    "rsi",  # Wilder RSI over `rsi` bars, mapped to [-1, 1]
    "bollinger_pos",  # (log close - SMA) / (2 std) over `bollinger` bars
    "macd",  # EMA_fast - EMA_slow of log price
    "macd_hist",  # macd - EMA_signal(macd)
    "price_dev_long",  # log close - slow EMA of log close
    "vol_rel",  # log1p(quote volume / slow mean quote volume per bar)
    "vol_rel_short",  # same over `short` bars
    "vol_z",  # z-score of vol_rel against its slow EWM mean / std
    "trades_rel",  # log1p(trade count / slow mean trade count)
    "trades_rel_short",
    "trades_z",
    "imbalance",  # (taker buy - taker sell) / (buy + sell) volume, this bar
    "imbalance_short",  # volume-weighted over `short` bars
    "buy_rel_short",  # log1p(taker buy quote volume over `short` bars / (short * slow mean quote volume))
    "rush_chunk",  # log1p(buy rush orders in the last chunk)
    "rush_mean",  # log1p(mean buy rush orders per chunk over the last `chunks` chunks)
    "rush_std",  # log1p(std of the same)
    "rush_sell_chunk",  # log1p(sell rush orders in the last chunk)
    "vol_chunk_std",  # log1p(std of chunk quote volume over `chunks` chunks / (chunk * slow mean))
    "trades_chunk_std",  # log1p(std of chunk trade counts over `chunks` chunks)
    "empty_frac",  # fraction of empty bars over `short` bars
)

N_MARKET_FEATURES = len(MARKET_FEATURES)


def spec_dict(params: FeatureParams = DEFAULT_PARAMS) -> dict[str, object]:
    """Everything that defines the feature vector, as plain JSON."""
    return {
        "version": SPEC_VERSION,
        "names": list(MARKET_FEATURES),
        "params": asdict(params),
        "scaled_clip": SCALED_CLIP,
    }


def spec_hash(params: FeatureParams = DEFAULT_PARAMS) -> str:
    """sha256 of the canonical JSON of `spec_dict` (sorted keys, no whitespace)."""
    blob = json.dumps(spec_dict(params), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


SPEC_HASH = spec_hash()
