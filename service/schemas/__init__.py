"""Versioned event schemas: the contract between ingest, worker and api (and anyone reading the topics)."""
