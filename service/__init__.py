"""rmad-crypto runtime: ingest, streaming scoring, alerts and the API. Never imports torch."""

__version__ = "0.1.0"
