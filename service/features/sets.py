"""Feature sets a model can be trained on: name -> ordered names, spec hash, per-key state and warm-up.

Why a table: the runtime computes whatever a model's manifest says it was trained on (`feature_set`), so the
trade-bar model and the kline model can score side by side with the same window code, and a manifest naming a
set the runtime does not have is refused at load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.features.bars import TimeBar as Bar


class FeatureState(Protocol):
    """Per-key streaming features: one closed bar in, one float32 vector out."""

    bars_seen: int

    def update(self, bar: Bar) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class FeatureSet:
    name: str
    names: tuple[str, ...]
    spec_hash: str
    new_state: Callable[[], FeatureState]
    warmup: int


def _market() -> FeatureSet:
    from service.features.market import MarketFeatureState
    from service.features.spec import DEFAULT_PARAMS, MARKET_FEATURES, SPEC_HASH

    return FeatureSet("market", MARKET_FEATURES, SPEC_HASH, MarketFeatureState, DEFAULT_PARAMS.warmup)


def _kline() -> FeatureSet:
    from service.features.kline import KLINE_DEFAULT_PARAMS, KLINE_FEATURES, KLINE_SPEC_HASH, KlineFeatureState

    return FeatureSet("kline", KLINE_FEATURES, KLINE_SPEC_HASH, KlineFeatureState, KLINE_DEFAULT_PARAMS.warmup)


FEATURE_SETS: dict[str, Callable[[], FeatureSet]] = {"market": _market, "kline": _kline}


def feature_set(name: str) -> FeatureSet:
    """The named set (KeyError with the known names when it does not exist)."""
    try:
        return FEATURE_SETS[name]()
    except KeyError:
        raise KeyError(f"unknown feature set {name!r}; known: {sorted(FEATURE_SETS)}") from None
