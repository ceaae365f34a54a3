"""Demo truth: the simulator's ground-truth labels beside the service's alerts (GET /v1/simulator/scoreboard).

Why in the API: the simulator publishes a label for each anomaly it injects (topic sim.labels); the API keeps them
in the state store, so every API process and the dashboard can show the injected spans and a scoreboard of what
was caught, how late, what was missed and what fired where nothing was injected.

Matching: an alert detects a label when it is on the label's key and its window ends between the label's start
and `GRACE_MS` after its end. The delay is measured from the label's onset (the moment a detector should be judged
from). A label with no alert yet is "pending", not missed, until the key's scores (the frontier of what the worker
has judged, in event time) are past its grace period: the simulator's backfill runs in the past at high speed. An
alert on the simulated market (from an hour before the first label on) that matches no label is a false alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from service.api.alertlog import LogEntry
from service.api.followers import TopicFollower
from service.bus import Bus
from service.bus.base import Record
from service.settings import Settings
from service.state import StateStore

LABELS_STREAM = "sim:labels"
MAX_LABELS = 5000
GRACE_MS = 60_000


class LabelsFollower(TopicFollower):
    """sim.labels -> a capped stream of labels in the state store."""

    kind = "sim-labels"

    def __init__(self, bus: Bus, settings: Settings, state: StateStore) -> None:
        super().__init__(bus, [settings.topic_sim_labels], "rmad-api-sim-labels")
        self.state = state

    async def handle(self, records: list[Record]) -> None:
        for r in records:
            try:
                lab = orjson.loads(r.value)
                fields = {k: lab[k] for k in ("type", "key", "start_ms", "onset_ms", "end_ms")}
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            await self.state.xadd(LABELS_STREAM, {"json": orjson.dumps(fields)}, maxlen=MAX_LABELS)


async def read_labels(state: StateStore, key: str | None = None) -> list[dict[str, Any]]:
    rows = await state.xrange(LABELS_STREAM, count=MAX_LABELS)
    out = [orjson.loads(f["json"]) for _, f in rows if "json" in f]
    seen: set[tuple[str, int]] = set()
    uniq = []
    for lab in out:  # at-least-once delivery: a label may arrive twice
        ident = (lab["key"], int(lab["start_ms"]))
        if ident not in seen and (key is None or lab["key"] == key):
            seen.add(ident)
            uniq.append(lab)
    return uniq


@dataclass(frozen=True, slots=True)
class LabelResult:
    label: dict[str, Any]
    status: str  # detected | missed | pending
    alert_id: str | None
    alert_type: str | None
    delay_s: float | None


def score_board(
    labels: list[dict[str, Any]], alerts: list[LogEntry], frontier_ms: dict[str, int]
) -> tuple[list[LabelResult], list[dict[str, Any]]]:
    """Each label's outcome, and the false alarms (alerts on simulated keys matching no label)."""
    first_start = min((int(lab["start_ms"]) for lab in labels), default=None)
    by_time = sorted((e.alert for e in alerts), key=lambda a: int(a["window_end_ms"]))
    matched: set[str] = set()
    results = []
    for lab in sorted(labels, key=lambda x: int(x["start_ms"])):
        start, end = int(lab["start_ms"]), int(lab["end_ms"])
        hit = next(
            (a for a in by_time if a["key"] == lab["key"] and start <= int(a["window_end_ms"]) <= end + GRACE_MS),
            None,
        )
        for a in by_time:
            if a["key"] == lab["key"] and start <= int(a["window_end_ms"]) <= end + GRACE_MS:
                matched.add(str(a["id"]))
        if hit is not None:
            delay = (int(hit["window_end_ms"]) - int(lab["onset_ms"])) / 1000
            results.append(LabelResult(lab, "detected", str(hit["id"]), str(hit["anomaly_type"]), delay))
        else:
            status = "pending" if frontier_ms.get(lab["key"], 0) <= end + GRACE_MS else "missed"
            results.append(LabelResult(lab, status, None, None, None))
    false_alarms = [
        a
        for a in by_time
        if str(a["id"]) not in matched and (first_start is None or int(a["window_end_ms"]) >= first_start - 3_600_000)
    ]
    return results, false_alarms
