"""The state contract shared by the Redis and in-process stores."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

FieldValue = bytes | str | int | float
StreamEntry = tuple[str, dict[str, bytes]]


class StateError(RuntimeError):
    """The state store could not do what was asked (unreachable, wrong type, script error)."""


class CommandRunner(Protocol):
    """What a script's Python twin gets: Redis commands run synchronously inside the atomic section."""

    def call(self, command: str, *args: FieldValue) -> Any: ...


@dataclass(frozen=True)
class Script:
    """An atomic update: Lua for Redis and its Python twin for the in-process store.

    Why two bodies: Redis runs Lua atomically; the in-process store runs the Python twin under its lock. The
    contract tests run the same inputs through both and compare, so the twins cannot drift apart. The twin uses
    `redis.call`-shaped commands (`r.call("HINCRBY", key, field, 1)`) and returns what the Lua would return
    (Lua numbers come back as ints, strings as bytes).
    """

    name: str
    lua: str
    python: Callable[[CommandRunner, list[str], list[bytes]], Any]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One prepared script invocation (keys and args), so callers can batch many of them."""

    keys: Sequence[str]
    args: Sequence[FieldValue]


def to_bytes(value: FieldValue) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


class StateStore(abc.ABC):
    kind: str = "abstract"

    @abc.abstractmethod
    async def ping(self, timeout_s: float = 2.0) -> None:
        """Raise StateError when the store does not answer (readiness probe)."""

    async def close(self) -> None:
        """Release connections."""

    # strings
    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def set(self, key: str, value: FieldValue, ttl_s: float | None = None, *, nx: bool = False) -> bool:
        """Set a value (optionally only when absent, optionally expiring); False when `nx` and present."""

    @abc.abstractmethod
    async def delete(self, *keys: str) -> int: ...

    @abc.abstractmethod
    async def compare_and_set(
        self, key: str, expected: bytes | None, new: FieldValue | None, ttl_s: float | None = None
    ) -> bool:
        """Atomically replace the value when it equals `expected` (None: absent); `new` None deletes."""

    @abc.abstractmethod
    async def incr(self, key: str, amount: int = 1) -> int: ...

    @abc.abstractmethod
    async def expire(self, key: str, ttl_s: float) -> bool: ...

    @abc.abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds left, None when the key has no expiry or does not exist."""

    # hashes
    @abc.abstractmethod
    async def hset(self, key: str, mapping: Mapping[str, FieldValue]) -> int: ...

    @abc.abstractmethod
    async def hget(self, key: str, field: str) -> bytes | None: ...

    @abc.abstractmethod
    async def hgetall(self, key: str) -> dict[str, bytes]: ...

    @abc.abstractmethod
    async def hincrby(self, key: str, field: str, amount: int = 1) -> int: ...

    @abc.abstractmethod
    async def hdel(self, key: str, *fields: str) -> int: ...

    # capped streams
    @abc.abstractmethod
    async def xadd(self, stream: str, fields: Mapping[str, FieldValue], maxlen: int | None = None) -> str:
        """Append; trims to exactly `maxlen` newest entries when given. Returns the entry id."""

    @abc.abstractmethod
    async def xrange(
        self, stream: str, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[StreamEntry]: ...

    @abc.abstractmethod
    async def xrevrange(
        self, stream: str, end: str = "+", start: str = "-", count: int | None = None
    ) -> list[StreamEntry]: ...

    @abc.abstractmethod
    async def xlen(self, stream: str) -> int: ...

    # HyperLogLog (the in-process store counts exactly)
    @abc.abstractmethod
    async def pfadd(self, key: str, *values: FieldValue) -> int: ...

    @abc.abstractmethod
    async def pfcount(self, key: str) -> int: ...

    # atomic scripts
    @abc.abstractmethod
    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[FieldValue]) -> Any: ...

    async def run_script_batch(self, script: Script, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run `script` once per call, in order, each atomic on its own; the results in call order.

        Why: a caller applying many independent updates (one per chain transaction) should pay one round trip,
        not one per update; Redis pipelines them, the in-process store simply runs them in turn.
        """
        return [await self.run_script(script, c.keys, c.args) for c in calls]
