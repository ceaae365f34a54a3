"""Micro-batching across keys: a bounded FIFO that releases a batch when it is full or its oldest item waited
`max_wait`.

Why both bounds: one inference call per window wastes the model's fixed per-call cost (most of it at small
sizes); waiting for a full batch at a quiet hour would add seconds of latency. Releasing at `max_size` or after
`max_wait` (default 2 ms) keeps the added latency bounded while busy periods get large, efficient batches. The
queue is bounded too: `full()` tells the consumer to pause its partitions instead of growing without limit.
FIFO order matters: windows of one partition are scored and produced in offset order, which the offset
bookkeeping relies on.

Two ways to use it: the worker's score loop takes batches with `get()`; a request handler (the REST API) goes
through `BatchRunner`, which submits one item, awaits its own result, and runs each batch with a function of
its owner's (inference inline or in a thread).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T]):
    def __init__(self, max_size: int = 256, max_wait_s: float = 0.002, bound: int = 4096) -> None:
        if max_size < 1 or bound < 1:
            raise ValueError("max_size and bound must be >= 1")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.bound = max(bound, max_size)
        self._q: deque[tuple[float, T]] = deque()
        self._event = asyncio.Event()
        self._taken = asyncio.Event()
        self._closed = False
        self.deadline_waits = 0  # times `get` waited for the oldest item's deadline (a batch not yet full)

    def __len__(self) -> int:
        return len(self._q)

    def full(self) -> bool:
        return len(self._q) >= self.bound

    def low(self) -> bool:
        """Below half the bound: resume paused partitions (a gap between pause and resume avoids flapping)."""
        return len(self._q) <= self.bound // 2

    def put(self, item: T, now: float | None = None) -> None:
        self._q.append((time.monotonic() if now is None else now, item))
        self._event.set()

    def due_in(self, now: float | None = None) -> float | None:
        """Seconds until a batch is due (0: now); None when empty."""
        if not self._q:
            return None
        if len(self._q) >= self.max_size:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, self._q[0][0] + self.max_wait_s - now)

    def take(self) -> list[T]:
        n = min(self.max_size, len(self._q))
        out = [self._q.popleft()[1] for _ in range(n)]
        if not self._q:
            self._event.clear()
        self._taken.set()
        return out

    async def wait_at_most(self, n: int, timeout_s: float | None = None) -> bool:
        """Wait until at most `n` windows are queued (backpressure release, drain); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while len(self._q) > n:
            self._taken.clear()
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            try:
                await asyncio.wait_for(self._taken.wait(), left)
            except TimeoutError:
                return False
        return True

    def close(self) -> None:
        """Wake a waiting `get` so it returns what is left (shutdown drains the queue)."""
        self._closed = True
        self._event.set()

    async def get(self) -> list[T]:
        """Wait for the next batch (full, or oldest item `max_wait` old); [] once closed and empty."""
        while True:
            if not self._q:
                if self._closed:
                    return []
                self._event.clear()
                await self._event.wait()
                continue
            due = self.due_in()
            if due is None:
                continue
            if due <= 0 or self._closed:
                return self.take()
            # wait for the deadline or for the queue to reach max_size, whichever is first
            self.deadline_waits += 1
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), due)
            except TimeoutError:
                pass


class BatchRunner(Generic[T, R]):
    """Callers submit one item each and await its own result; items that arrive within `max_wait_s` of each other
    run as one batch (`run` gets the items in submit order and returns one result per item, in order).

    Why the batches come from a `MicroBatcher`: items that queued while the previous batch ran have waited already,
    so a busy caller never idles between batches, and a lone item waits at most `max_wait_s` for company. A
    failing batch fails each of its callers with the same exception."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], max_size: int, max_wait_s: float) -> None:
        self.run = run
        self.queue: MicroBatcher[tuple[T, asyncio.Future[R]]] = MicroBatcher(max_size, max_wait_s, max_size)
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches run (bench.api reports items per batch)
        self.windows = 0  # items run

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.queue.put((item, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while len(self.queue):
            batch = await self.queue.get()
            self.batches += 1
            self.windows += len(batch)
            try:
                results = await self.run([item for item, _ in batch])
                for (_, fut), r in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(r)
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
