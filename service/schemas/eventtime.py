"""Event-time sanity: how far from now, and from a key's previous event, a source's timestamp may be.

Why one rule in one place: event time enters from exchange frames, recorded files and API bodies, and one absurd
value (a year-5000 trade, a time in seconds read as milliseconds) used to make the bar builder emit every empty
bar up to it. Each entry point refuses what falls outside these bounds with a reason (dead letter for streams,
422 for the API, a bad row for files); the bar builder turns a jump longer than `max_gap_ms` into one gap mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _span(ms: int) -> str:
    """A duration for a message: `3 d`, `5 min`, `12 s`, `250 ms`."""
    a = abs(ms)
    for unit, size in (("y", 365 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if a >= size:
            return f"{a / size:.3g} {unit}"
    return f"{a} ms"


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """The accepted event-time window.

    `max_future_ms`: how far an event may be stamped after now (clock skew between a venue and this host).
    `max_past_ms`: how far before now a live event (a stream frame, an API body) may be; recorded files are
    history and skip this bound. `max_gap_ms`: the longest quiet stretch the bar builder fills with empty bars;
    a longer jump after a key's previous event becomes one gap mark (the next bar flagged incomplete).
    """

    max_future_ms: int = 300_000
    max_past_ms: int = 86_400_000
    max_gap_ms: int = 3_600_000

    def refuse(self, ts_ms: int, now_ms: int, *, live: bool = True) -> str | None:
        """Why `ts_ms` is refused as an event time at wall time `now_ms`, or None when it is accepted."""
        if ts_ms > now_ms + self.max_future_ms:
            return f"{_span(ts_ms - now_ms)} after now (at most {_span(self.max_future_ms)} ahead is accepted)"
        if live and ts_ms < now_ms - self.max_past_ms:
            hint = "; is it in seconds, not milliseconds?" if 0 <= ts_ms * 1000 <= now_ms + self.max_future_ms else ""
            return f"{_span(now_ms - ts_ms)} before now (at most {_span(self.max_past_ms)} back is accepted){hint}"
        return None

    @classmethod
    def from_settings(cls, settings: Any) -> TimeBounds:
        """From the `event_time_*` settings (defaults where a settings object lacks them)."""
        d = cls()
        return cls(
            max_future_ms=round(float(getattr(settings, "event_time_max_future_s", d.max_future_ms / 1000)) * 1000),
            max_past_ms=round(float(getattr(settings, "event_time_max_past_s", d.max_past_ms / 1000)) * 1000),
            max_gap_ms=round(float(getattr(settings, "event_time_max_gap_s", d.max_gap_ms / 1000)) * 1000),
        )


DEFAULT_BOUNDS = TimeBounds()
