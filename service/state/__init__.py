"""Shared state: atomic compare-and-set, atomic scripts, hashes, capped streams, HyperLogLog, TTL.

Redis in production, an in-process store for `rmad run` on a laptop; tests/state holds both to one contract.
"""

from service.state.base import Script, StateError, StateStore
from service.state.factory import make_state

__all__ = ["Script", "StateError", "StateStore", "make_state"]
