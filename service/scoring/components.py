"""The `worker` role: `rmad worker` / `rmad run` get one ScoringWorker on the runtime's bus and state."""

from __future__ import annotations

import argparse

from service.runtime import Component, Runtime
from service.scoring.worker import ScoringWorker


def build_worker(runtime: Runtime, args: argparse.Namespace) -> list[Component]:
    return [ScoringWorker(runtime.settings, runtime.bus, runtime.state)]
