"""Components of the `api` role: the alert hub, the topic followers (alert log, latest scores, price tape) and the
webhook dispatcher, sharing the runtime's api context with the routes."""

from __future__ import annotations

import argparse

from service.api.context import context_for
from service.api.followers import AlertLogFollower, ScoresFollower, TapeFollower
from service.api.scoring import ModelsComponent
from service.runtime import Component, Runtime


def build_api(runtime: Runtime, _args: argparse.Namespace) -> list[Component]:
    ctx = context_for(runtime)
    s = runtime.settings
    parts: list[Component] = []
    if s.api_followers:
        parts.append(AlertLogFollower(runtime.bus, s, ctx.alert_log, ctx.hub, runtime.state))
        parts.append(ScoresFollower(runtime.bus, s, runtime.state))
        parts.append(TapeFollower(runtime.bus, s, runtime.state, on_trade=ctx.scoring.observe_trade))
    parts.append(ModelsComponent(ctx.scoring))
    parts.append(ctx.hub)
    parts.append(ctx.dispatcher)
    return parts
