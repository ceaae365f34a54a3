"""Alert policy: threshold crossing with hysteresis and a per-key cool-down, tiers and type (the decision that
uses them, with the explanation, is service/scoring/decision.py).

Why hysteresis and a cool-down: a pump stays above the threshold for many consecutive windows; an analyst wants
one alert when it starts, not one every bar. A key re-arms only after its score fell below
`threshold * hysteresis`, and never alerts twice within `cooldown` of event time. Both depend only on the scores
and the windows' event times, so a replay (or a restarted worker) makes the same decisions and, with ids derived
from (model version, key, window end), the same alert ids.

Why the type comes from the features and not from the model: the model says *how* unusual a window is; which
kind of unusual (a pump, a crash, a volume surge without a price move) is read off the window's own feature
values, which an analyst can check on a chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.schemas.scoring import Action, AnomalyType, Severity

STABLECOINS = frozenset({"USDT", "USDC", "BUSD", "TUSD", "DAI", "FDUSD", "USDP", "PYUSD", "USDE"})

TYPE_LABEL = {
    AnomalyType.PUMP_AND_DUMP: "a pump-and-dump",
    AnomalyType.CRASH: "a crash",
    AnomalyType.VOLUME_SURGE: "a volume surge without a matching price move",
    AnomalyType.DEPEG: "a de-peg / cross-market dislocation",
    AnomalyType.SPOOFING_LIKE: "spoofing-like order book activity",
    AnomalyType.SUSPICIOUS_TRANSFER: "a suspicious transfer pattern",
    AnomalyType.OTHER: "unusual activity",
}


STRONG_TYPES = frozenset({AnomalyType.PUMP_AND_DUMP, AnomalyType.CRASH, AnomalyType.DEPEG})


@dataclass(slots=True)
class KeyAlertState:
    """Per-key policy state; small and serialisable so it survives a restart in the worker's checkpoint."""

    armed: bool = True
    last_alert_ms: int | None = None
    last_type: str = ""

    def encode(self) -> str:
        last = "" if self.last_alert_ms is None else str(self.last_alert_ms)
        return f"{int(self.armed)},{last},{self.last_type}"

    @classmethod
    def decode(cls, raw: str) -> KeyAlertState:
        parts = raw.split(",")
        armed = parts[0] == "1"
        last = int(parts[1]) if len(parts) > 1 and parts[1] else None
        return cls(armed=armed, last_alert_ms=last, last_type=parts[2] if len(parts) > 2 else "")


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Fire on a fresh crossing outside the cool-down; escalate once when an episode that was alerted as a weak
    type (volume surge, other) turns into a strong one (pump-and-dump, crash, de-peg): the accumulation phase of
    a pump often crosses first, and the analyst must still hear about the pump itself."""

    hysteresis: float = 0.8
    cooldown_ms: int = 300_000

    def decide(
        self,
        state: KeyAlertState,
        score: float,
        threshold: float,
        window_end_ms: int,
        anomaly: AnomalyType | str = AnomalyType.OTHER,
    ) -> bool:
        """Update `state` with one window's score; True when this window raises an alert."""
        kind = AnomalyType(anomaly)
        if not state.armed:
            if score < threshold * self.hysteresis if threshold > 0 else score < threshold:
                state.armed = True
            elif score >= threshold and self._escalates(state, kind):
                state.last_alert_ms, state.last_type = window_end_ms, kind.value
                return True
            return False
        if score < threshold:
            return False
        state.armed = False  # a crossing: fires, or is swallowed by the cool-down; either way re-arm below
        if state.last_alert_ms is not None and window_end_ms - state.last_alert_ms < self.cooldown_ms:
            if self._escalates(state, kind):
                state.last_alert_ms, state.last_type = window_end_ms, kind.value
                return True
            return False
        state.last_alert_ms, state.last_type = window_end_ms, kind.value
        return True

    @staticmethod
    def _escalates(state: KeyAlertState, kind: AnomalyType) -> bool:
        strong = {t.value for t in STRONG_TYPES}
        return state.last_alert_ms is not None and kind in STRONG_TYPES and state.last_type not in strong


