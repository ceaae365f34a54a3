"""Market ingest: exchange connectors (Binance, Bybit), local order books, and the publisher every source uses.

Parsers (`service.ingest.binance.parse_binance`, `service.ingest.bybit.parse_bybit`) are pure functions from a
frame to events, so replaying recorded frames uses exactly the code the live connectors use.
"""

from service.ingest.errors import ParseError, SubscriptionRefused
from service.ingest.publisher import MarketPublisher

__all__ = ["MarketPublisher", "ParseError", "SubscriptionRefused"]
