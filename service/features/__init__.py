"""The one feature implementation shared by training (models/) and serving (service/scoring).

- `bars`: `TradeBarBuilder` (incremental trades -> time bars, empty and incomplete bars included) and
  `bars_from_klines` (the same `TimeBar` from exchange klines).
- `market`: `MarketFeatureState`, O(1) per bar, returning the vector named by `spec.MARKET_FEATURES`.
- `scaling`: `RobustScaler` (median / IQR), fitted on training data, stored in the manifest.
- `spec`: names, parameters and `SPEC_HASH`, checked by the runtime against a model's manifest.
"""

from service.features.bars import TimeBar, TradeBarBuilder, bars_from_klines, bars_from_trades
from service.features.market import MarketFeatureState
from service.features.scaling import RobustScaler
from service.features.spec import (
    DEFAULT_PARAMS,
    MARKET_FEATURES,
    N_MARKET_FEATURES,
    SCALED_CLIP,
    SPEC_HASH,
    FeatureParams,
    spec_dict,
    spec_hash,
)

__all__ = [
    "DEFAULT_PARAMS",
    "MARKET_FEATURES",
    "N_MARKET_FEATURES",
    "SCALED_CLIP",
    "SPEC_HASH",
    "FeatureParams",
    "MarketFeatureState",
    "RobustScaler",
    "TimeBar",
    "TradeBarBuilder",
    "bars_from_klines",
    "bars_from_trades",
    "spec_dict",
    "spec_hash",
]
