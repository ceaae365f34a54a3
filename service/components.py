"""Which components each process role runs. Each part adds its builder here as it lands.

Roles: `ingest` (exchange and chain sources), `worker` (streaming scoring), `api` (HTTP). `rmad run` = all three.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from service.runtime import Component, Runtime

Builder = Callable[[Runtime, argparse.Namespace], list[Component]]

# role -> builders, in start order; parts register theirs with `register`.
_BUILDERS: dict[str, list[Builder]] = {"ingest": [], "worker": [], "api": []}


def register(role: str, builder: Builder) -> None:
    _BUILDERS.setdefault(role, []).append(builder)


def _load_parts() -> None:
    """Import the modules that register builders (kept lazy so `rmad --help` stays fast)."""
    import importlib

    for module in (
        "service.ingest.components",
        "service.ingest.chain.components",
        "service.scoring.components",
        "service.api.components",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # the part is not built (its module or package is absent); anything else missing is a real error
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise


def build(roles: set[str], runtime: Runtime, args: argparse.Namespace) -> list[Component]:
    _load_parts()
    out: list[Component] = []
    for role in ("ingest", "worker", "api"):
        if role in roles:
            for builder in _BUILDERS.get(role, []):
                out.extend(builder(runtime, args))
    return out
