"""Errors of the ingest part. Parsers raise ParseError with a short reason code; the caller dead-letters the frame."""

from __future__ import annotations


class ParseError(ValueError):
    """A frame that cannot be turned into events. `reason` is a short code from a fixed vocabulary.

    Why codes: the reason is a Prometheus label (`rmad_ingest_dead_letters_total{reason=...}`), so it must stay
    bounded; the free-text `detail` goes only into the dead-letter record.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SubscriptionRefused(RuntimeError):
    """The exchange refused a subscription (bad symbol, too many args): surfaced, never ignored."""
