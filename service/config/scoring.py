"""Settings owned by the scoring part (fields are read as RMAD_<FIELD>)."""

from __future__ import annotations

from pydantic import BaseModel


class ScoringSettings(BaseModel):
    """Knobs of the scoring part; composed into service.settings.Settings."""
