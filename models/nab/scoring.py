"""NAB scoring, implemented from its documented rules (Lavin & Ahmad 2015, arXiv:1510.03336; NAB's data.md).

The rules, as this module applies them:
- Each labelled anomaly has a window (labels/combined_windows.json). Rows in the first `probationary_length` rows
  of a series (15 % of the rows, at most 15 % of 5,000) are the detector's learning period and are never scored.
- A detection is a row whose anomaly score is >= the threshold. Inside a window, a detection earns
  tp_weight * sigma(y) / sigma(-1), with y = -(right - i + 1) / width the relative position (-1 at the left edge)
  and sigma(y) = 2 / (1 + exp(5 y)) - 1 the scaled sigmoid; only the best (earliest) detection of a window counts.
  A window with no detection costs -fn_weight.
- Outside windows, every detection costs fp_weight * sigma(y): before the first window y = 3 (full penalty, -1);
  after a window y = |right - i| / (width - 1), so false alarms just after a window cost less. sigma(y) = -1 for
  y >= 3.
- A corpus's raw score is the sum over its series. The reported score is normalised:
  100 * (raw - null) / (perfect - null), where null (no detections) = -fn_weight * windows and perfect (every window
  caught at its left edge) = tp_weight * windows.
- The three profiles (standard, reward_low_FP_rate, reward_low_FN_rate) are the cost matrices of
  config/profiles.json. NAB's published scoreboard optimises one threshold per detector and profile over the whole
  corpus; `optimise_threshold` does that exactly (every distinct score is a candidate).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROFILE_NAMES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
OUTSIDE = -1  # row outside every window
PROBATION = -2  # row inside the probationary period (never scored)


@dataclass(frozen=True)
class CostMatrix:
    """One NAB application profile's weights."""

    tp_weight: float
    fp_weight: float
    fn_weight: float


DEFAULT_PROFILES: dict[str, CostMatrix] = {
    "standard": CostMatrix(1.0, 0.11, 1.0),
    "reward_low_FP_rate": CostMatrix(1.0, 0.22, 1.0),
    "reward_low_FN_rate": CostMatrix(1.0, 0.11, 2.0),
}


def load_profiles(path: Path) -> dict[str, CostMatrix]:
    """Read NAB's config/profiles.json."""
    raw = json.loads(path.read_text())
    return {
        name: CostMatrix(
            tp_weight=float(p["CostMatrix"]["tpWeight"]),
            fp_weight=float(p["CostMatrix"]["fpWeight"]),
            fn_weight=float(p["CostMatrix"]["fnWeight"]),
        )
        for name, p in raw.items()
    }


def probationary_length(n_rows: int, percent: float = 0.15) -> int:
    """Rows [0, result) are probationary: min(floor(p * n), p * 5000), rounded up to a whole row index."""
    return math.ceil(min(math.floor(percent * n_rows), percent * 5000))


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's reward curve: 2 / (1 + exp(5 y)) - 1, and exactly -1 for y >= 3."""
    pos = np.asarray(position, dtype=np.float64)
    with np.errstate(over="ignore"):
        val = 2.0 / (1.0 + np.exp(5.0 * pos)) - 1.0
    return np.where(pos >= 3.0, -1.0, val)


MAX_TP = float(scaled_sigmoid(np.array([-1.0]))[0])  # 0.98661..., the reward at a window's left edge


@dataclass(frozen=True)
class SweepPoints:
    """What a detection at each row of one series would earn or cost, and which window the row belongs to."""

    sweep: np.ndarray  # float64 [n]: weighted reward (in window) or penalty (outside)
    window: np.ndarray  # int64 [n]: window ordinal, OUTSIDE, or PROBATION
    n_windows: int  # windows with at least one scored row (these count towards null and perfect)


def sweep_points(
    n_rows: int, windows: Sequence[tuple[int, int]], cost: CostMatrix, probation_percent: float = 0.15
) -> SweepPoints:
    """Per-row reward/penalty for one series (windows as sorted, non-overlapping inclusive index ranges)."""
    idx = np.arange(n_rows, dtype=np.float64)
    sweep = np.full(n_rows, -1.0 * cost.fp_weight)  # before the first window: y = 3, sigma = -1
    window = np.full(n_rows, OUTSIDE, dtype=np.int64)
    ordered = sorted(windows)
    for k, (left, right) in enumerate(ordered):
        width = right - left + 1
        rows = slice(left, right + 1)
        pos = -(right - idx[rows] + 1.0) / width
        sweep[rows] = scaled_sigmoid(pos) * cost.tp_weight / MAX_TP
        window[rows] = k
        nxt = ordered[k + 1][0] if k + 1 < len(ordered) else n_rows
        after = slice(right + 1, nxt)
        if width > 1:
            pos_after = np.abs(right - idx[after]) / float(width - 1)
        else:  # a one-row window has no scale for "how far past it": treat every later row as far past
            pos_after = np.full(nxt - right - 1, 3.0)
        sweep[after] = scaled_sigmoid(pos_after) * cost.fp_weight
    window[: probationary_length(n_rows, probation_percent)] = PROBATION
    scored_windows = np.unique(window[window >= 0])
    return SweepPoints(sweep=sweep, window=window, n_windows=len(scored_windows))