def split_key(key: str) -> tuple[str, str]:
    venue, _, symbol = key.partition(":")
    return venue, symbol


def base_quote(symbol: str) -> tuple[str, str]:
    """BTCUSDT -> (BTC, USDT); OAX/BTC -> (OAX, BTC); unknown quote -> (symbol, "")."""
    s = symbol.upper().replace("-", "/").replace("_", "/")
    if "/" in s:
        b, _, q = s.partition("/")
        return b, q
    for q in ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDE", "USD", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY"):
        if s.endswith(q) and len(s) > len(q):
            return s[: -len(q)], q
    return s, ""


def _col(names: Sequence[str], window: np.ndarray, name: str) -> np.ndarray | None:
    try:
        return window[:, list(names).index(name)]
    except ValueError:
        return None


def classify(key: str, names: Sequence[str], window: np.ndarray, kind: str = "market") -> AnomalyType:
    """The anomaly type of an anomalous market window, from its unscaled feature values [T, F]."""
    if kind == "chain":
        return AnomalyType.SUSPICIOUS_TRANSFER
    base, _ = base_quote(split_key(key)[1])
    if base in STABLECOINS:
        return AnomalyType.DEPEG
    ret = _col(names, window, "ret_1")
    vol_z = _col(names, window, "vol_z")
    vol_rel = _col(names, window, "vol_rel")
    imb = _col(names, window, "imbalance")
    rush = _col(names, window, "rush_chunk")
    if ret is None:
        return AnomalyType.OTHER
    path = np.concatenate([[0.0], np.cumsum(np.nan_to_num(ret))])
    up = path - np.minimum.accumulate(path)  # run-up from the lowest point so far
    down = np.maximum.accumulate(path) - path  # drawdown from the highest point so far
    rise, drop = float(up.max()), float(down.max())
    vol_hot = bool(
        (vol_z is not None and float(np.max(vol_z)) >= 3.0) or (vol_rel is not None and float(np.max(vol_rel)) >= 2.0)
    )
    buying = bool(
        (imb is not None and float(np.max(imb[-3:])) > 0.3) or (rush is not None and float(np.max(rush)) > 0.0)
    )
    big_rise, big_drop = rise >= 0.03, drop >= 0.02
    if float(up[-1]) >= 0.03 and float(up[-1]) > float(down[-1]) and float(path[-1]) > 0.0:
        # still rising at the window's end and above where it started: a pump, whatever dip came before it
        # (a crash's rebound ends below its start, so it stays a crash below)
        return AnomalyType.PUMP_AND_DUMP
    if big_rise and big_drop:
        # which came first: a run-up that then collapsed (pump-and-dump) or a fall that then recovered (crash)
        return AnomalyType.PUMP_AND_DUMP if int(up.argmax()) <= int(down.argmax()) else AnomalyType.CRASH
    if big_rise:
        return AnomalyType.PUMP_AND_DUMP
    if big_drop:
        return AnomalyType.CRASH
    if vol_hot and max(rise, drop) < 0.01:
        return AnomalyType.VOLUME_SURGE
    if rise >= 0.015 and buying:
        return AnomalyType.PUMP_AND_DUMP
    if drop >= 0.01:
        return AnomalyType.CRASH
    if vol_hot:
        return AnomalyType.VOLUME_SURGE
    return AnomalyType.OTHER


def tiers(score: float, threshold: float, critical: float | None, incomplete: bool) -> tuple[Severity, Action]:
    """Severity and recommended action from how far above the threshold a score is."""
    crit = critical if critical is not None and critical > threshold else threshold * 3.0
    high = threshold + (crit - threshold) / 3.0
    order = [Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]
    rank = 3 if score >= crit else 2 if score >= high else 1
    if incomplete:
        rank -= 1  # a window built on lost data is weaker evidence
    sev = order[max(rank, 0)]
    action = {3: Action.REVIEW_NOW, 2: Action.REVIEW_NOW, 1: Action.WATCH}.get(max(rank, 0), Action.NOTE)
    return sev, action
