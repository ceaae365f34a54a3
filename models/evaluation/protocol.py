"""The pump-event protocol that judges the market detector (issue 12), applied to alerts, not to raw scores.

- Alerts: scores turn into alerts exactly as `service.scoring.alerts.AlertPolicy` does (a fresh crossing of the
  threshold fires unless within `cooldown_ms` of the key's previous alert; the key re-arms once the score fell
  below threshold * hysteresis). Alert-type escalation is not modelled (every alert has the same type here).
- Event: the onset (La Morgia's refined second where one exists, else the announced minute). Detected when an
  alert falls in [onset - 120 s, onset + 600 s]; delay = first such alert - onset (signed: a pre-pump alert is
  negative).
- False alarms: alerts outside [onset - 1 h, onset + 1 h], merged into episodes when closer than 10 minutes,
  counted per day of the file's scored span (one file = one symbol, so these are per symbol-day).
- Event precision = detected / (detected + false-alarm episodes); recall = detected / events; F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DAY_MS = 86_400_000
DETECT_PRE_MS = 120_000
DETECT_POST_MS = 600_000
QUIET_GUARD_MS = 3_600_000
EPISODE_GAP_MS = 600_000
HYSTERESIS = 0.8
COOLDOWN_MS = 300_000


@dataclass
class Scored:
    """One detector's scores on one pump file (every scored bar, decision time = bar end)."""

    name: str
    t_ms: np.ndarray
    score: np.ndarray
    onset_ms: int
    pump_visible: bool = True

    @property
    def days(self) -> float:
        return float(self.t_ms[-1] - self.t_ms[0]) / DAY_MS if len(self.t_ms) > 1 else 0.0


def alert_times(
    t_ms: np.ndarray, score: np.ndarray, tau: float, hysteresis: float = HYSTERESIS, cooldown_ms: int = COOLDOWN_MS
) -> np.ndarray:
    """Times of the alerts AlertPolicy would raise on this score stream (vectorised over the crossings)."""
    above = np.flatnonzero(score >= tau)
    if len(above) == 0:
        return np.zeros(0, np.int64)
    low = score < (tau * hysteresis if tau > 0 else tau)
    cl = np.cumsum(low)
    # a point above the threshold is a crossing when the key re-armed (a low point) since the previous one
    rearmed = np.empty(len(above), bool)
    rearmed[0] = True
    rearmed[1:] = cl[above[1:]] - cl[above[:-1]] > 0
    cross = t_ms[above[rearmed]]
    out = []
    last = None
    for t in cross.tolist():
        if last is None or t - last >= cooldown_ms:
            out.append(t)
            last = t
    return np.asarray(out, np.int64)


def episodes(times: np.ndarray, gap_ms: int = EPISODE_GAP_MS) -> int:
    if len(times) == 0:
        return 0
    return int(1 + np.count_nonzero(np.diff(np.sort(times)) >= gap_ms))


@dataclass
class FileOutcome:
    name: str
    visible: bool
    detected: bool
    delay_s: float | None
    fa_episodes: int
    days: float


def file_outcome(s: Scored, tau: float) -> FileOutcome:
    a = alert_times(s.t_ms, s.score, tau)
    o = s.onset_ms
    hit = a[(a >= o - DETECT_PRE_MS) & (a <= o + DETECT_POST_MS)]
    quiet = a[(a < o - QUIET_GUARD_MS) | (a > o + QUIET_GUARD_MS)]
    delay = float(hit[0] - o) / 1000.0 if len(hit) else None
    return FileOutcome(s.name, s.pump_visible, bool(len(hit)), delay, episodes(quiet), s.days)


@dataclass
class ProtocolMetrics:
    precision: float
    recall: float
    f1: float
    delay_median_s: float | None
    delay_p90_s: float | None
    fa_per_day: float
    events: int
    detected: int
    fa_episodes: int
    days: float
    outcomes: list[FileOutcome]

    def row(self) -> dict[str, float | int | None]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "delay_median_s": self.delay_median_s,
            "delay_p90_s": self.delay_p90_s,
            "fa_per_day": self.fa_per_day,
            "events": self.events,
            "detected": self.detected,
            "fa_episodes": self.fa_episodes,
            "days": self.days,
        }


def metrics(files: Sequence[Scored], tau: float, visible_only: bool = False) -> ProtocolMetrics:
    """The protocol over a set of files at threshold tau. visible_only drops the events of files where no pump
    is visible (their false alarms still count)."""
    outs = [file_outcome(s, tau) for s in files]
    ev = [o for o in outs if o.visible or not visible_only]
    det = sum(o.detected for o in ev)
    fa = sum(o.fa_episodes for o in outs)
    days = sum(o.days for o in outs)
    prec = det / (det + fa) if det + fa else 0.0
    rec = det / len(ev) if ev else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    delays = [o.delay_s for o in ev if o.delay_s is not None]
    return ProtocolMetrics(
        precision=prec,
        recall=rec,
        f1=f1,
        delay_median_s=float(np.median(delays)) if delays else None,
        delay_p90_s=float(np.percentile(delays, 90)) if delays else None,
        fa_per_day=fa / days if days > 0 else float("nan"),
        events=len(ev),
        detected=det,
        fa_episodes=fa,
        days=days,
        outcomes=outs,
    )


def calibrate(val: Sequence[Scored], budget_per_day: float = 0.5, n_candidates: int = 120) -> float:
    """Threshold chosen on VALIDATION files only: the best event F1 among thresholds whose false-alarm episodes
    per day stay within the budget; ties go to the smaller median delay, then to the higher threshold."""
    scores = np.concatenate([s.score for s in val])
    hi = float(scores.max()) * (1 + 1e-6) + 1e-9
    q = np.quantile(scores, 1.0 - np.geomspace(1e-6, 2e-2, n_candidates))
    cands = np.unique(np.concatenate([q, [hi]]))
    best: tuple[float, float, float] | None = None
    best_tau = hi
    for tau in cands.tolist():
        m = metrics(val, tau)
        if m.fa_per_day > budget_per_day:
            continue
        d = m.delay_median_s if m.delay_median_s is not None else 1e9
        key = (m.f1, -d, tau)
        if best is None or key > best:
            best, best_tau = key, tau
    return float(best_tau)
