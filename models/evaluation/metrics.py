"""Event-level metrics for streaming detectors, and threshold calibration on validation data.

Definitions (the same for the model, every baseline and every ablation):
- an *alarm* is a run of scored points at or above the threshold; points closer than `refractory_ms` to the
  previous above-threshold point belong to the same alarm (a 64-bar window stays anomalous for minutes after one
  spike; that is one alert, not sixty);
- a pump event is *detected* when some scored point in [announce - 120 s, announce + 10 min] is at or above the
  threshold; its *delay* is that point's decision time minus the announced minute, floored at 0 (a pre-pump alert
  counts as 0 s, never as negative);
- a *false alarm* is an alarm that starts outside every event's [announce - 120 s, announce + 1 h] zone (the
  dump and its aftermath are excluded, not counted either way) — counted over whole files, so event precision
  pays for every false alarm on the ~3.5 quiet days around each pump;
- window-level ROC-AUC / PR-AUC / FPR: positives are decision times in [onset, onset + 3 min] of visible pumps,
  negatives are points outside the exclusion zones; other points are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.market.dataset import AFTERMATH_MS, ANOM_SPAN_MS, EVENT_POST_MS, EVENT_PRE_MS

DAY_MS = 86_400_000
REFRACTORY_MS = 5 * 60_000


@dataclass
class ScoredSeries:
    """Scores of one detector on one series at its scored points."""

    name: str
    kind: str  # pump | kline
    t_ms: np.ndarray  # decision times, ascending
    score: np.ndarray
    announce_ms: int | None = None
    onset_ms: int | None = None
    pump_visible: bool = True
    span_ms: int = 0  # evaluated time span (for false alarms per symbol-day)

    def zones(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(event window mask, excluded-zone mask, positive mask) over t_ms."""
        t = self.t_ms
        if self.announce_ms is None:
            z = np.zeros(len(t), bool)
            return z, z, z
        a = self.announce_ms
        ev = (t >= a - EVENT_PRE_MS) & (t <= a + EVENT_POST_MS)
        excl = (t >= a - EVENT_PRE_MS) & (t <= a + AFTERMATH_MS)
        onset = self.onset_ms if self.onset_ms is not None else a
        pos = (t >= onset) & (t <= onset + ANOM_SPAN_MS) if self.pump_visible else np.zeros(len(t), bool)
        return ev, excl, pos

    @property
    def quiet_days(self) -> float:
        """Evaluated time outside the exclusion zone, in days."""
        span = self.span_ms
        if self.announce_ms is not None:
            span -= EVENT_PRE_MS + AFTERMATH_MS
        return max(span, 0) / DAY_MS


def alarm_starts(t_ms: np.ndarray, above: np.ndarray, refractory_ms: int = REFRACTORY_MS) -> np.ndarray:
    """Start times of alarms: above-threshold points more than `refractory_ms` after the previous one."""
    ta = t_ms[above]
    if len(ta) == 0:
        return ta
    new = np.empty(len(ta), bool)
    new[0] = True
    new[1:] = np.diff(ta) > refractory_ms
    return ta[new]


@dataclass
class SeriesOutcome:
    name: str
    is_event: bool
    detected: bool
    delay_s: float | None
    false_alarms: int
    quiet_days: float


def series_outcome(s: ScoredSeries, tau: float, refractory_ms: int = REFRACTORY_MS) -> SeriesOutcome:
    ev, excl, _ = s.zones()
    above = s.score >= tau
    fa = alarm_starts(s.t_ms[~excl], above[~excl], refractory_ms)
    is_event = s.announce_ms is not None
    detected, delay = False, None
    if is_event:
        hits = np.flatnonzero(ev & above)
        if len(hits):
            detected = True
            assert s.announce_ms is not None
            delay = max(0.0, (float(s.t_ms[hits[0]]) - s.announce_ms) / 1000.0)
    return SeriesOutcome(s.name, is_event, detected, delay, len(fa), s.quiet_days)


@dataclass
class EventMetrics:
    """One table row's numbers."""

    precision: float
    recall: float
    f1: float
    roc_auc: float
    pr_auc: float
    fpr: float
    delay_median_s: float | None
    delay_p90_s: float | None
    false_alarms: int
    quiet_days: float
    events: int
    detected: int
    threshold: float
    outcomes: list[SeriesOutcome] = field(default_factory=list)

    @property
    def fa_per_day(self) -> float:
        return self.false_alarms / self.quiet_days if self.quiet_days > 0 else float("nan")

    def row(self) -> dict[str, float | int | None]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "roc_auc": self.roc_auc,
            "pr_auc": self.pr_auc,
            "fpr": self.fpr,
            "delay_median_s": self.delay_median_s,
            "delay_p90_s": self.delay_p90_s,
            "false_alarms": self.false_alarms,
            "fa_per_day": self.fa_per_day,
            "quiet_days": self.quiet_days,
            "events": self.events,
            "detected": self.detected,
            "threshold": self.threshold,
        }


