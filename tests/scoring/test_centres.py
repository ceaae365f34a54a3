"""Online cluster centres: the decayed-count rule, the Lua/Python twins, concurrent workers, version caching."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from service.scoring.centres import CentreStore, batch_update
from service.state.base import StateStore
from service.state.scripts import CENTRES_SCRIPT


async def test_seed_then_decayed_count_update(state: StateStore) -> None:
    seed = np.array([[0.0, 0.0], [10.0, 10.0]], np.float32)
    now = 1_000_000
    half = 60_000.0
    seed_json = json.dumps({"c": seed.tolist(), "n": [4.0, 4.0]})
    v, c, n = await state.run_script(CENTRES_SCRIPT, ["cent"], [now, half, seed_json, "{}"])
    assert v == 1 and json.loads(c) == [[0.0, 0.0], [10.0, 10.0]] and json.loads(n) == [4.0, 4.0]
    # one half-life later, 2 windows with mean (1, 2) join centre 0: a = 0.5, n*a = 2
    upd = json.dumps({"0": [2, [1.0, 2.0]]})
    v, c, n = await state.run_script(CENTRES_SCRIPT, ["cent"], [now + 60_000, half, seed_json, upd])
    centres, counts = json.loads(c), json.loads(n)
    assert v == 2
    np.testing.assert_allclose(centres[0], [(0 * 2 + 1 * 2) / 4, (0 * 2 + 2 * 2) / 4])  # (c n a + x m)/(n a + m)
    np.testing.assert_allclose(counts, [4.0, 2.0])  # n a + m ; the other centre only decays
    np.testing.assert_allclose(centres[1], [10.0, 10.0])
    # an empty update changes nothing (no version bump)
    v, _, _ = await state.run_script(CENTRES_SCRIPT, ["cent"], [now + 120_000, half, seed_json, "{}"])
    assert v == 2


async def test_workers_share_centres_and_refresh_on_version_change(state: StateStore) -> None:
    seed = np.array([[0.0, 0.0], [10.0, 10.0]], np.float32)
    a = CentreStore(state, "market", "v1", seed, half_life_s=1e9, seed_count=10.0)
    b = CentreStore(state, "market", "v1", seed, half_life_s=1e9, seed_count=10.0)
    np.testing.assert_allclose(await a.current(), seed)  # seeded from the manifest on first start
    assert a.version == 1
    await a.update(np.array([[1.0, 1.0]] * 10, np.float32))
    got = await b.current()  # b sees a's update through the version number
    assert b.version == a.version == 2
    np.testing.assert_allclose(got[0], [0.5, 0.5], atol=1e-6)

    # many concurrent batches from two workers: every window is counted exactly once (atomic script)
    async def push(store: CentreStore, n: int) -> None:
        for _ in range(n):
            await store.current()
            await store.update(np.array([[9.0, 9.0], [11.0, 11.0]], np.float32))

    await asyncio.gather(push(a, 20), push(b, 20))
    counts = await a.counts()
    assert abs(counts[1] - (10.0 + 80)) < 1e-3
    assert (await b.current()).shape == (2, 2) and b.version == 2 + 40


def test_batch_update_assigns_to_nearest() -> None:
    centres = np.array([[0.0, 0.0], [5.0, 5.0]], np.float32)
    upd = batch_update(np.array([[0.1, 0.0], [4.9, 5.0], [5.1, 5.0]], np.float32), centres)
    assert upd["0"][0] == 1 and upd["1"][0] == 2
    np.testing.assert_allclose(upd["1"][1], [5.0, 5.0], atol=1e-6)
