"""Settings owned by the api part (fields are read as RMAD_<FIELD>)."""

from __future__ import annotations

from pydantic import BaseModel


class ApiSettings(BaseModel):
    """Knobs of the api part; composed into service.settings.Settings."""
