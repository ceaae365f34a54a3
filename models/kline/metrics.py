"""Event metrics of the kline model, counted the way `rmad score` alerts: the runtime's `AlertPolicy`
(hysteresis and cool-down) turns a score series into alerts; alerts closer than `MERGE_MS` form one episode.

- detected: an alert within +/- TOLERANCE_MS of a primary event's worst bar (bar open time);
- delay: first such alert's window end minus the worst bar's open time (negative: before the worst bar);
- false-alarm episodes per symbol-day on the calm stretches (events.CALM);
- precision: episodes near a primary event / all episodes outside the exclusion zones of secondary events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.kline.events import CALM, EXCLUDE_MS, MERGE_MS, TOLERANCE_MS, ms
from service.scoring.alerts import AlertPolicy, KeyAlertState

DEFAULT_POLICY = AlertPolicy(hysteresis=0.8, cooldown_ms=300_000)


def alert_times(t_ms: np.ndarray, score: np.ndarray, thr: float, policy: AlertPolicy = DEFAULT_POLICY) -> np.ndarray:
    """Window-end times at which the runtime's policy raises an alert (one key, time order, one anomaly type).

    The same decisions as `AlertPolicy.decide` window by window (tested), walked crossing by crossing: a crossing
    disarms the key (and fires outside the cool-down), the next window below threshold * hysteresis re-arms it."""
    hyst = thr * policy.hysteresis if thr > 0 else thr
    above = np.flatnonzero(score >= thr)
    below = np.flatnonzero(score < hyst)
    out: list[int] = []
    last: int | None = None
    pos = 0
    while True:
        k = int(np.searchsorted(above, pos))
        if k >= len(above):
            break
        i = int(above[k])
        t = int(t_ms[i])
        if last is None or t - last >= policy.cooldown_ms:
            out.append(t)
            last = t
        j = int(np.searchsorted(below, i, side="right"))
        if j >= len(below):
            break
        pos = int(below[j]) + 1
    return np.asarray(out, np.int64)


def alert_times_reference(
    t_ms: np.ndarray, score: np.ndarray, thr: float, policy: AlertPolicy = DEFAULT_POLICY
) -> np.ndarray:
    """`AlertPolicy.decide` window by window (slow; the check of `alert_times`)."""
    st = KeyAlertState()
    return np.asarray(
        [int(t) for t, v in zip(t_ms, score, strict=True) if policy.decide(st, float(v), thr, int(t))], np.int64
    )


def episodes(times: np.ndarray, merge_ms: int = MERGE_MS) -> np.ndarray:
    """Start times of alert episodes (alerts closer than merge_ms to the previous one join its episode)."""
    if len(times) == 0:
        return times
    keep = np.ones(len(times), bool)
    keep[1:] = np.diff(times) > merge_ms
    return times[keep]


@dataclass
class Scored:
    """One series' scores at its decision times (window ends) with its events and calm spans."""

    name: str
    period: str
    symbol: str
    t_ms: np.ndarray
    score: np.ndarray
    events: list[tuple[str, bool, int]]  # (name, primary, worst bar open ms)
    calm: list[tuple[int, int]]
    span_days: float


def calm_spans(period: str, t0: int, t1: int) -> list[tuple[int, int]]:
    out = []
    for p, a, b in CALM:
        if p == period:
            lo, hi = max(ms(a), t0), min(ms(b), t1)
            if hi > lo:
                out.append((lo, hi))
    return out


