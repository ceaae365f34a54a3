"""The api part's services for one runtime: keys, limiter, alert log, feedback, hub, webhooks, scoring.

Why one context per runtime (kept on the runtime object): the components registered for the `api` role (hub,
followers, webhook dispatcher) and the routes of the app built around that runtime must share the same hub and
stores; tests build several runtimes in one process, so a module-level singleton would mix them up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from service.api.alertlog import AlertLog, FeedbackStore
from service.api.auth import KeyStore, RateLimiter
from service.api.hub import AlertHub
from service.api.webhooks import WebhookDispatcher, WebhookStore
from service.runtime import Runtime
from service.settings import Settings
from service.state import StateStore

if TYPE_CHECKING:
    from service.api.scoring import ScoringService

_ATTR = "_rmad_api_context"


@dataclass
class ApiContext:
    runtime: Runtime
    settings: Settings
    state: StateStore
    keys: KeyStore
    limiter: RateLimiter
    alert_log: AlertLog
    feedback: FeedbackStore
    hub: AlertHub
    webhooks: WebhookStore
    dispatcher: WebhookDispatcher
    extras: dict[str, Any] = field(default_factory=dict)
    fast_path_served: int = 0  # POST /v1/score/transaction requests answered by service.api.fastpath
    _scoring: ScoringService | None = None

    @property
    def scoring(self) -> ScoringService:
        if self._scoring is None:
            from service.api.scoring import ScoringService

            self._scoring = ScoringService(self.runtime)
        return self._scoring


def context_for(runtime: Runtime) -> ApiContext:
    """The runtime's api context, made on first use."""
    ctx: ApiContext | None = runtime.__dict__.get(_ATTR)
    if ctx is None:
        s, state = runtime.settings, runtime.state
        alert_log = AlertLog(state, s.api_alert_log_maxlen, s.api_alert_ttl_s)
        webhooks = WebhookStore(state, s)
        ctx = ApiContext(
            runtime=runtime,
            settings=s,
            state=state,
            keys=KeyStore(state, s),
            limiter=RateLimiter(state, s),
            alert_log=alert_log,
            feedback=FeedbackStore(state),
            hub=AlertHub(alert_log, s.api_stream_poll_s, s.api_stream_queue, page=max(1, s.api_stream_queue // 2)),
            webhooks=webhooks,
            dispatcher=WebhookDispatcher(webhooks, alert_log, state, s),
        )
        runtime.__dict__[_ATTR] = ctx
    return ctx


def api_context(app: FastAPI) -> ApiContext:
    runtime: Runtime = app.state.runtime
    return context_for(runtime)
