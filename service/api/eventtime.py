"""Event-time sanity for API bodies: a `time_ms` outside the configured window around now is a 422 naming it.

Why before scoring: the trade is added to a copy of its key's open bar, and a time far ahead used to make the bar
builder emit every empty bar up to it (a year-5000 trade took the process to 24 GB). The bounds are the same
`TimeBounds` the ingest parsers apply (RMAD_EVENT_TIME_*).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi.exceptions import RequestValidationError

from service.schemas.eventtime import TimeBounds

_BOUNDS: dict[int, TimeBounds] = {}  # per settings object (tests run several runtimes in one process)


def bounds_for(settings: Any) -> TimeBounds:
    b = _BOUNDS.get(id(settings))
    if b is None:
        if len(_BOUNDS) > 64:
            _BOUNDS.clear()
        b = _BOUNDS[id(settings)] = TimeBounds.from_settings(settings)
    return b


def check_time_ms(settings: Any, ts_ms: int, loc: tuple[str | int, ...]) -> None:
    """Raise the 422 for `ts_ms` at `loc` when it is outside the window around now."""
    why = bounds_for(settings).refuse(ts_ms, int(time.time() * 1000))
    if why is not None:
        raise RequestValidationError(
            [{"type": "value_error", "loc": (*loc, "time_ms"), "msg": f"time_ms {ts_ms} is {why}", "input": ts_ms}]
        )
