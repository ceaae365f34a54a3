"""Both state stores for the desk's stores: the session's real Redis and the in-process twin."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from service.state.base import StateStore
from service.state.memory import MemoryState
from service.state.redis import RedisState


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    s: StateStore
    if request.param == "memory":
        s = MemoryState()
    else:
        s = RedisState(request.getfixturevalue("redis_url"), key_prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield s
    await s.close()
