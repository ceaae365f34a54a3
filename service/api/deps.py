"""Typed FastAPI dependencies: routes ask for the runtime or the settings, never reach for globals.

Async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a thread hop on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.runtime import Runtime
from service.settings import Settings


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.runtime.settings
    return settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
