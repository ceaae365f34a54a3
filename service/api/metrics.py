"""Metrics of the api part (registered in the shared rmad_ registry; labels are bounded vocabularies)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from service.metrics import LATENCY_BUCKETS, REGISTRY

ALERTS_LOGGED = Counter(
    "rmad_api_alerts_logged_total",
    "Alerts appended to the persistent alert log (duplicates by id are not counted).",
    registry=REGISTRY,
)
ALERTS_DUPLICATE = Counter(
    "rmad_api_alert_duplicates_total",
    "Alerts seen again (at-least-once redelivery) and not appended twice.",
    registry=REGISTRY,
)
FEEDBACK = Counter(
    "rmad_alert_feedback_total",
    "Analyst feedback on alerts, by verdict and anomaly type.",
    ["verdict", "anomaly_type"],
    registry=REGISTRY,
)
SUBSCRIBERS = Gauge(
    "rmad_api_stream_subscribers", "Connected alert-stream subscribers by transport.", ["transport"], registry=REGISTRY
)
STREAM_SENT = Counter(
    "rmad_api_stream_alerts_sent_total", "Alerts sent to stream subscribers.", ["transport"], registry=REGISTRY
)
STREAM_CUT = Counter(
    "rmad_api_stream_disconnects_total",
    "Subscribers disconnected by the server, by reason.",
    ["transport", "reason"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "rmad_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, retry, failed).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_LATENCY = Histogram(
    "rmad_webhook_delivery_seconds",
    "Time of one webhook delivery attempt.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
RATE_LIMITED = Counter("rmad_api_rate_limited_total", "Requests answered 429.", registry=REGISTRY)
FOLLOWER_RECORDS = Counter(
    "rmad_api_follower_records_total",
    "Records the api's topic followers consumed, by topic kind and outcome.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
FOLLOWER_LAG = Gauge(
    "rmad_api_follower_lag_seconds",
    "Age of the newest record each api follower handled (now - record timestamp).",
    ["kind"],
    registry=REGISTRY,
)
SCORE_REQUESTS = Counter(
    "rmad_api_scored_total",
    "Items scored through the REST API by kind and verdict.",
    ["kind", "verdict"],
    registry=REGISTRY,
)
