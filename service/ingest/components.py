"""The `ingest` role: which market sources `rmad ingest` / `rmad run` start.

`--source` (or `RMAD_INGEST_SOURCE`) picks one:
- `live` (default): Binance and Bybit connectors for `RMAD_INGEST_VENUES` x `RMAD_INGEST_SYMBOLS`; when the
  exchanges cannot be reached they say so once and keep retrying with backoff, and the API stays up;
- `simulator`: the synthetic market with labelled anomalies (what `make demo` runs: no network needed);
- `replay:PATH[:FORMAT[:SPEED]]` (or `replay` with `RMAD_REPLAY_PATH`, `RMAD_REPLAY_FORMAT`, `RMAD_REPLAY_SPEED`):
  recorded files into the same topics;
- `none`: no market source (the worker and the API only).
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from service.runtime import Component, Health, Runtime

if TYPE_CHECKING:
    from service.bus.base import Producer
    from service.ingest.publisher import MarketPublisher
    from service.settings import Settings

log = logging.getLogger(__name__)

SOURCES = ("live", "simulator", "replay", "none")


class SourceError(ValueError):
    """`--source` / RMAD_INGEST_SOURCE names no known source; the message lists the forms."""


class ProducerComponent:
    """Starts the producer the live connectors share and stops it after them (the runtime stops in reverse),
    sending the publisher's open trade packs first."""

    def __init__(
        self, producer: Producer, name: str = "ingest.producer", publisher: MarketPublisher | None = None
    ) -> None:
        self.producer = producer
        self.name = name
        self.publisher = publisher
        self._started = False

    async def start(self) -> None:
        await self.producer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            try:
                if self.publisher is not None:
                    await self.publisher.flush()
            finally:
                await self.producer.stop()
            self._started = False

    def health(self) -> Health:
        return Health(self._started, "started" if self._started else "not started")


def source_name(args: argparse.Namespace | None, settings: Settings) -> str:
    chosen = getattr(args, "source", None) if args is not None else None
    return (chosen or settings.ingest_source or "live").strip()


def build_sources(runtime: Runtime, spec: str) -> list[Component]:
    """Components for one source spec (see the module docstring)."""
    settings = runtime.settings
    kind = spec.split(":", 1)[0].lower()
    if kind == "none":
        return []
    if kind == "simulator" or kind == "sim" or kind == "demo":
        from service.ingest.simulator import SimulatorSource

        return [SimulatorSource(runtime.bus, settings)]
    if kind == "replay":
        from service.ingest.replay import ReplaySource, ReplaySpec, parse_replay_spec

        default_speed = settings.replay_speed or None
        if spec.lower() == "replay":
            if not settings.replay_path:
                raise SourceError("--source replay needs a path: replay:PATH[:FORMAT[:SPEED]] or RMAD_REPLAY_PATH")
            from pathlib import Path

            rs = ReplaySpec(Path(settings.replay_path), settings.replay_format, default_speed)
        else:
            rs = parse_replay_spec(spec, default_format=settings.replay_format, default_speed=default_speed)
        from service.ingest.replay import replay_files

        replay_files(rs.path)  # a missing path stops the command now, naming the path
        return [ReplaySource(runtime.bus, settings, rs)]
    if kind == "live":
        return live_sources(runtime)
    raise SourceError(f"unknown market source {spec!r}: expected live, simulator, replay:PATH[:FORMAT[:SPEED]] or none")


def live_sources(runtime: Runtime) -> list[Component]:
    """One connector per configured venue, sharing one producer and publisher."""
    from service.ingest.binance import BinanceConfig, BinanceConnector
    from service.ingest.bybit import BybitConfig, BybitConnector
    from service.ingest.publisher import MarketPublisher

    settings = runtime.settings
    producer = runtime.bus.producer()
    publisher = MarketPublisher(producer, settings)
    out: list[Component] = [ProducerComponent(producer, publisher=publisher)]
    for venue in settings.ingest_venues:
        if venue == "binance-spot":
            out.append(BinanceConnector(BinanceConfig.from_settings(settings, "spot"), publisher))
        elif venue == "binance-usdm":
            out.append(BinanceConnector(BinanceConfig.from_settings(settings, "usdm"), publisher))
        elif venue == "bybit-spot":
            out.append(BybitConnector(BybitConfig.from_settings(settings, "spot"), publisher))
        elif venue == "bybit-linear":
            out.append(BybitConnector(BybitConfig.from_settings(settings, "linear"), publisher))
    log.info(
        "live market sources: %s for %s (no exchange access? `rmad run --source simulator` runs offline)",
        ", ".join(settings.ingest_venues),
        ", ".join(settings.ingest_symbols),
    )
    return out


def build_ingest(runtime: Runtime, args: argparse.Namespace) -> list[Component]:
    spec = source_name(args, runtime.settings)
    try:
        return build_sources(runtime, spec)
    except (SourceError, ValueError) as exc:
        raise SystemExit(f"rmad: {exc}") from None
