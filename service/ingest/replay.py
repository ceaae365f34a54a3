"""Replay source: recorded market files into the live topics, at 1x, 100x or as fast as possible.

Why: the worker, the API and the alert policy cannot tell a replayed pump from a live one, so a recorded event
(a real pump from ../shared/data, a simulated market written by `rmad simulate`) exercises the whole service
end to end, on any machine, without the exchanges. Events go through the same MarketPublisher as the live
connectors (same topics, keys, record format, metrics); rows that cannot be read go to the dead-letter topic.

Pacing: the n-th event is published when `(event_time - first_event_time) / speed` of wall time has passed since
the replay began (speed None = no waiting; the loop still yields to the event loop so the API stays responsive);
no single wait exceeds `max_wait_s` (RMAD_REPLAY_MAX_WAIT_S), so a hole of days between two files is skipped.
A directory is replayed as one stream, its files merged by event time.
Event times stay as recorded unless `rebase_time` shifts them so the replay starts now (looping implies it, so
time keeps moving forward; above 1x, rebased event times run ahead of the wall clock). Ingest time is always the
real publish time.

Depth diffs (`BookUpdate` from recorded frames) are counted and skipped: without the REST snapshot taken at
recording time they cannot rebuild a correct book, and a wrong book is worse than none.

Labels: when the replayed file has a `labels.json` beside it (what `rmad simulate` writes), each label is
published to `RMAD_TOPIC_SIM_LABELS` once the replay passes its start, so a test or dashboard sees the truth.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from service.ingest.publisher import MarketPublisher
from service.ingest.readers import FORMATS, ReaderError, read_events
from service.ingest.simulator import LabelPublisher, SimLabel, read_labels
from service.runtime import Health
from service.schemas.market import AnyMarketEvent, Bar, BookUpdate, Gap, PublishedMarketEvent

if TYPE_CHECKING:
    from service.bus.base import Bus, Producer
    from service.settings import Settings

log = logging.getLogger(__name__)

_FAST_WORDS = {"max", "inf", "fast", "asap", "0", "0x"}


def parse_speed(text: str) -> float | None:
    """`1`, `1x`, `100x`, `0.5` -> that factor; `max`/`inf`/`0` -> None (as fast as possible)."""
    t = text.strip().lower()
    if t in _FAST_WORDS:
        return None
    value = float(t.removesuffix("x"))
    if value < 0 or value != value:
        raise ValueError(f"replay speed must be >= 0, got {text!r}")
    return None if value == 0 or value == float("inf") else value


def _is_speed(text: str) -> bool:
    try:
        parse_speed(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ReplaySpec:
    path: Path
    format: str | None = None
    speed: float | None = 1.0  # None: as fast as possible


def parse_replay_spec(spec: str, *, default_format: str | None = None, default_speed: float | None = 1.0) -> ReplaySpec:
    """`replay:PATH[:FORMAT[:SPEED]]` (the leading `replay:` optional). Colons inside PATH are kept: FORMAT and
    SPEED are only taken from the end when they are a known format / a valid speed."""
    rest = spec.removeprefix("replay:") if spec.startswith("replay:") else spec
    fmt, speed = default_format, default_speed
    head, sep, last = rest.rpartition(":")
    if sep and last and _is_speed(last) and head:
        h2, sep2, mid = head.rpartition(":")
        if sep2 and mid in FORMATS:
            return ReplaySpec(Path(h2), mid, parse_speed(last))
        if head and not last.startswith("/"):
            return ReplaySpec(Path(head), fmt, parse_speed(last))
    if sep and last in FORMATS and head:
        return ReplaySpec(Path(head), last, speed)
    if not rest:
        raise ValueError("replay needs a path: replay:PATH[:FORMAT[:SPEED]] or RMAD_REPLAY_PATH")
    return ReplaySpec(Path(rest), fmt, speed)


def replay_files(path: Path) -> list[Path]:
    """A file, or a directory's files (merged by event time when replayed). A directory holding the simulator's
    `events.jsonl.gz` replays that file alone (its trade CSVs would repeat the same trades)."""
    if path.is_dir():
        sim = path / "events.jsonl.gz"
        if sim.is_file():
            return [sim]
        skip = {"labels.json", "labels.csv", "manifest.json", "MANIFEST.tsv", "SOURCE.md"}
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.name not in skip and not p.name.startswith((".", "README", "metadata"))
        )
        if not files:
            raise ReaderError(f"replay path {path} holds no files")
        return files
    if not path.exists():
        raise ReaderError(f"replay path {path} does not exist")
    return [path]


def _shift(ev: AnyMarketEvent, shift_ms: int, ingest_ms: int) -> AnyMarketEvent:
    if shift_ms == 0:
        return msgspec.structs.replace(ev, ingest_time_ms=ingest_ms)
    if isinstance(ev, Bar):
        return msgspec.structs.replace(
            ev,
            event_time_ms=ev.event_time_ms + shift_ms,
            open_time_ms=ev.open_time_ms + shift_ms,
            close_time_ms=ev.close_time_ms + shift_ms,
            ingest_time_ms=ingest_ms,
        )
    if isinstance(ev, Gap):
        return msgspec.structs.replace(
            ev,
            event_time_ms=ev.event_time_ms + shift_ms,
            from_ms=ev.from_ms + shift_ms,
            to_ms=ev.to_ms + shift_ms,
            ingest_time_ms=ingest_ms,
        )
    return msgspec.structs.replace(ev, event_time_ms=ev.event_time_ms + shift_ms, ingest_time_ms=ingest_ms)


@dataclass(slots=True)
class ReplayStats:
    published: int = 0
    skipped_book_updates: int = 0
    bad_rows: int = 0
    labels: int = 0
    files_done: int = 0
    loops: int = 0
    finished: bool = False
    error: str = ""


class Replayer:
    """Publishes recorded events through a MarketPublisher with pacing; usable without the runtime (tests, tools)."""

    def __init__(
        self,
        publisher: MarketPublisher,
        paths: Sequence[Path],
        *,
        format: str | None = None,
        speed: float | None = 1.0,
        symbol: str | None = None,
        loop: bool = False,
        rebase_time: bool = False,
        labels: LabelPublisher | None = None,
        flush_every: int = 5000,
        max_wait_s: float = 300.0,
    ) -> None:
        self.publisher = publisher
        self.paths = list(paths)
        self.format = format
        self.speed = speed
        self.symbol = symbol
        self.loop = loop
        self.rebase_time = rebase_time or loop
        self.labels = labels
        self.flush_every = flush_every
        self.max_wait_s = max_wait_s
        self.stats = ReplayStats()
        self._bad: list[tuple[str, str, str]] = []

    def _on_bad(self, raw: str, reason: str, detail: str) -> None:
        self._bad.append((raw, reason, detail))

    async def _drain_bad(self) -> None:
        while self._bad:
            raw, reason, detail = self._bad.pop(0)
            self.stats.bad_rows += 1
            await self.publisher.dead_letter("replay", "replay", raw, reason, detail)

    def _labels_for(self, paths: Sequence[Path]) -> list[SimLabel]:
        """Labels from a `labels.json` beside any replayed file (each directory read once)."""
        if self.labels is None:
            return []
        out: list[SimLabel] = []
        for side in dict.fromkeys(p.parent / "labels.json" for p in paths):
            if not side.is_file():
                continue
            try:
                out.extend(read_labels(side))
            except (ValueError, OSError) as exc:
                log.warning("replay: cannot read %s (%s); replaying without its labels", side, exc)
        return sorted(out, key=lambda lab: lab.start_ms)

    def _stream(self) -> Iterator[AnyMarketEvent]:
        """One file's events, or several files merged by event time (one event per file held at a time).

        Why merge: files of one period (BTCUSDT, BTCUSDC and BTCUSD bars around a de-peg) only mean something
        to a cross-pair detector when they arrive interleaved as they happened.
        """
        streams = [read_events(p, self.format, self.symbol, on_bad=self._on_bad) for p in self.paths]
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, key=lambda e: e.event_time_ms)

    async def run(self) -> ReplayStats:
        """Replay the files once (or forever with `loop`); returns the counts."""
        next_start_ms: int | None = None  # with rebase: where the next pass's event time begins
        while True:
            next_start_ms = await self._replay_pass(next_start_ms)
            self.stats.files_done += len(self.paths)
            if not self.loop:
                break
            self.stats.loops += 1
        await self._drain_bad()
        await self.publisher.flush()
        self.stats.finished = True
        return self.stats

    async def _replay_pass(self, start_ms: int | None) -> int | None:
        events = self._stream()
        labels = self._labels_for(self.paths)
        speed = self.speed
        wall0 = time.monotonic()
        first_ms: int | None = None
        shift = 0
        last_ms: int | None = None
        n = 0
        pub = self.publisher
        for ev in events:
            if self._bad:
                await self._drain_bad()
            if isinstance(ev, BookUpdate):
                self.stats.skipped_book_updates += 1
                continue
            t = ev.event_time_ms
            if first_ms is None:
                first_ms = t
                if self.rebase_time:
                    shift = (start_ms if start_ms is not None else int(time.time() * 1000)) - t
            if speed is not None:
                due = wall0 + (t - first_ms) / 1000.0 / speed
                delay = due - time.monotonic()
                if delay > self.max_wait_s:  # a long hole (between files, a weekend): skip ahead
                    wall0 -= delay - self.max_wait_s
                    delay = self.max_wait_s
                if delay > 0.002:
                    await pub.flush()  # what is due now goes out before we wait
                    await asyncio.sleep(delay)
            while labels and labels[0].start_ms <= t:
                await self._publish_label(labels.pop(0), shift)
            out = _shift(ev, shift, int(time.time() * 1000))
            await pub.publish(_typed(out))
            last_ms = out.event_time_ms
            n += 1
            self.stats.published += 1
            if n % self.flush_every == 0:
                await pub.flush()
            elif speed is None and n % 500 == 0:
                await asyncio.sleep(0)  # as fast as possible, yet the API and other sources keep running
        for lab in labels:
            await self._publish_label(lab, shift)
        await self._drain_bad()
        await pub.flush()
        log.info("replay: %d events published from %d file(s)", n, len(self.paths))
        return None if last_ms is None else last_ms + 1

    async def _publish_label(self, lab: SimLabel, shift: int) -> None:
        assert self.labels is not None
        if shift:
            lab = lab.model_copy(
                update={
                    "start_ms": lab.start_ms + shift,
                    "onset_ms": lab.onset_ms + shift,
                    "end_ms": lab.end_ms + shift,
                }
            )
        await self.labels.publish(lab)
        self.stats.labels += 1


def _typed(ev: AnyMarketEvent) -> PublishedMarketEvent:
    assert not isinstance(ev, BookUpdate)
    return ev


class ReplaySource:
    """Runtime component: replays the configured files into the market topics in the background."""

    name = "ingest.replay"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        spec: ReplaySpec,
        *,
        symbol: str | None = None,
        loop: bool | None = None,
        rebase_time: bool | None = None,
    ) -> None:
        self._bus = bus
        self._settings = settings
        self.spec = spec
        self._symbol = symbol
        self._loop = settings.replay_loop if loop is None else loop
        self._rebase = settings.replay_rebase_time if rebase_time is None else rebase_time
        self._producer: Producer | None = None
        self._task: asyncio.Task[ReplayStats] | None = None
        self.replayer: Replayer | None = None

    async def start(self) -> None:
        paths = replay_files(self.spec.path)  # a missing path fails `rmad run` at once, with the path named
        self._producer = self._bus.producer()
        await self._producer.start()
        publisher = MarketPublisher(self._producer, self._settings)
        labels = LabelPublisher(self._producer, self._settings.topic_sim_labels)
        await labels.ensure_topic(self._bus, self._settings)
        self.replayer = Replayer(
            publisher,
            paths,
            format=self.spec.format,
            speed=self.spec.speed,
            symbol=self._symbol,
            loop=self._loop,
            rebase_time=self._rebase,
            labels=labels,
            max_wait_s=self._settings.replay_max_wait_s,
        )
        self._task = asyncio.create_task(self._run(), name="replay")

    async def _run(self) -> ReplayStats:
        assert self.replayer is not None
        try:
            return await self.replayer.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("replay failed")
            self.replayer.stats.error = f"{type(exc).__name__}: {exc}"
            return self.replayer.stats

    async def wait(self) -> ReplayStats:
        """Until the replay is done (tests); never returns for a looping replay."""
        assert self._task is not None
        return await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._producer is not None:
            try:
                if self.replayer is not None:
                    await self.replayer.publisher.flush()  # its open trade packs
            finally:
                await self._producer.stop()  # flushes what is queued

    def health(self) -> Health:
        if self.replayer is None:
            return Health(False, "not started")
        s = self.replayer.stats
        speed = "max" if self.spec.speed is None else f"{self.spec.speed:g}x"
        detail = f"{self.spec.path} @ {speed}: {s.published} published, {s.bad_rows} bad rows"
        if s.error:
            return Health(False, f"{detail}; failed: {s.error}")
        return Health(True, detail + ("; finished" if s.finished else ""))
