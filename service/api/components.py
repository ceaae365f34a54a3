"""Components of the `api` role: the alert hub, the topic followers (alert log, latest scores, price tape) and the
webhook dispatcher, sharing the runtime's api context with the routes."""

from __future__ import annotations

import argparse

from service.api.context import context_for
from service.api.desk import BooksFollower, EvidenceCompleter, desk_for
from service.api.followers import AlertLogFollower, ScoresFollower, TapeFollower
from service.api.scoring import ModelsComponent
from service.api.simboard import LabelsFollower
from service.ingest.components import source_name
from service.runtime import Component, Runtime


def build_api(runtime: Runtime, args: argparse.Namespace) -> list[Component]:
    ctx = context_for(runtime)
    s = runtime.settings
    parts: list[Component] = []
    if s.api_followers:
        desk = desk_for(ctx)
        parts.append(AlertLogFollower(runtime.bus, s, ctx.alert_log, ctx.hub, runtime.state, on_new=desk.capture))
        parts.append(ScoresFollower(runtime.bus, s, runtime.state))

        # the price tape for the dashboard and the desk; scoring reads the worker's published context instead
        parts.append(TapeFollower(runtime.bus, s, runtime.state, on_trade=desk.trades.add))
        parts.append(EvidenceCompleter(desk))
        if s.spoofing_enabled:  # book snapshots for the evidence of book-based alerts
            parts.append(BooksFollower(runtime.bus, s, desk.books))
        if source_name(args, s).split(":", 1)[0].lower() in ("simulator", "sim", "demo", "replay"):
            parts.append(LabelsFollower(runtime.bus, s, runtime.state))  # the injected anomalies' labels
    parts.append(ModelsComponent(ctx.scoring))
    parts.append(ctx.hub)
    parts.append(ctx.dispatcher)
    return parts
