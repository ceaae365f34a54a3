"""Prometheus metrics shared by every part: `rmad_` prefix, base units, `_total` counters, bounded labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

# Latency buckets from 100 µs to 10 s: tick-to-score lives in the millisecond range.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

BUILD_INFO = Info("rmad_build", "Version of the running service.", registry=REGISTRY)
READY = Gauge("rmad_ready", "1 when the part named by `component` is ready.", ["component"], registry=REGISTRY)
HTTP_REQUESTS = Counter(
    "rmad_http_requests_total",
    "HTTP requests by route template, method and status class.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "rmad_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
