"""Pick the state store from Settings: Redis when RMAD_REDIS_URL is set, else the in-process store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.state.base import StateStore
from service.state.memory import MemoryState
from service.state.redis import RedisState

if TYPE_CHECKING:
    from service.settings import Settings


def make_state(settings: Settings) -> StateStore:
    if settings.redis_url is None:
        return MemoryState()
    return RedisState(settings.redis_url, settings.redis_key_prefix, settings.redis_socket_timeout_s)
