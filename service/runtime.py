"""The process runtime: one bus, one state store, and the components a command runs on them.

`rmad run` puts every component in one process; `rmad ingest|worker|api` run a subset. A component is anything
with start/stop and a health check, so readiness (/readyz) can say exactly which part is not ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from service.bus import Bus, make_bus
from service.bus.factory import standard_topics
from service.settings import Settings
from service.state import StateStore, make_state

log = logging.getLogger(__name__)

_MIN_STEP_S = 0.5  # a component whose share of the grace period is spent still gets this long to close


def _detail(c: Component) -> str:
    """The component's last health detail (what it did: events published, windows scored), for the stop log."""
    try:
        return c.health().detail
    except Exception as exc:
        return f"health raised {exc!r}"


async def cancel_and_wait(task: asyncio.Task[Any] | None, timeout_s: float | None = None) -> None:
    """Cancel `task` and wait until it has ended, cancelling again every 50 ms while it runs on.

    Why not one `task.cancel()`: on Python 3.11, `asyncio.wait_for` swallows a cancellation that arrives as its
    inner operation completes (CPython gh-86296), and redis-py sends every command through `wait_for`: a loop
    issuing Redis commands can absorb a single cancel and keep running, so a plain cancel-and-await may never
    return. Exceptions of the task are not raised here (it is being stopped); `timeout_s` bounds the wait.
    """
    if task is None or task.done():
        return
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
        if deadline is not None and time.monotonic() > deadline:
            log.error("task %s did not end after being cancelled for %.1f s", task.get_name(), timeout_s)
            return
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""


@runtime_checkable
class Component(Protocol):
    """A long-running part (an ingest source, the scoring worker, ...) managed by the runtime."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop taking input, finish in-flight work, produce, commit, close."""

    def health(self) -> Health: ...


@dataclass
class Runtime:
    settings: Settings
    bus: Bus
    state: StateStore
    components: list[Component] = field(default_factory=list)
    started: bool = False
    stopping_since: float | None = None  # time.monotonic() of begin_shutdown; readiness is false from then on
    stop_deadline: float | None = None  # set by the CLI at SIGTERM: the time.monotonic() by which stop must end

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(settings, make_bus(settings), make_state(settings))

    def add(self, component: Component) -> None:
        self.components.append(component)

    async def start(self) -> None:
        """Create topics when the bus answers, then start components; an unreachable bus is not fatal here.

        Why not fatal: the API must stay up and say (through /readyz) what is missing, while Kafka comes up.
        """
        try:
            await asyncio.wait_for(self.bus.create_topics(standard_topics(self.settings)), 10)
        except Exception as exc:
            log.warning("could not create topics yet (%s); components will retry", exc)
        self.stopping_since = None
        for c in self.components:
            await c.start()
        self.started = True

    def begin_shutdown(self) -> None:
        """The process got SIGTERM: report not ready at once (so load balancers stop routing here) and tell the
        components that can end long-lived work early (open alert streams) to do so, before `stop` runs.

        Why separate from `stop`: the HTTP server drains its connections before the lifespan stops the runtime, and
        an open WebSocket/SSE stream would hold that drain for its whole timeout.
        """
        if self.stopping_since is not None:
            return
        self.stopping_since = time.monotonic()
        for c in self.components:
            begin = getattr(c, "begin_stop", None)
            if callable(begin):
                try:
                    begin()
                except Exception:
                    log.exception("component %s failed to begin stopping", c.name)

    async def stop(self, deadline: float | None = None) -> None:
        """Stop every component (last started first), then close the bus and the state store.

        One budget for the whole process: `deadline` (a time.monotonic() value; default now + RMAD_SHUTDOWN_GRACE_S)
        is shared by all components, so N components never take N grace periods. A component that overruns its
        share is cancelled and logged; the ones after it still get their turn (at least `_MIN_STEP_S` each).
        """
        self.begin_shutdown()
        t0 = time.monotonic()
        if deadline is None:
            deadline = self.stop_deadline or t0 + self.settings.shutdown_grace_s
        for c in reversed(self.components):
            step = time.monotonic()
            budget = max(_MIN_STEP_S, deadline - step)
            try:
                await asyncio.wait_for(c.stop(), budget)
                log.info("stopped %s in %.2f s: %s", c.name, time.monotonic() - step, _detail(c))
            except TimeoutError:
                log.error("component %s did not stop within %.1f s; cancelled", c.name, budget)
            except Exception:
                log.exception("component %s did not stop cleanly", c.name)
        for part, closer in (("bus", self.bus.close), ("state", self.state.close)):
            try:
                await asyncio.wait_for(closer(), max(_MIN_STEP_S, deadline - time.monotonic()))
            except Exception as exc:
                log.warning("closing the %s: %r", part, exc)
        self.started = False
        log.info("runtime stopped in %.2f s", time.monotonic() - t0)

    async def readiness(self) -> dict[str, Health]:
        """Ask the bus, the state store and each component whether they can do their job now."""
        out: dict[str, Health] = {}

        async def probe_bus() -> Health:
            try:
                await self.bus.ping(timeout_s=2.0)
                return Health(True, self.bus.kind)
            except Exception as exc:
                return Health(False, f"{self.bus.kind}: {exc}")

        async def probe_state() -> Health:
            try:
                await self.state.ping(timeout_s=2.0)
                return Health(True, self.state.kind)
            except Exception as exc:
                return Health(False, f"{self.state.kind}: {exc}")

        if self.stopping_since is not None:
            out["shutdown"] = Health(False, f"shutting down for {time.monotonic() - self.stopping_since:.1f} s")
        out["bus"], out["state"] = await asyncio.gather(probe_bus(), probe_state())
        for c in self.components:
            try:
                out[c.name] = c.health()
            except Exception as exc:
                out[c.name] = Health(False, f"health check raised {exc!r}")
        return out
