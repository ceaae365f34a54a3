"""Follow one chain: sync to the node's head in order, handle reorgs, checkpoint, backfill, update features.

The loop, for any chain behind the `NodeClient` interface:
1. load the checkpoint and the recent window from the state store;
2. connect (which subscribes to new heads), then sync: fetch every block after the checkpoint up to the node's head
   by number (`backfill_batch` at a time, published strictly in order), checking each block's parent against the
   tip. A parent that is not the tip is a reorg: walk back to the fork point (reorg.plan_reorg), publish the
   orphaned blocks' transactions as retractions (newest block first), move the checkpoint back to the fork, then
   publish the replacement chain;
3. wait for the next head announcement (or `poll_s` without one, then ask the node's head: announcements can be
   lost) and sync again. A dropped connection reconnects with jittered backoff and resumes from the tip, so the
   blocks mined meanwhile are backfilled; a malformed response is dead-lettered with its reason and retried.

Address features: once a block is `confirmations` deep its transactions go through one atomic script each
(service.features.chain), and a second checkpoint records that. Reorgs shallower than `confirmations` therefore
never touch the features.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from service.features.chain_store import apply_transactions
from service.ingest.chain import metrics
from service.ingest.chain.checkpoint import CheckpointStore
from service.ingest.chain.node import Block, BlockRef, MalformedResponse, NodeClient, NodeUnavailable
from service.ingest.chain.publisher import ChainPublisher
from service.ingest.chain.reorg import RecentBlocks, plan_reorg
from service.runtime import Health
from service.schemas.chain import Chain
from service.state.base import StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FollowerConfig:
    chain: Chain
    confirmations: int = 12
    reorg_depth: int = 64
    backfill_batch: int = 16
    start_block: int | None = None
    poll_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    features: bool = True
    applied_ttl_s: int = 6 * 3600
    window_ttl_s: int = 2 * 86400


class _Stopping(Exception):
    pass


class _DeadLettered(Exception):
    """A malformed answer that is already in the dead-letter topic: back off and retry."""


class ChainFollower:
    """A runtime Component that follows one chain's node into the bus and the state store."""

    def __init__(self, node: NodeClient, publisher: ChainPublisher, state: StateStore, config: FollowerConfig) -> None:
        if config.reorg_depth <= config.confirmations:
            raise ValueError("reorg_depth must exceed confirmations")
        self.node = node
        self.publisher = publisher
        self.state = state
        self.config = config
        self.chain = config.chain
        self.name = f"chain-{config.chain.value}"
        self.store = CheckpointStore(state, config.chain)
        self.window = RecentBlocks(config.reorg_depth)
        self._base: BlockRef | None = None  # the checkpoint when the window holds no block (no bodies)
        self._features_at: int | None = None
        self._features_task: asyncio.Task[None] | None = None  # at most one, applied in block order
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._synced_since_connect = False
        self._node_head: int | None = None
        self._last_error = ""
        self._rng = random.Random()
        self.loaded = asyncio.Event()
        self.synced = asyncio.Event()  # set whenever a sync reached the announced head
        c = config.chain.value
        self._m_blocks = metrics.BLOCKS.labels(c)
        self._m_backfilled = metrics.BACKFILLED.labels(c)
        self._m_tip = metrics.TIP.labels(c)
        self._m_lag_blocks = metrics.HEAD_LAG_BLOCKS.labels(c)
        self._m_lag_s = metrics.HEAD_LAG_SECONDS.labels(c)
        self._m_features = metrics.FEATURE_TXS.labels(c)

    # ------------------------------------------------------------------------------------------- component API
    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Finish the block being published (so its checkpoint is written), then close the node connection."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 8.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            self._task = None

    def health(self) -> Health:
        tip = self.tip
        where = f"tip {tip.number}" if tip else "no block yet"
        lag = f", {self._node_head - tip.number} behind" if tip and self._node_head is not None else ""
        if self._task is None or self._task.done():
            return Health(False, f"{self.chain.value} follower not running ({self._last_error})")
        if not self._connected:
            return Health(False, f"{self.chain.value} node not connected: {self._last_error or 'connecting'}")
        return Health(True, f"{self.chain.value} {where}{lag}")

    @property
    def tip(self) -> BlockRef | None:
        t = self.window.tip
        return t.ref if t is not None else self._base

    @property
    def features_checkpoint(self) -> int | None:
        return self._features_at

    # ------------------------------------------------------------------------------------------------ the loop
    async def _until_stop(self, aw: Awaitable[T]) -> T:
        task = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise _Stopping

    async def _backoff(self, attempt: int) -> None:
        step = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2.0 ** min(attempt, 20))
        await self._until_stop(asyncio.sleep(step * (0.5 + 0.5 * self._rng.random())))

    async def _run(self) -> None:
        try:
            attempt = 0
            while not self.loaded.is_set():  # the state store may come up after us
                try:
                    await self._load()
                except Exception as exc:
                    self._last_error = f"cannot load the checkpoint: {exc}"
                    log.warning("%s: %s; retrying", self.name, self._last_error)
                    try:
                        await self._backoff(attempt)
                    except _Stopping:
                        return
                    attempt += 1
            attempt = 0
            while not self._stop.is_set():
                try:
                    self._synced_since_connect = False
                    await self._until_stop(self.node.connect())
                    self._connected = True
                    metrics.CONNECTED.labels(self.chain.value).set(1)
                    attempt = await self._follow()
                except _Stopping:
                    break
                except (NodeUnavailable, OSError, TimeoutError) as exc:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("%s: node unavailable (%s); reconnecting", self.name, exc)
                    metrics.RECONNECTS.labels(self.chain.value, "unavailable").inc()
                except Exception as exc:  # a bus or state failure, or a bug: keep following, loudly
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("%s: follower error; retrying", self.name)
                    metrics.RECONNECTS.labels(self.chain.value, "error").inc()
                finally:
                    self._connected = False
                    metrics.CONNECTED.labels(self.chain.value).set(0)
                    with contextlib.suppress(Exception):
                        await self.node.close()
                if self._stop.is_set():
                    break
                if self._synced_since_connect:  # it worked for a while: retry quickly again
                    attempt = 0
                try:
                    await self._backoff(attempt)
                except _Stopping:
                    break
                attempt += 1
        finally:
            try:
                await self._features_done()
            except Exception:
                log.exception("%s: feature update failed; it is retried from the features checkpoint", self.name)
            with contextlib.suppress(Exception):
                await self.publisher.flush()

    async def _follow(self) -> int:
        """Sync, then sync on every head announcement; returns only by raising (or on stop)."""
        target: BlockRef | None = None
        attempt = 0
        while not self._stop.is_set():
            try:
                await self._sync(target)
                attempt = 0
                self._synced_since_connect = True
                self.synced.set()
            except (MalformedResponse, _DeadLettered) as err:
                if isinstance(err, MalformedResponse):
                    await self._dead_letter(err)
                attempt += 1
                await self._backoff(attempt)
                target = None
                continue
            try:
                target = await self._until_stop(self.node.next_head(self.config.poll_s))
            except MalformedResponse as err:
                await self._dead_letter(err)
                target = None
        return 0

    async def _dead_letter(self, err: MalformedResponse) -> None:
        log.warning("%s: malformed response from %s (%s: %s)", self.name, err.source, err.reason, err.detail)
        self._last_error = f"malformed {err.source}: {err.reason}"
        await self.publisher.dead_letter(self.chain.value, err)
        await self.publisher.flush()

    # -------------------------------------------------------------------------------------------------- state
    async def _load(self) -> None:
        ckpt = await self.store.checkpoint()
        if ckpt is not None:
            self.window.load(await self.store.window_blocks(ckpt.number))
            tip = self.window.tip
            if tip is None or tip.ref != ckpt:
                log.warning(
                    "%s: saved window does not end at the checkpoint %s; keeping the checkpoint", self.name, ckpt
                )
                self.window.load([])
                self._base = ckpt
        self._features_at = await self.store.features_checkpoint()
        if ckpt is not None:
            log.info("%s: resuming after block %d (%s)", self.name, ckpt.number, ckpt.hash)
        else:
            start = self.config.start_block
            log.info("%s: no checkpoint; starting at %s", self.name, "the node's head" if start is None else start)
        await self._apply_blocks(self._final_blocks())
        self.loaded.set()

    def _hash_at(self, number: int) -> str | None:
        h = self.window.hash_at(number)
        if h is None and self._base is not None and self._base.number == number:
            return self._base.hash
        return h

    def _update_lag(self) -> None:
        tip = self.window.tip
        if tip is None:
            return
        self._m_tip.set(tip.number)
        if self._node_head is not None:
            self._m_lag_blocks.set(max(0, self._node_head - tip.number))
        self._m_lag_s.set(max(0.0, time.time() - tip.time_ms / 1000.0))

    # --------------------------------------------------------------------------------------------------- sync
    async def _sync(self, target: BlockRef | None) -> None:
        if target is None:
            target = await self._until_stop(self.node.head())
        self._node_head = target.number if self._node_head is None else max(self._node_head, target.number)
        tip = self.tip
        if tip is None:
            next_n = self.config.start_block if self.config.start_block is not None else target.number
        else:
            if target.number <= tip.number:
                if self._hash_at(target.number) == target.hash:
                    self._update_lag()
                    return
                first = self.window.first_number
                if first is None or target.number < first:
                    # a node behind our window (restored from a snapshot, or a lagging replica): nothing to
                    # compare with, and retracting everything we hold on its word would be worse
                    log.warning("%s: node head %d is below the kept window; waiting", self.name, target.number)
                    return
                block = await self._until_stop(self.node.block_by_hash(target.hash))
                if self._hash_at(block.number) != block.hash:
                    await self._reorg(block)
                tip = self.tip
                assert tip is not None
            next_n = tip.number + 1
        batch = self.config.backfill_batch
        while next_n <= target.number and not self._stop.is_set():
            hi = min(next_n + batch - 1, target.number)
            results = await self._until_stop(
                asyncio.gather(*(self.node.block_by_number(n) for n in range(next_n, hi + 1)), return_exceptions=True)
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            for err in failures:  # every bad answer of the batch is kept, not only the first
                if isinstance(err, MalformedResponse):
                    await self._dead_letter(err)
            for item in results:
                if isinstance(item, BaseException):  # publish what came before it, then retry from there
                    raise item if not isinstance(item, MalformedResponse) else _DeadLettered() from item
                block = item
                if self._stop.is_set():
                    return
                tip = self.tip
                if tip is not None and (block.number != tip.number + 1 or block.parent_hash != tip.hash):
                    if block.number == tip.number + 1:
                        await self._reorg(block)
                    break  # refetch from the new tip
                await self._publish(block, backfill=block.number < target.number)
            tip = self.tip
            assert tip is not None
            next_n = tip.number + 1
        self._update_lag()

    async def _publish(self, block: Block, *, backfill: bool) -> None:
        bodies = await self.publisher.publish_block(block)
        await self.publisher.flush()
        evicted = self.window.push(block)
        self._base = None
        await self.store.save_block(block, bodies)
        await self.store.set_checkpoint(block.ref)
        await self.store.drop_blocks([b.number for b in evicted])
        self._m_blocks.inc()
        if backfill:
            self._m_backfilled.inc()
        self._update_lag()
        # features of newly final blocks go to Redis while the next block is fetched and published
        await self._features_done()
        final = self._final_blocks()
        if final:
            self._features_task = asyncio.create_task(self._apply_blocks(final))

    async def _fetch_by_hash(self, block_hash: str) -> Block:
        return await self._until_stop(self.node.block_by_hash(block_hash))

    async def _reorg(self, block: Block) -> None:
        await self._features_done()
        plan = await plan_reorg(self.window, block, self._fetch_by_hash)
        c = self.chain.value
        if plan.deep or (self._base is not None and not self.window.blocks()):
            metrics.DEEP_REORGS.labels(c).inc()
            log.error(
                "%s: reorg at block %d reaches past the %d kept blocks: blocks below %d cannot be retracted",
                self.name,
                block.number,
                self.config.reorg_depth,
                plan.fork_number + 1,
            )
        log.warning(
            "%s: reorg: fork at %d, %d orphaned, %d new",
            self.name,
            plan.fork_number,
            len(plan.orphaned),
            len(plan.new_chain),
        )
        for orphan in plan.orphaned:
            await self.publisher.retract_block(orphan)
        await self.publisher.flush()
        self.window.pop_above(plan.fork_number)
        fork_ref = BlockRef(plan.fork_number, plan.new_chain[0].parent_hash)
        self._base = fork_ref if self.window.tip is None else None
        await self.store.set_checkpoint(fork_ref)
        await self.store.drop_blocks([b.number for b in plan.orphaned])
        metrics.REORGS.labels(c).inc()
        metrics.REORG_DEPTH.labels(c).observe(len(plan.orphaned))
        if self._features_at is not None and self._features_at > plan.fork_number:
            metrics.DEEP_REORGS.labels(c).inc()
            log.error(
                "%s: reorg below the confirmation depth: features already include orphaned blocks %d..%d",
                self.name,
                plan.fork_number + 1,
                self._features_at,
            )
            self._features_at = plan.fork_number
            await self.store.set_features_checkpoint(plan.fork_number)
        for b in plan.new_chain:
            await self._publish(b, backfill=True)

    def _final_blocks(self) -> list[tuple[int, Block | None]]:
        """The blocks now `confirmations` deep whose transactions are not applied to the features yet."""
        tip = self.window.tip
        if not self.config.features or tip is None:
            return []
        first = self.window.first_number
        assert first is not None
        start = first if self._features_at is None else self._features_at + 1
        return [(n, self.window.get(n)) for n in range(start, tip.number - self.config.confirmations + 1)]

    async def _apply_blocks(self, blocks: list[tuple[int, Block | None]]) -> None:
        """Apply each block's transactions (one atomic script each, pipelined), then move the features checkpoint."""
        for n, b in blocks:
            if b is not None:
                applied = await apply_transactions(
                    self.state,
                    b.txs,
                    applied_ttl_s=self.config.applied_ttl_s,
                    window_ttl_s=self.config.window_ttl_s,
                )
                self._m_features.inc(applied)
            else:
                log.warning("%s: block %d left the window before its features were applied", self.name, n)
            self._features_at = n
            await self.store.set_features_checkpoint(n)

    async def _features_done(self) -> None:
        """Wait for the in-flight feature update (its failure surfaces here, and the block is retried later)."""
        task, self._features_task = self._features_task, None
        if task is not None:
            await task
