"""Fixtures for the scoring tests: a state store on both backends, and a contract-following test model."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.modelgen import export_tiny_model
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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models root holding market/v1 (exported once per session: torch export takes a couple of seconds)."""
    root = tmp_path_factory.mktemp("models")
    export_tiny_model(root, version="v1", created_ms=1)
    return root
