"""Settings owned by the ingest part (fields are read as RMAD_<FIELD>)."""

from __future__ import annotations

from pydantic import BaseModel


class IngestSettings(BaseModel):
    """Knobs of the ingest part; composed into service.settings.Settings."""
