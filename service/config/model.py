"""Settings owned by the model part (fields are read as RMAD_<FIELD>)."""

from __future__ import annotations

from pydantic import BaseModel


class ModelSettings(BaseModel):
    """Knobs of the model part; composed into service.settings.Settings."""