def _auc(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if y.min() == y.max():
        return float("nan"), float("nan")
    return float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def window_labels(series: Sequence[ScoredSeries]) -> tuple[np.ndarray, np.ndarray]:
    """(y, score) over every scored point that is a positive or a clean negative."""
    ys, ss = [], []
    for s in series:
        _, excl, pos = s.zones()
        keep = pos | ~excl
        ys.append(pos[keep].astype(np.int8))
        ss.append(s.score[keep])
    if not ys:
        return np.zeros(0, np.int8), np.zeros(0)
    return np.concatenate(ys), np.concatenate(ss)


def event_metrics(
    series: Sequence[ScoredSeries],
    tau: float,
    include_invisible: bool = True,
    refractory_ms: int = REFRACTORY_MS,
) -> EventMetrics:
    """Event precision/recall/F1, window AUCs and FPR, delays and false alarms over `series` at threshold tau.

    include_invisible=False drops the events whose file shows no pump (their quiet time still counts).
    """
    outs = [series_outcome(s, tau, refractory_ms) for s in series]
    events = [o for o, s in zip(outs, series, strict=True) if o.is_event and (include_invisible or s.pump_visible)]
    tp = sum(o.detected for o in events)
    fn = len(events) - tp
    fp = sum(o.false_alarms for o in outs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    y, sc = window_labels([s for s in series if include_invisible or s.pump_visible or s.announce_ms is None])
    roc, pr = _auc(y, sc) if len(y) else (float("nan"), float("nan"))
    neg = y == 0
    fpr = float((sc[neg] >= tau).mean()) if neg.any() else float("nan")
    delays = [o.delay_s for o in events if o.delay_s is not None]
    return EventMetrics(
        precision=precision,
        recall=recall,
        f1=f1,
        roc_auc=roc,
        pr_auc=pr,
        fpr=fpr,
        delay_median_s=float(np.median(delays)) if delays else None,
        delay_p90_s=float(np.percentile(delays, 90)) if delays else None,
        false_alarms=fp,
        quiet_days=sum(o.quiet_days for o in outs),
        events=len(events),
        detected=tp,
        threshold=float(tau),
        outcomes=outs,
    )


def false_alarm_rate(series: Sequence[ScoredSeries], tau: float, refractory_ms: int = REFRACTORY_MS) -> float:
    """False alarms per symbol-day over the quiet parts of `series`."""
    outs = [series_outcome(s, tau, refractory_ms) for s in series]
    days = sum(o.quiet_days for o in outs)
    return sum(o.false_alarms for o in outs) / days if days > 0 else float("nan")


def calibrate_threshold(
    val: Sequence[ScoredSeries],
    budget_per_day: float,
    refractory_ms: int = REFRACTORY_MS,
    n_candidates: int = 400,
) -> float:
    """The lowest threshold whose false alarms per symbol-day on the VALIDATION series stay within the budget.

    Lowest = most sensitive; the budget is the only knob, stated up front, never tuned on test data.
    """
    negs = []
    for s in val:
        _, excl, _ = s.zones()
        negs.append(s.score[~excl])
    allneg = np.concatenate(negs) if negs else np.zeros(1)
    qs = np.unique(np.quantile(allneg, np.linspace(0.5, 1.0, n_candidates)))
    cands = np.concatenate([qs, [allneg.max() * (1 + 1e-6) + 1e-9]])
    best = float(cands[-1])
    for tau in cands[::-1]:  # descending: false alarms only grow as tau falls
        if false_alarm_rate(val, float(tau), refractory_ms) <= budget_per_day:
            best = float(tau)
        else:
            break
    return best


def calibrate_f1(
    val: Sequence[ScoredSeries],
    budget_per_day: float,
    refractory_ms: int = REFRACTORY_MS,
    n_candidates: int = 200,
) -> float:
    """The threshold that maximises event F1 on the VALIDATION series among those within the false-alarm budget.

    Validation event F1 pays for every false alarm on the validation files and months, which is what the test
    metric does too; among equal F1 the smallest validation median delay wins, then the highest threshold.
    Falls back to `calibrate_threshold` when the validation split has no events.
    """
    cap = calibrate_threshold(val, budget_per_day, refractory_ms)
    if not any(s.announce_ms is not None for s in val):
        return cap
    scores = np.concatenate([s.score for s in val])
    hi = scores.max() * (1 + 1e-6) + 1e-9
    above = scores[scores >= cap]
    if len(above) == 0:
        return cap
    cands = np.unique(np.concatenate([[cap], np.quantile(above, np.linspace(0, 1, n_candidates)), [hi]]))
    ms = [event_metrics(val, float(t), refractory_ms=refractory_ms) for t in cands]
    f1s = np.array([m.f1 for m in ms])
    best = np.flatnonzero(f1s >= f1s.max() - 1e-12)
    # among the F1-maximising thresholds: the smallest median delay, then the highest threshold (fewest alerts)
    delays = np.array([ms[i].delay_median_s if ms[i].delay_median_s is not None else np.inf for i in best])
    fastest = best[delays <= delays.min() + 1e-9]
    return float(cands[fastest[-1]])
