"""Bar closes of cross-venue / cross-quote groups, shared by all workers of a group through the state store.

Why: the members of a comparison group (BTCUSDT on two venues; BTC against USDT and USDC) are different keys, so
they hash to different partitions, and with several workers they are usually scored by different processes. A
worker comparing only the closes it holds itself would never see a de-peg whose two legs it does not both own.
So every scored window's close is written, per group and bar end, to a small hash in the state store, and the same
atomic script returns what the group's other members wrote at that bar end: whichever member's close arrives last
(on whichever worker) sees the others and makes the comparison. One round trip per scoring batch; hashes expire
after `ttl_ms`.

What it does not share: the usual basis of a pair (`CrossVenueMonitor`'s EWMA) stays per worker, updated by the
worker that makes each comparison. When the two legs live on different workers, each worker's estimate is built
from the bars it compared (a subsample of the pair's bars), so warm-up takes longer there, and a restarted worker
rebuilds it from new bars only, not from the re-read history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.scoring.crossvenue import groups_of
from service.state.base import StateStore
from service.state.scripts.close_sharing import SHARE_SCRIPT


@dataclass(frozen=True, slots=True)
class PeerClose:
    """A close another member of `group` wrote at `bar_end_ms`."""

    group: str
    key: str
    rank: int
    bar_end_ms: int
    close: float


class CloseExchange:
    def __init__(self, state: StateStore, namespace: str, ttl_ms: int) -> None:
        self.state = state
        self.namespace = namespace
        self.ttl_ms = ttl_ms

    def _hash(self, group: str, bar_end_ms: int) -> str:
        return f"xv:{self.namespace}:{group}:{bar_end_ms}"

    async def share(self, closes: Sequence[tuple[str, int, float]]) -> list[PeerClose]:
        """Write (key, bar end, close) for every group of each key; return the other members' closes at those bar
        ends (each at most once)."""
        keys: list[str] = []
        args: list[str | int] = []
        where: list[tuple[str, int]] = []
        for key, end, close in closes:
            for group, rank in groups_of(key):
                keys.append(self._hash(group, end))
                args += [key, f"{rank}|{close!r}"]
                where.append((group, end))
        if not keys:
            return []
        raw = await self.state.run_script(SHARE_SCRIPT, keys, [*args, self.ttl_ms])
        own = {key for key, _, _ in closes}
        seen: set[tuple[str, str, int]] = set()
        out: list[PeerClose] = []
        for (group, end), flat in zip(where, raw, strict=True):
            for i in range(0, len(flat), 2):
                member = flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])
                if member in own or (group, member, end) in seen:
                    continue
                seen.add((group, member, end))
                value = flat[i + 1].decode() if isinstance(flat[i + 1], bytes) else str(flat[i + 1])
                rank_s, _, px = value.partition("|")
                try:
                    out.append(PeerClose(group, member, int(rank_s), end, float(px)))
                except ValueError:
                    continue  # not written by this code: ignore rather than fail the batch
        return out
