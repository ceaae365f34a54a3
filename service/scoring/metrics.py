"""Worker metrics (`rmad_worker_*`, `rmad_model_*`) on the shared registry in service.metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from service.metrics import LATENCY_BUCKETS, REGISTRY

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

WINDOWS_SCORED = Counter("rmad_worker_windows_scored_total", "Windows scored, by model.", ["model"], registry=REGISTRY)
BATCH_SIZE = Histogram(
    "rmad_worker_batch_size", "Windows per inference call.", ["model"], buckets=BATCH_BUCKETS, registry=REGISTRY
)
INFERENCE_SECONDS = Histogram(
    "rmad_worker_inference_seconds",
    "Wall time of one batched ONNX inference call.",
    ["model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
SCORE_BUCKETS = (-10.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)
FUSED_SCORE = Histogram(
    "rmad_worker_fused_score",
    "Distribution of fused scores (S_final) of scored windows, by model; compare with the model's threshold.",
    ["model"],
    buckets=SCORE_BUCKETS,
    registry=REGISTRY,
)
END_TO_END_SECONDS = Histogram(
    "rmad_worker_end_to_end_seconds",
    "From the ingest time of the tick that closed a window to its score being produced.",
    ["model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ALERTS = Counter(
    "rmad_worker_alerts_total",
    "Alerts produced, by anomaly type and severity.",
    ["type", "severity"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "rmad_worker_consumer_lag_seconds",
    "Wall clock minus the ingest time of the newest record processed, per input topic.",
    ["topic"],
    registry=REGISTRY,
)
CENTRE_UPDATES = Counter(
    "rmad_worker_centre_updates_total",
    "Windows folded into the online cluster centres.",
    ["model"],
    registry=REGISTRY,
)
RECORDS = Counter(
    "rmad_worker_records_total",
    "Input records consumed, by topic and outcome.",
    ["topic", "outcome"],
    registry=REGISTRY,
)
KEYS = Gauge("rmad_worker_keys", "Keys with window state held in memory.", registry=REGISTRY)
QUEUE = Gauge("rmad_worker_queue_windows", "Windows waiting for inference.", registry=REGISTRY)
PAUSED = Counter(
    "rmad_worker_pauses_total",
    "Times the worker paused its partitions because the queue was full.",
    registry=REGISTRY,
)
MODEL_RELOADS = Counter(
    "rmad_model_reloads_total",
    "Artifact load attempts, by model and outcome (loaded/failed).",
    ["model", "outcome"],
    registry=REGISTRY,
)
MODEL_INFO = Info("rmad_model", "Serving model version and provider.", ["model"], registry=REGISTRY)
