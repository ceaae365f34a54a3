"""The `Detector` protocol: a rule that learns online from one event at a time and reports findings.

River-style: `update(event)` folds one event into the detector's state and returns what it found (usually
nothing). Why a protocol: the worker drives every rule the same way (spoofing on book tops, wash trading on
prints, cross-venue dislocations on closed bars, and any new rule), each finding goes through the one decision
(`service.scoring.decision.decide_finding`), and one property-test suite (tests/scoring/test_detectors.py) holds
every detector to the same promises:
- no exception escapes `update`, whatever the event's numbers or timestamps;
- memory is bounded: `footprint()` (the entries held: keys, buffered events) never exceeds `max_footprint`, a
  number set by the detector's configuration, not by how many events it saw;
- a finding names the key it was fed (`Finding.key`), never another;
- determinism: the same events give the same findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, TypeVar

from service.scoring.evidence import Finding

E_contra = TypeVar("E_contra", contravariant=True)


class Detector(Protocol[E_contra]):
    @property
    def max_footprint(self) -> int:
        """The most entries `footprint()` may reach under this configuration."""
        ...

    def update(self, event: E_contra) -> Sequence[Finding]:
        """Fold one event in; the findings it completes (most events: none)."""
        ...

    def footprint(self) -> int:
        """Entries held now (keys, buffered events, pair statistics)."""
        ...


class TapePrint(NamedTuple):
    """One trade print as the tape rules read it (the worker's tick path builds it from a `TradeTick`)."""

    key: str
    ts: int
    price: float
    size: float
    buy: bool


class ClosedBar(Protocol):
    """A closed bar as the cross-venue rule reads it (a `ClosedWindow` is one: its last bar)."""

    @property
    def key(self) -> str: ...
    @property
    def window_end_ms(self) -> int: ...
    @property
    def close(self) -> float: ...
    @property
    def incomplete(self) -> bool: ...


class BarClose(NamedTuple):
    """A `ClosedBar` on its own (tests, tools)."""

    key: str
    window_end_ms: int
    close: float
    incomplete: bool = False
