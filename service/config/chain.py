"""Settings owned by the chain part (fields are read as RMAD_<FIELD>)."""

from __future__ import annotations

from pydantic import BaseModel


class ChainSettings(BaseModel):
    """Knobs of the chain part; composed into service.settings.Settings."""
