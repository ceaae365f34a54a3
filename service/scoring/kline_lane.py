"""The kline lane of the worker: exchange candles (`market.bars`: Binance kline_1m, Bybit kline.1) scored by the
kline model beside the trade-bar model on the same key, and one alert per key and episode across both.

Why a lane of its own: the trade-bar model builds 5 s bars from trades, the kline model takes the exchange's own
1 m / 5 m candles with another feature set (service/features/kline.py) and another window store; a key with both
streams gets two opinions. `AlertEpisodes` turns them into one alert per episode: an alert on a key whose last
alert (from either model) is less than `episode_ms` old joins that episode instead of alerting again, unless it
escalates a weak type (volume surge, other) to a strong one (pump-and-dump, crash, de-peg), which the analyst
must hear about. The lane is self-contained (feed events, decide alerts) so the worker's consume and decision
paths call it without sharing state with the trade-bar windows.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from service.bus.base import TopicPartition
from service.schemas.market import Bar as MarketBar
from service.schemas.scoring import Alert, AnomalyType
from service.scoring.alerts import STRONG_TYPES, AlertPolicy, KeyAlertState
from service.scoring.decision import ModelFacts, decide
from service.scoring.model_choice import bar_interval_ms
from service.scoring.registry import LoadedModel
from service.scoring.scorer import Scorer
from service.scoring.windows import ClosedWindow, WindowStore, apply_event

KLINE_MODEL = "market-kline"
EPISODE_MS = 600_000  # alerts closer than 10 min on one key are one episode


@dataclass
class AlertEpisodes:
    """One alert per key and episode, whichever model raised it (bounded: the least recently alerted keys go)."""

    episode_ms: int = EPISODE_MS
    max_keys: int = 100_000
    _last: OrderedDict[str, tuple[int, str]] = field(default_factory=OrderedDict)
    suppressed: int = 0

    def admit(self, key: str, window_end_ms: int, anomaly: AnomalyType | str) -> bool:
        """True when this alert opens a new episode on `key` (or escalates it to a strong type)."""
        kind = AnomalyType(anomaly)
        last = self._last.get(key)
        strong = {t.value for t in STRONG_TYPES}
        if (
            last is None
            or window_end_ms - last[0] > self.episode_ms
            or (kind in STRONG_TYPES and last[1] not in strong)
        ):
            self._remember(key, window_end_ms, kind.value)
            return True
        self._remember(key, max(last[0], window_end_ms), last[1])  # the episode goes on
        self.suppressed += 1
        return False

    def _remember(self, key: str, t: int, kind: str) -> None:
        self._last[key] = (t, kind)
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)


class KlineLane:
    """Candles in, kline-model alerts out; one window store per candle interval the model takes."""

    def __init__(
        self,
        scorer: Scorer,
        policy: AlertPolicy,
        *,
        model_name: str = KLINE_MODEL,
        warmup_bars: int | None = None,
        max_keys: int = 100_000,
        idle_eviction_s: float = 900.0,
        top_features: int = 3,
    ) -> None:
        self.scorer = scorer
        self.policy = policy
        self.model_name = model_name
        self.warmup_bars = warmup_bars
        self.max_keys = max_keys
        self.idle_eviction_s = idle_eviction_s
        self.top_features = top_features
        self.stores: dict[tuple[str, int], WindowStore] = {}  # (model version, interval ms) -> store
        self.states: OrderedDict[str, KeyAlertState] = OrderedDict()

    def model(self) -> LoadedModel | None:
        return self.scorer.registry.maybe(self.model_name)

    def feed(self, event: object, *, offset: int = -1, tp: TopicPartition | None = None) -> list[ClosedWindow]:
        """One market event; returns the scorable kline windows it closed (only candles of a taken interval)."""
        if not isinstance(event, MarketBar):
            return []
        model = self.model()
        if model is None:
            return []
        m = model.artifact.manifest
        interval = bar_interval_ms(event)
        if interval not in [round(s * 1000) for s in (m.bar_intervals_s or [m.bar_interval_s])]:
            return []
        sk = (m.version, interval)
        store = self.stores.get(sk)
        if store is None:
            store = self.stores[sk] = WindowStore(
                m.window,
                m.n_features,
                interval,
                warmup_bars=self.warmup_bars,
                max_keys=self.max_keys,
                idle_eviction_s=self.idle_eviction_s,
                features=m.feature_set,
            )
        return [w for w in apply_event(store, event, offset=offset, tp=tp) if w.scorable]

    def needed_offsets(self, produced: Callable[[str], int | None]) -> dict[TopicPartition, int]:
        """Per partition, the first record a restart must re-read to rebuild every kline key (merged with the
        trade-bar windows' own by the worker's checkpoint: the smaller offset wins)."""
        out: dict[TopicPartition, int] = {}
        for store in self.stores.values():
            for tp, off in store.needed_offsets(produced).items():
                out[tp] = min(off, out.get(tp, off))
        return out

    def decide(self, windows: list[ClosedWindow]) -> list[Alert]:
        """Score the windows with the kline model and return the alerts its policy raises (before episodes)."""
        model = self.model()
        if model is None or not windows:
            return []
        facts = ModelFacts.of(model)
        results = self.scorer.score_windows(self.model_name, [w.features for w in windows], model=model)
        now_ms = int(time.time() * 1000)
        out: list[Alert] = []
        for w, r in zip(windows, results, strict=True):
            d = decide(
                r,
                w.features,
                facts,
                key=w.key,
                window_end_ms=w.window_end_ms,
                now_ms=now_ms,
                incomplete=w.incomplete,
                state=self.states.get(w.key) or KeyAlertState(),
                policy=self.policy,
                n_features=self.top_features,
            )
            assert d.state is not None
            self.states[w.key] = d.state
            self.states.move_to_end(w.key)
            while len(self.states) > self.max_keys:
                self.states.popitem(last=False)
            if d.alert is not None:
                out.append(d.alert)
        return out
