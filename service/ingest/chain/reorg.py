"""Reorg handling: the last N blocks, and the walk back from a block whose parent is not ours to the fork point.

Why keep whole blocks (not just hashes): the orphaned blocks' transactions must be published again as
retractions, and a node is not obliged to serve side-chain blocks after it switched chains. The window lives in
memory and in the state store (see checkpoint.py), so a restart can still retract what it published before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.ingest.chain.node import Block


class RecentBlocks:
    """The last `depth` published blocks, contiguous by number, each the parent of the next."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._blocks: dict[int, Block] = {}
        self._first: int | None = None
        self._last: int | None = None

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def tip(self) -> Block | None:
        return None if self._last is None else self._blocks[self._last]

    @property
    def first_number(self) -> int | None:
        return self._first

    def get(self, number: int) -> Block | None:
        return self._blocks.get(number)

    def hash_at(self, number: int) -> str | None:
        b = self._blocks.get(number)
        return None if b is None else b.hash

    def blocks(self) -> list[Block]:
        return [self._blocks[n] for n in sorted(self._blocks)]

    def follows_tip(self, block: Block) -> bool:
        tip = self.tip
        return tip is None or (block.number == tip.number + 1 and block.parent_hash == tip.hash)

    def push(self, block: Block) -> list[Block]:
        """Append the next block; returns the blocks that fell out of the window (oldest first)."""
        if not self.follows_tip(block):
            raise ValueError(f"block {block.number} {block.hash} does not extend the tip")
        self._blocks[block.number] = block
        if self._first is None:
            self._first = block.number
        self._last = block.number
        evicted = []
        while len(self._blocks) > self.depth:
            assert self._first is not None
            evicted.append(self._blocks.pop(self._first))
            self._first += 1
        return evicted

    def pop_above(self, number: int) -> list[Block]:
        """Remove and return the blocks above `number`, newest first (the order retractions go out)."""
        out = []
        while self._last is not None and self._last > number:
            out.append(self._blocks.pop(self._last))
            self._last -= 1
        if not self._blocks:
            self._first = self._last = None
        return out

    def load(self, blocks: list[Block]) -> None:
        """Restore from the state store: keep the longest contiguous, parent-linked run ending at the newest."""
        self._blocks.clear()
        self._first = self._last = None
        run: list[Block] = []
        for b in sorted(blocks, key=lambda x: x.number, reverse=True):
            if run and not (b.number == run[-1].number - 1 and run[-1].parent_hash == b.hash):
                break
            run.append(b)
        for b in reversed(run[: self.depth]):
            self.push(b)


@dataclass(frozen=True, slots=True)
class ReorgPlan:
    fork_number: int
    orphaned: list[Block]  # newest first
    new_chain: list[Block]  # oldest first, ends with the block that revealed the reorg
    deep: bool  # the fork point lies outside the window: blocks below it cannot be retracted


async def plan_reorg(window: RecentBlocks, block: Block, fetch_by_hash: Callable[[str], Awaitable[Block]]) -> ReorgPlan:
    """Walk back from `block` (whose parent is not our block at that height) to the first common ancestor.

    Fetches the new chain's blocks by parent hash until one's parent is in the window. When the walk leaves the
    window, the fork point is unknown: everything in the window above the walk's end is orphaned and the plan is
    marked deep.
    """
    new_chain = [block]
    cand = block
    deep = False
    while True:
        parent_number = cand.number - 1
        ours = window.hash_at(parent_number)
        if ours is None:
            deep = window.tip is not None and parent_number >= 0
            fork = parent_number
            break
        if cand.parent_hash == ours:
            fork = parent_number
            break
        if len(new_chain) > window.depth:
            deep = True
            fork = parent_number
            break
        cand = await fetch_by_hash(cand.parent_hash)
        new_chain.insert(0, cand)
    # blocks of the new chain at or below the fork are not part of the replacement
    new_chain = [b for b in new_chain if b.number > fork]
    orphaned = [b for b in reversed(window.blocks()) if b.number > fork]
    return ReorgPlan(fork, orphaned, new_chain, deep)
