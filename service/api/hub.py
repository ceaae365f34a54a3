"""The alert hub: one reader of the alert log per API process, fanning new alerts out to stream subscribers.

Why the log and not the topic: every API process must see every alert (a consumer group would split them), and a
subscriber resuming from its last id reads the same log. Gap-free resume: a subscriber registers at the hub's
current position P in one step (no await between), then reads the backlog (last seen, P] from the log while the hub
queues everything after P for it; the backlog is sent first, then the queue, so nothing is missed or sent twice.
Why bounded queues with put_nowait: the hub never waits for a subscriber; one that lets its queue fill is cut with a
reason, and the others never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from service.api.alertlog import AlertFilter, AlertLog, LogEntry, seq_key
from service.api.retry import RetryState
from service.runtime import Health, cancel_and_wait

log = logging.getLogger(__name__)


SHUTDOWN_REASON = "server shutting down"


class SubscriberCut(Exception):
    """The server disconnected this subscriber; `reason` says why (sent to it before closing)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    """One subscriber's filter, bounded queue, catch-up state and cut flag.

    Live, the hub queues matching alerts for it. When a burst fills the queue the subscriber falls back to
    reading the log itself from `handled_seq` (the last alert the hub handled for it), and rejoins the live queue
    the moment it has caught up with the hub's position (checked and switched in one step, so nothing is missed
    or repeated). Only a subscriber that stays more than `max_lag_s` behind, or whose socket stops taking
    messages, is cut: a burst never disconnects a reader that keeps up, and a slow one never holds the hub.
    """

    def __init__(self, hub: AlertHub, flt: AlertFilter, maxsize: int, start_seq: str | None) -> None:
        self.hub = hub
        self.filter = flt
        self.maxsize = maxsize
        self.queue: asyncio.Queue[LogEntry] = asyncio.Queue(maxsize)
        self.start_seq = start_seq
        self.last_seq: str | None = start_seq
        self.handled_seq: str | None = start_seq
        self.lagging = False
        self.cut_reason: str | None = None
        self.cut_event = asyncio.Event()

    def offer(self, entry: LogEntry) -> None:
        if self.cut_reason is not None or self.lagging:
            return
        if self.handled_seq is not None and seq_key(entry.seq) <= seq_key(self.handled_seq):
            return  # already sent from the log while catching up
        if not self.filter.matches(entry.alert):
            self.handled_seq = entry.seq
            return
        try:
            self.queue.put_nowait(entry)
            self.handled_seq = entry.seq
        except asyncio.QueueFull:
            self.lagging = True  # the pump reads from the log after handled_seq once the queue is sent

    async def catch_up(self, log_: AlertLog, page: int, max_lag_s: float) -> list[LogEntry]:
        """The next page of matching alerts from the log while lagging; rejoins the live queue when caught up."""
        pos = self.hub.position
        if pos is not None and self.handled_seq is not None:
            behind_s = (seq_key(pos)[0] - seq_key(self.handled_seq)[0]) / 1000
            if behind_s > max_lag_s:
                self.cut(f"slow consumer: {behind_s:.0f} s behind the live alerts; {self.resume_hint()}")
                raise SubscriberCut(self.cut_reason or "cut")
        if pos is None:
            self.lagging = False
            return []
        # only up to what the hub has handled: what comes after it, the hub offers once this subscriber is live
        entries = await log_.after(self.handled_seq, page, until=pos)
        if entries:
            self.handled_seq = entries[-1].seq
        pos = self.hub.position  # no await from here to the switch: the hub cannot move in between
        if pos is None or (self.handled_seq is not None and seq_key(self.handled_seq) >= seq_key(pos)):
            self.lagging = False
        return [e for e in entries if self.filter.matches(e.alert)]

    def resume_hint(self) -> str:
        return f"reconnect with last_id={self.last_seq}" if self.last_seq else "reconnect to resume"

    def cut(self, reason: str) -> None:
        if self.cut_reason is None:
            self.cut_reason = reason
            self.cut_event.set()
            self.hub.unsubscribe(self)

    async def next(self, timeout_s: float) -> LogEntry | None:
        """The next queued alert, None after `timeout_s` (time for a heartbeat); raises SubscriberCut."""
        if self.cut_reason is not None:
            raise SubscriberCut(self.cut_reason)
        if not self.queue.empty():
            return self.queue.get_nowait()
        get = asyncio.ensure_future(self.queue.get())
        cut = asyncio.ensure_future(self.cut_event.wait())
        try:
            done, _ = await asyncio.wait({get, cut}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (get, cut):
                if not t.done():
                    t.cancel()
        if get in done:
            return get.result()
        if self.cut_reason is not None:
            raise SubscriberCut(self.cut_reason)
        return None

    async def guarded(self, send: asyncio.Future[None] | asyncio.Task[None], timeout_s: float) -> None:
        """Wait for one send; a cut or a send slower than `timeout_s` cuts the subscriber (raises SubscriberCut)."""
        cut: asyncio.Future[Any] = asyncio.ensure_future(self.cut_event.wait())
        waiting: set[asyncio.Future[Any]] = {send, cut}
        try:
            done, _ = await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not cut.done():
                cut.cancel()
        if send in done:
            send.result()
            return
        send.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await send
        if self.cut_reason is None:
            self.cut(f"slow consumer: one send took longer than {timeout_s:g} s; {self.resume_hint()}")
        raise SubscriberCut(self.cut_reason or "cut")

    def close(self) -> None:
        self.hub.unsubscribe(self)


class AlertHub:
    """A component: polls the log after its last position and offers each new alert to every subscriber."""

    name = "api-alert-hub"

    def __init__(self, log_: AlertLog, poll_s: float, queue_size: int, page: int = 128) -> None:
        """`page`: alerts read per poll; at most half a subscriber queue, so one poll never overflows a reader."""
        self.log = log_
        self.poll_s = poll_s
        self.queue_size = queue_size
        self.page = page
        self.position: str | None = None
        self.subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._error: str | None = None
        self._last_poll = 0.0
        self._wake = asyncio.Event()
        self._retry = RetryState("alert hub reading the alert log", log, base_s=poll_s, max_s=5.0)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        try:
            self.position = await self.log.last_seq()
        except Exception as exc:  # the state store may come up later; the loop retries
            self._error = str(exc)
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        for sub in list(self.subscribers):
            sub.cut(f"{SHUTDOWN_REASON}; {sub.resume_hint()}")

    def begin_stop(self) -> None:
        """SIGTERM (Runtime.begin_shutdown): end every open stream now, each told how to resume elsewhere, so the
        HTTP server's drain does not wait on long-lived streams."""
        for sub in list(self.subscribers):
            sub.cut(f"{SHUTDOWN_REASON}; {sub.resume_hint()}")

    def health(self) -> Health:
        if not self.running:
            return Health(False, "not running")
        if self._error:
            return Health(False, f"cannot read the alert log: {self._error}")
        return Health(True, f"{len(self.subscribers)} subscribers, position {self.position}")

    def wake(self) -> None:
        """Poll now (the local follower just appended)."""
        self._wake.set()

    def subscribe(self, flt: AlertFilter) -> Subscription:
        """Register at the current position; everything logged after it will be queued for the subscriber."""
        sub = Subscription(self, flt, self.queue_size, self.position)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    async def poll_once(self) -> int:
        if self.position is None and self._error is not None:
            self.position = await self.log.last_seq()
        entries = await self.log.after(self.position, self.page)
        for entry in entries:
            self.position = entry.seq
            for sub in list(self.subscribers):
                sub.offer(entry)
        self._error = None
        self._last_poll = time.monotonic()
        return len(entries)

    async def _run(self) -> None:
        while True:
            try:
                n = await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error = str(exc)
                await asyncio.sleep(self._retry.failed(exc))
                continue
            self._retry.ok()
            if n < self.page:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
            else:
                # a burst (the log grew faster than one page): let the senders drain their queues before the next
                # page, so a subscriber that keeps up is never cut by the size of a burst
                await asyncio.sleep(0.001)


async def backlog(log_: AlertLog, sub: Subscription, resume_seq: str, page: int) -> list[LogEntry]:
    """Alerts after `resume_seq` up to the subscriber's start position, filtered (one page at a time)."""
    out: list[LogEntry] = []
    if sub.start_seq is None:
        return out
    cursor = resume_seq
    while True:
        entries = await log_.after(cursor, page, until=sub.start_seq)
        out.extend(e for e in entries if sub.filter.matches(e.alert))
        if len(entries) < page:
            return out
        cursor = entries[-1].seq
