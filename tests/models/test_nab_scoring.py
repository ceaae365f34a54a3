"""NAB scoring against a small case computed by hand, and the corpus-level rules (null = 0, perfect = 100)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.nab.scoring import (
    DEFAULT_PROFILES,
    MAX_TP,
    PROBATION,
    load_profiles,
    normalise,
    optimise_threshold,
    probationary_length,
    raw_score_curve,
    score_corpus,
    score_series,
    sweep_points,
)

STD = DEFAULT_PROFILES["standard"]
LOW_FN = DEFAULT_PROFILES["reward_low_FN_rate"]


def _hand_case() -> tuple[int, list[tuple[int, int]], np.ndarray]:
    """20 rows, probation = floor(0.15 * 20) = 3 rows, one window over rows 10..13 (width 4).

    Detections (score 1.0) at rows 1 (probationary: ignored), 5 (before any window), 11 (in the window) and
    16 (three rows past the window's right edge).
    """
    scores = np.zeros(20)
    scores[[1, 5, 11, 16]] = 1.0
    return 20, [(10, 13)], scores


def test_probationary_length_follows_nab() -> None:
    assert probationary_length(20) == 3
    assert probationary_length(4032) == 604  # floor(604.8)
    assert probationary_length(22695) == 750  # capped at 15 % of 5,000


def test_hand_computed_standard_profile() -> None:
    n, windows, scores = _hand_case()
    # By hand (sigma(y) = 2 / (1 + e^(5y)) - 1):
    #   row 11: y = -(13 - 11 + 1) / 4 = -0.75 -> 2 / (1 + e^-3.75) - 1 = 0.954045; / sigma(-1) = 0.986614 -> 0.966989
    #   row 16: y = |13 - 16| / (4 - 1) = 1.0 -> 2 / (1 + e^5) - 1 = -0.986614; * fp 0.11 -> -0.108528
    #   row 5:  before every window -> -1 * 0.11 = -0.11
    #   raw = 0.966989 - 0.108528 - 0.11 = 0.748461; null = -1, perfect = 1 -> 100 * 1.748461 / 2 = 87.423
    pts = sweep_points(n, windows, STD)
    assert (pts.window[:3] == PROBATION).all() and pts.n_windows == 1
    s = score_series(pts, scores, 0.5, STD)
    assert s.tp == 1 and s.fn == 0 and s.fp == 2
    assert s.raw == pytest.approx(0.748461, abs=1e-6)
    assert normalise(s.raw, 1, STD) == pytest.approx(87.4231, abs=1e-3)
    # Low-FN profile: same raw (tp and fp weights unchanged), null = -2 -> 100 * 2.748461 / 3 = 91.615
    s_fn = score_series(sweep_points(n, windows, LOW_FN), scores, 0.5, LOW_FN)
    assert normalise(s_fn.raw, 1, LOW_FN) == pytest.approx(91.6154, abs=1e-3)


def test_only_earliest_detection_in_window_counts_and_left_edge_is_perfect() -> None:
    n, windows = 20, [(10, 13)]
    scores = np.zeros(n)
    scores[[10, 12, 13]] = 1.0  # left edge plus two later rows in the same window
    s = score_series(sweep_points(n, windows, STD), scores, 0.5, STD)
    assert s.raw == pytest.approx(1.0) and s.tp == 1 and s.fp == 0
    assert MAX_TP == pytest.approx(2 / (1 + math.exp(-5)) - 1)


def test_null_and_perfect_normalise_to_0_and_100() -> None:
    n, windows, _ = _hand_case()
    silent = np.zeros(n)
    perfect = np.zeros(n)
    perfect[10] = 1.0
    corpus_null = [(n, windows, silent), (n, [(4, 6), (15, 17)], silent)]
    corpus_perfect = [(n, windows, perfect), (n, [(4, 6), (15, 17)], np.isin(np.arange(n), [4, 15]).astype(float))]
    for cost in DEFAULT_PROFILES.values():
        assert score_corpus(corpus_null, cost, 0.5).score == pytest.approx(0.0)
        assert score_corpus(corpus_perfect, cost, 0.5).score == pytest.approx(100.0)


def test_curve_matches_pointwise_scoring_and_optimiser_picks_the_best() -> None:
    rng = np.random.default_rng(0)
    corpus = []
    for _ in range(4):
        n = int(rng.integers(60, 200))
        left = int(rng.integers(n // 3, n - 20))
        corpus.append((n, [(left, left + 9)], rng.random(n)))
    thresholds = np.array([0.0, 0.3, 0.7, 0.95, 0.999, np.inf])
    for n, windows, scores in corpus:
        pts = sweep_points(n, windows, STD)
        curve = raw_score_curve(pts, scores, thresholds, STD)
        expected = [score_series(pts, scores, float(t), STD).raw for t in thresholds]
        np.testing.assert_allclose(curve, expected, atol=1e-9)
    best = optimise_threshold(corpus, STD)
    for t in np.linspace(0, 1, 41):
        assert best.raw >= score_corpus(corpus, STD, float(t)).raw - 1e-9


@pytest.mark.data
def test_profiles_file_matches_defaults(shared_data: Path) -> None:
    assert load_profiles(shared_data / "nab" / "config" / "profiles.json") == DEFAULT_PROFILES


@pytest.mark.data
def test_corpus_null_matches_nabs_published_null(shared_data: Path) -> None:
    """NAB's config/thresholds.json lists the null detector's raw scores: -116 standard, -232 low-FN."""
    from models.nab.data import load_corpus

    corpus = [(len(s), s.windows, np.zeros(len(s))) for s in load_corpus(shared_data / "nab")]
    assert len(corpus) == 58
    std = score_corpus(corpus, STD, 0.5)
    assert std.n_windows == 116 and std.raw == pytest.approx(-116.0) and std.score == pytest.approx(0.0)
    assert score_corpus(corpus, LOW_FN, 0.5).raw == pytest.approx(-232.0)


def test_detector_postprocessing_is_causal_and_reports_a_peak_once() -> None:
    from models.nab.detector import DetectorConfig, raw_features, suppress_repeats, surprise

    cfg = DetectorConfig()
    rng = np.random.default_rng(1)
    raw = rng.normal(size=300)
    later_changed = raw.copy()
    later_changed[250:] += 50.0
    np.testing.assert_array_equal(surprise(raw, 100, cfg)[:150], surprise(later_changed, 100, cfg)[:150])
    assert surprise(later_changed, 100, cfg)[150] > 10  # the jump is a strong surprise when it arrives
    z = np.array([0.0, 0.0, 5.0, 4.0, 6.0, 1.0, 0.0, 0.0, 3.0])
    np.testing.assert_array_equal(suppress_repeats(z, 0, 3), [0, 0, 5, 0, 6, 0, 0, 0, 3])
    feats = raw_features(np.array([1.0, 2.0, 4.0, 8.0]), trailing=2)
    np.testing.assert_allclose(feats[:, 1], [0, 1, 2, 4])  # first difference
    np.testing.assert_allclose(feats[:, 2], [0, 1, 2.5, 5])  # value minus the mean of the previous 2 rows
