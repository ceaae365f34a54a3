"""The frozen time-forward split on the real files: test = the last 12 pumps, nothing of validation or test in
training, kline months split by time. Builds features for every file (cached under runs/cache), hence slow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.market.dataset import anomaly_ends, load_split, normal_ends

CACHE = Path(__file__).resolve().parents[2] / "runs" / "cache"


@pytest.mark.data
@pytest.mark.slow
def test_time_forward_split(shared_data: Path) -> None:
    sp = load_split(shared_data, cache_dir=CACHE)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (21, 6, 12)
    ann = [[s.announce_ms for s in g] for g in (sp.train, sp.val, sp.test)]
    assert max(ann[0]) < min(ann[1]) and max(ann[1]) < min(ann[2])
    assert sum(not s.pump_visible for s in sp.test) == 3  # DLT 01-28, NXS 03-03, NEBL 04-02 (2021)
    # kline months: training before validation, both before the test month
    t_train = max(int(s.decision_ms[s.valid_ends(64)].max()) for s in sp.quiet_train)
    t_val0 = min(int(s.decision_ms[s.valid_ends(64)].min()) for s in sp.quiet_val)
    t_test0 = min(int(s.bar_ms[0]) for s in sp.quiet_test)
    assert t_train < t_val0 < t_test0
    for s in sp.train:
        n, a = normal_ends(s, 64, 1), anomaly_ends(s, 64)
        assert not np.intersect1d(n, a).size
        assert s.announce_ms is not None
        assert (s.decision_ms[a] >= (s.onset_ms or s.announce_ms)).all()
        assert (s.decision_ms[a] <= (s.onset_ms or s.announce_ms) + 60_000).all()
