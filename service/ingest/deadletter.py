"""The dead-letter topic: every malformed or unexpected frame is kept with its raw bytes and the reason.

Nothing is silently dropped: a frame a parser refuses goes to `deadletters` (keyed `venue:source`) so it can be
inspected and replayed, and `rmad_ingest_dead_letters_total{venue,reason}` counts it.
"""

from __future__ import annotations

import time
from collections import Counter as TallyCounter

from service.bus.base import Producer
from service.ingest.metrics import DEAD_LETTERS
from service.schemas.market import DeadLetter, encode

# Dead letters of one frame are capped so a flood of garbage cannot grow the topic faster than the feed itself.
MAX_RAW_BYTES = 256 * 1024


class DeadLetterWriter:
    """Writes DeadLetter records and counts them per (venue, reason)."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self.counts: TallyCounter[tuple[str, str]] = TallyCounter()

    async def write(
        self, venue: str, source: str, raw: bytes | str, reason: str, detail: str = "", time_ms: int | None = None
    ) -> DeadLetter:
        if len(raw) > MAX_RAW_BYTES:
            raw = raw[:MAX_RAW_BYTES]
            detail = (detail + " (raw frame truncated)").strip()
        letter = DeadLetter.wrap(
            source=source,
            venue=venue,
            reason=reason,
            detail=detail[:1000],
            raw=raw,
            time_ms=time_ms if time_ms is not None else int(time.time() * 1000),
        )
        await self._producer.send(self.topic, encode(letter), key=letter.key.encode())
        self.counts[(venue, reason)] += 1
        DEAD_LETTERS.labels(venue, reason).inc()
        return letter