@dataclass(frozen=True)
class SeriesScore:
    raw: float
    tp: int  # windows detected
    fn: int  # windows missed
    fp: int  # detections outside windows (scored rows)


def score_series(points: SweepPoints, scores: np.ndarray, threshold: float, cost: CostMatrix) -> SeriesScore:
    """Raw NAB score of one series at one threshold (a detection is score >= threshold)."""
    scores = np.asarray(scores, dtype=np.float64)
    det = (points.window != PROBATION) & (scores >= threshold)
    fp_mask = det & (points.window == OUTSIDE)
    raw = float(points.sweep[fp_mask].sum())
    tp = 0
    for k in np.unique(points.window[points.window >= 0]):
        hit = det & (points.window == k)
        if hit.any():
            raw += float(points.sweep[hit].max())
            tp += 1
        else:
            raw -= cost.fn_weight
    return SeriesScore(raw=raw, tp=tp, fn=points.n_windows - tp, fp=int(fp_mask.sum()))


def raw_score_curve(points: SweepPoints, scores: np.ndarray, thresholds: np.ndarray, cost: CostMatrix) -> np.ndarray:
    """Raw score of one series at every threshold in `thresholds` (vectorised score_series)."""
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    scored = points.window != PROBATION
    # False positives: sum of penalties of outside rows with score >= t.
    out = scored & (points.window == OUTSIDE)
    s_out = scores[out]
    order = np.argsort(-s_out, kind="stable")
    desc = s_out[order]
    csum = np.concatenate([[0.0], np.cumsum(points.sweep[out][order])])
    # number of outside scores >= t == position of t in the descending list (searchsorted on the negation).
    count = np.searchsorted(-desc, -thresholds, side="right")
    total = csum[count]
    for k in np.unique(points.window[points.window >= 0]):
        in_k = scored & (points.window == k)
        s_k = scores[in_k]
        order_k = np.argsort(-s_k, kind="stable")
        best = np.maximum.accumulate(points.sweep[in_k][order_k])  # best reward among the top-j scores
        n_det = np.searchsorted(-s_k[order_k], -thresholds, side="right")
        total += np.where(n_det > 0, best[np.maximum(n_det - 1, 0)], -cost.fn_weight)
    return total


def normalise(raw: float, n_windows: int, cost: CostMatrix) -> float:
    """100 * (raw - null) / (perfect - null): null = no detections, perfect = every window caught at its start."""
    if n_windows == 0:  # a file set without windows (e.g. artificialNoAnomaly) has no normalised score
        return float("nan")
    null = -cost.fn_weight * n_windows
    perfect = cost.tp_weight * n_windows
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True)
class CorpusResult:
    profile: str
    threshold: float
    raw: float
    score: float  # normalised
    tp: int
    fn: int
    fp: int
    n_windows: int


def score_corpus(
    series: Sequence[tuple[int, Sequence[tuple[int, int]], np.ndarray]],
    cost: CostMatrix,
    threshold: float,
    profile: str = "",
    probation_percent: float = 0.15,
) -> CorpusResult:
    """Score a corpus at a fixed threshold; `series` holds (n_rows, windows, scores) per file."""
    raw, tp, fn, fp, n_win = 0.0, 0, 0, 0, 0
    for n_rows, windows, scores in series:
        pts = sweep_points(n_rows, windows, cost, probation_percent)
        s = score_series(pts, scores, threshold, cost)
        raw, tp, fn, fp, n_win = raw + s.raw, tp + s.tp, fn + s.fn, fp + s.fp, n_win + pts.n_windows
    return CorpusResult(profile, threshold, raw, normalise(raw, n_win, cost), tp, fn, fp, n_win)


def optimise_threshold(
    series: Sequence[tuple[int, Sequence[tuple[int, int]], np.ndarray]],
    cost: CostMatrix,
    profile: str = "",
    probation_percent: float = 0.15,
) -> CorpusResult:
    """NAB's protocol: the single corpus-wide threshold that maximises the summed raw score (exact search)."""
    all_scores = [np.asarray(s, dtype=np.float64)[probationary_length(n, probation_percent) :] for n, _, s in series]
    candidates = np.unique(np.concatenate([*all_scores, [np.inf]]))
    total = np.zeros_like(candidates)
    for n_rows, windows, scores in series:
        pts = sweep_points(n_rows, windows, cost, probation_percent)
        total += raw_score_curve(pts, scores, candidates, cost)
    best = float(candidates[int(np.argmax(total))])
    return score_corpus(series, cost, best, profile, probation_percent)
