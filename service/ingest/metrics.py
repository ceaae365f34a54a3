"""Prometheus metrics of the ingest part (`rmad_ingest_*`), registered on service.metrics.REGISTRY.

Labels are bounded: `venue` is one of a handful of venue names, `type` an event kind, `reason` a fixed vocabulary
chosen by the code (never a raw exception text), `stream` one of trades/books/bars.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from service.metrics import REGISTRY

# Event time -> ingest time: exchanges push within milliseconds; seconds-long lags mean a stalled connection.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

MESSAGES = Counter(
    "rmad_ingest_messages_total",
    "Normalised events published, by venue and type (trade, book, bar, gap).",
    ["venue", "type"],
    registry=REGISTRY,
)
FRAMES = Counter(
    "rmad_ingest_frames_total",
    "Raw frames received from a source, by venue.",
    ["venue"],
    registry=REGISTRY,
)
GAPS = Counter(
    "rmad_ingest_gaps_total",
    "Sequence gaps and reconnect holes marked incomplete, by venue, stream and reason.",
    ["venue", "stream", "reason"],
    registry=REGISTRY,
)
RESYNCS = Counter(
    "rmad_ingest_book_resyncs_total",
    "Local order books discarded and rebuilt from a fresh snapshot, by venue.",
    ["venue"],
    registry=REGISTRY,
)
RECONNECTS = Counter(
    "rmad_ingest_reconnects_total",
    "Websocket reconnects, by venue and reason (error, closed, shutdown, rotate, idle).",
    ["venue", "reason"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "rmad_ingest_dead_letters_total",
    "Frames sent to the dead-letter topic, by venue and reason.",
    ["venue", "reason"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "rmad_ingest_duplicates_total",
    "Events dropped as duplicates or stale (already seen trade ids, old book updates), by venue and stream.",
    ["venue", "stream"],
    registry=REGISTRY,
)
SUBSCRIBE_ERRORS = Counter(
    "rmad_ingest_subscribe_errors_total",
    "Subscriptions the exchange refused, by venue.",
    ["venue"],
    registry=REGISTRY,
)
CONNECTED = Gauge(
    "rmad_ingest_connections",
    "Open websocket connections, by venue.",
    ["venue"],
    registry=REGISTRY,
)
LAG = Histogram(
    "rmad_ingest_lag_seconds",
    "Event time (exchange) to ingest time, seconds.",
    ["venue", "type"],
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)


def sum_counter(counter: Counter, **labels: str) -> float:
    """Sum over every child whose labels match the given subset."""
    total = 0.0
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += float(sample.value)
    return total
