"""Which components each process role runs: one explicit table, role -> builders in start order.

Roles: `ingest` (exchange and chain sources), `worker` (streaming scoring), `api` (HTTP). `rmad run` = all three.
Builders are named as `module:function` and imported when a role is built (so `rmad --help` stays fast); a name that
does not resolve is an error naming it, never a role that silently runs without a part.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from service.runtime import Component, Runtime

Builder = Callable[[Runtime, argparse.Namespace], list[Component]]

ROLES: dict[str, tuple[str, ...]] = {
    "ingest": (
        "service.ingest.components:build_ingest",
        "service.ingest.chain.components:build_chain_components",
    ),
    "worker": ("service.scoring.components:build_worker",),
    "api": ("service.api.components:build_api",),
}
ROLE_ORDER: tuple[str, ...] = ("ingest", "worker", "api")


class RoleTableError(LookupError):
    """A builder named in ROLES cannot be imported or is not callable."""


def resolve(ref: str) -> Builder:
    """`module:function` -> the function; RoleTableError naming `ref` when it does not resolve."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise RoleTableError(f"role builder {ref!r}: cannot import {exc.name!r}") from exc
    builder = getattr(module, attr, None)
    if not callable(builder):
        raise RoleTableError(f"role builder {ref!r}: {module_name} has no function {attr!r}")
    return builder  # type: ignore[no-any-return]


def builders(role: str) -> list[Builder]:
    if role not in ROLES:
        raise RoleTableError(f"unknown role {role!r}; known: {', '.join(ROLE_ORDER)}")
    return [resolve(ref) for ref in ROLES[role]]


def build(roles: set[str], runtime: Runtime, args: argparse.Namespace) -> list[Component]:
    out: list[Component] = []
    for role in ROLE_ORDER:
        if role in roles:
            for builder in builders(role):
                out.extend(builder(runtime, args))
    return out
