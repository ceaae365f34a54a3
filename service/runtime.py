"""The process runtime: one bus, one state store, and the components a command runs on them.

`rmad run` puts every component in one process; `rmad ingest|worker|api` run a subset. A component is anything
with start/stop and a health check, so readiness (/readyz) can say exactly which part is not ready.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from service.bus import Bus, make_bus
from service.bus.factory import standard_topics
from service.settings import Settings
from service.state import StateStore, make_state

log = logging.getLogger(__name__)


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
        for c in self.components:
            await c.start()
        self.started = True

    async def stop(self) -> None:
        for c in reversed(self.components):
            try:
                await asyncio.wait_for(c.stop(), self.settings.shutdown_grace_s)
            except Exception:
                log.exception("component %s did not stop cleanly", c.name)
        await self.bus.close()
        await self.state.close()
        self.started = False

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

        out["bus"], out["state"] = await asyncio.gather(probe_bus(), probe_state())
        for c in self.components:
            try:
                out[c.name] = c.health()
            except Exception as exc:
                out[c.name] = Health(False, f"health check raised {exc!r}")
        return out
