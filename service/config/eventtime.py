"""Settings of event-time sanity (fields are read as RMAD_<FIELD>); see service/schemas/eventtime.py."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EventTimeSettings(BaseModel):
    """How far from now and from a key's previous event a timestamp may be before it is refused or a gap."""

    event_time_max_future_s: float = Field(
        default=300.0, ge=0, le=86_400, description="refuse events stamped more than this after now (clock skew)"
    )
    event_time_max_past_s: float = Field(
        default=86_400.0,
        gt=0,
        le=10 * 365 * 86_400,
        description="refuse live events (stream frames, API bodies) older than this; recorded files are exempt",
    )
    event_time_max_gap_s: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 86_400,
        description="quiet stretch filled with empty bars; a longer jump after a key's last event is one gap mark",
    )