@dataclass
class Result:
    detected: int
    events: int
    fa_calm: int
    calm_days: float
    fa_other: int
    other_days: float
    near_event: int
    delays_min: list[float]
    missed: list[str]

    @property
    def fa_per_day(self) -> float:
        return self.fa_calm / self.calm_days if self.calm_days else float("nan")

    @property
    def fa_other_per_day(self) -> float:
        return self.fa_other / self.other_days if self.other_days else float("nan")

    @property
    def precision(self) -> float:
        n = self.near_event + self.fa_other
        return self.near_event / n if n else float("nan")

    @property
    def recall(self) -> float:
        return self.detected / self.events if self.events else float("nan")

    @property
    def median_delay_min(self) -> float:
        return float(np.median(self.delays_min)) if self.delays_min else float("nan")

    def row(self) -> dict[str, object]:
        return {
            "detected": f"{self.detected}/{self.events}",
            "recall": round(self.recall, 3),
            "fa_calm_per_day": round(self.fa_per_day, 3),
            "fa_calm": self.fa_calm,
            "fa_other_per_day": round(self.fa_other_per_day, 3),
            "precision": round(self.precision, 3),
            "median_delay_min": round(self.median_delay_min, 1),
        }


def evaluate(scored: Sequence[Scored], thr: float | dict[str, float], policy: AlertPolicy = DEFAULT_POLICY) -> Result:
    """Metrics at threshold `thr` (or per-period thresholds: {period: thr}, for leave-one-period-out)."""
    det = n_ev = fa_calm = fa_other = near = 0
    calm_days = other_days = 0.0
    delays: list[float] = []
    missed: list[str] = []
    for s in scored:
        tau = thr[s.period] if isinstance(thr, dict) else thr
        alerts = alert_times(s.t_ms, s.score, tau, policy)
        eps = episodes(alerts)
        worst_all = np.asarray([w for _, _, w in s.events], np.int64)
        for name, primary, w in s.events:
            if not primary:
                continue
            n_ev += 1
            hit = alerts[(alerts >= w - TOLERANCE_MS) & (alerts <= w + TOLERANCE_MS)]
            if len(hit):
                det += 1
                delays.append((hit[0] - w) / 60_000)
            else:
                missed.append(f"{s.symbol} {name}")
        prim = np.asarray([w for _, p, w in s.events if p], np.int64)
        for e in eps:
            if len(prim) and np.min(np.abs(prim - e)) <= TOLERANCE_MS:
                near += 1
                continue
            if len(worst_all) and np.min(np.abs(worst_all - e)) <= EXCLUDE_MS:
                continue  # event aftermath / secondary event: neither
            in_calm = any(a <= e < b for a, b in s.calm)
            if in_calm:
                fa_calm += 1
            fa_other += 1
        calm_days += sum(b - a for a, b in s.calm) / 86_400_000
        other_days += s.span_days
    return Result(det, n_ev, fa_calm, calm_days, fa_other, other_days, near, delays, missed)


def threshold_for_budget(
    scored: Sequence[Scored], budget_per_day: float, policy: AlertPolicy = DEFAULT_POLICY, grid: int = 60
) -> float:
    """The lowest threshold whose false-alarm episodes per symbol-day, over all non-event time of `scored`, stay
    within the budget (validation folds only). Calm stretches alone are too few days to set a tail threshold."""
    allv = np.concatenate([s.score for s in scored])
    allv = allv[np.isfinite(allv)]
    qs = np.quantile(allv, np.linspace(0.99, 0.99999, grid))
    best = float(qs[-1])
    for q in qs[::-1]:
        r = evaluate(scored, float(q), policy)
        if r.fa_other_per_day <= budget_per_day:
            best = float(q)
        else:
            break
    return best


def recall_matched_precision(
    scored: Sequence[Scored], target_detected: int, policy: AlertPolicy = DEFAULT_POLICY, grid: int = 80
) -> tuple[float, Result] | None:
    """The highest threshold that still detects `target_detected` events, and its result (precision at that
    recall), or None when no threshold reaches it."""
    allv = np.concatenate([s.score for s in scored])
    allv = allv[np.isfinite(allv)]
    qs = np.quantile(allv, np.linspace(0.9, 0.99999, grid))
    found = None
    for q in qs:
        r = evaluate(scored, float(q), policy)
        if r.detected >= target_detected:
            found = (float(q), r)
    return found
