"""The HTTP API: health, readiness, metrics, and (with later parts) scoring, alerts, streams and the dashboard."""
