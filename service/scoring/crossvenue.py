"""Cross-venue and cross-quote checks: the same asset on two venues, or one base against USDT/USDC/USD.

Why here and not in the model: a single-symbol model sees one price series; a de-peg (USDC losing its dollar
value makes BTCUSDC rise against BTCUSDT) or a venue dislocation is only visible when two series are compared.
For each pair in a group the log basis log(p_a / p_b) at the same bar end is tracked with an exponentially
weighted mean and variance (the usual basis and its noise); a bar whose basis sits more than `z` standard
deviations and at least `min_bps` basis points away from the usual raises a de-peg / dislocation. Dislocated
bars do not update the usual basis, so a long de-peg keeps being measured against the pre-event normal.

The alert goes to the member that is not the reference: the reference quote is the most liquid stablecoin
(USDT, then USD, then USDC), the reference venue the first of a fixed order, so a USDC de-peg is reported on the
USDC pair.

A `Detector` (service/scoring/detectors.py): `update(bar)` with a closed bar returns the dislocations it reveals
as findings. Memory is bounded by `max_keys` keys (the oldest seen goes first), `max_group` members per group and
`history_bars` closes per member.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from service.schemas.scoring import AnomalyType
from service.scoring.alerts import STABLECOINS, base_quote, split_key
from service.scoring.detectors import ClosedBar
from service.scoring.evidence import Contribution, Finding

RULE = "crossvenue"
VERSION = "1"

MIN_STD_BPS = 1.0  # a basis never has less noise than this (prices tick; a flat series is not a perfect peg)
QUOTE_RANK = {"USDT": 0, "USD": 1, "USDC": 2, "FDUSD": 3, "BUSD": 4, "TUSD": 5, "DAI": 6}
VENUE_FAMILY_RANK = {"binance": 0, "bybit": 1}


def venue_family(venue: str) -> str:
    """binance-spot / sim-binance -> binance; bybit-linear -> bybit (the exchange, whatever the market)."""
    for fam in VENUE_FAMILY_RANK:
        if fam in venue:
            return fam
    return venue


def groups_of(key: str) -> list[tuple[str, int]]:
    """The comparison groups a key belongs to, with its reference rank in each (lower = reference)."""
    venue, symbol = split_key(key)
    base, quote = base_quote(symbol)
    out: list[tuple[str, int]] = []
    if quote:
        kind = "spot" if "spot" in venue or venue.startswith("sim") else venue.rsplit("-", 1)[-1]
        out.append((f"venue:{kind}:{base}{quote}", VENUE_FAMILY_RANK.get(venue_family(venue), 9)))
    if quote in STABLECOINS or quote == "USD":
        out.append((f"quote:{venue}:{base}", QUOTE_RANK.get(quote, 9)))
    return out


@dataclass(frozen=True, slots=True)
class Dislocation:
    key: str  # the member reported (not the reference)
    reference: str
    group: str
    bar_end_ms: int
    basis_bps: float
    usual_bps: float
    std_bps: float

    @property
    def z(self) -> float:
        return abs(self.basis_bps - self.usual_bps) / max(self.std_bps, MIN_STD_BPS)

    def explanation(self) -> str:
        return (
            f"{self.key} trades {self.basis_bps - self.usual_bps:+.0f} bps away from {self.reference} "
            f"(basis {self.basis_bps:+.1f} bps against a usual {self.usual_bps:+.1f} ± {self.std_bps:.1f} bps, "
            f"{self.z:.0f} standard deviations): a de-peg or cross-market dislocation."
        )

    def finding(self, threshold: float, incomplete: bool = False) -> Finding:
        return Finding(
            rule=RULE,
            version=VERSION,
            policy_key=f"xv|{self.key}",
            key=self.key,
            event_ms=self.bar_end_ms,
            anomaly=AnomalyType.DEPEG,
            score=self.z,
            threshold=threshold,
            evidence=(Contribution("basis_bps", self.basis_bps, self.usual_bps, self.z),),
            explanation=self.explanation(),
            incomplete=incomplete,
        )


@dataclass(slots=True)
class _PairStats:
    mean: float = 0.0
    var: float = 0.0
    n: int = 0


@dataclass
class CrossVenueMonitor:
    z: float = 8.0
    min_bps: float = 50.0
    half_life_bars: float = 360.0
    warmup_bars: int = 60
    history_bars: int = 240
    max_keys: int = 100_000
    max_group: int = 16  # members per group (one asset on a few venues and quotes; more is not a real group)
    # group -> key -> (rank, {bar end: close}) with the last `history_bars` closes: members of a group arrive from
    # different partitions, one may run minutes ahead of another, and a pair is compared at equal bar ends
    _last: dict[str, dict[str, tuple[int, dict[int, float]]]] = field(default_factory=dict)
    _pairs: dict[tuple[str, str], _PairStats] = field(default_factory=dict)
    _dislocated: dict[str, int] = field(default_factory=dict)  # key -> bar end of its latest dislocation
    _keys: dict[str, list[str]] = field(default_factory=dict)  # key -> its groups, oldest key first
    _pairs_of: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # key -> its pairs' stats keys

    @property
    def max_footprint(self) -> int:
        per_key = 2 * (1 + self.history_bars) + 2 * self.max_group * 2 + 1  # closes, pair stats (both ends), mark
        return self.max_keys * per_key

    def footprint(self) -> int:
        closes = sum(1 + len(c) for members in self._last.values() for _, c in members.values())
        return closes + 2 * len(self._pairs) + len(self._dislocated)

    def update(self, bar: ClosedBar) -> Sequence[Finding]:
        """`observe` a closed bar; its dislocations as findings scored in standard deviations against `z`."""
        found = self.observe(bar.key, bar.window_end_ms, bar.close)
        return [d.finding(self.z, bar.incomplete) for d in found]

    def _admit(self, group: str, key: str) -> bool:
        """Track `key` in `group` (evicting the oldest key past `max_keys`); False when the group is full."""
        groups = self._keys.get(key)
        if groups is None:
            if len(self._keys) >= self.max_keys:
                self._evict(next(iter(self._keys)))
            groups = self._keys[key] = []
        if group in groups:
            return True
        members = self._last.get(group)
        if members is not None and len(members) >= self.max_group:
            return False
        groups.append(group)
        return True

    def _evict(self, key: str) -> None:
        for group in self._keys.pop(key, []):
            members = self._last.get(group)
            if members is not None:
                members.pop(key, None)
                if not members:
                    del self._last[group]
        for pair in self._pairs_of.pop(key, set()):
            self._pairs.pop(pair, None)
            other = pair[0] if pair[1] == key else pair[1]
            peers = self._pairs_of.get(other)
            if peers is not None:
                peers.discard(pair)
        self._dislocated.pop(key, None)

    def is_dislocated(self, key: str, bar_end_ms: int, within_ms: int = 300_000) -> bool:
        """Whether `key` was seen dislocated from its reference within `within_ms` before `bar_end_ms`: the
        model's own alert on it is then typed a de-peg rather than a price move of the asset."""
        end = self._dislocated.get(key)
        return end is not None and 0 <= bar_end_ms - end <= within_ms

    @property
    def alpha(self) -> float:
        return float(1.0 - 0.5 ** (1.0 / self.half_life_bars))

    def remember(self, group: str, key: str, rank: int, bar_end_ms: int, close: float) -> None:
        """A member's close seen by another worker (service/scoring/closes.py): kept like one's own, so the next
        `observe` of a member at that bar end compares against it. It makes no comparison itself."""
        if close > 0 and math.isfinite(close):
            self._keep(group, key, rank, bar_end_ms, close, overwrite=False)

    def _keep(self, group: str, key: str, rank: int, bar_end_ms: int, close: float, overwrite: bool = True) -> bool:
        """Hold one member's close at a bar end, at most `history_bars` per member (the oldest bar end goes);
        False when the key cannot join the group (full)."""
        if not self._admit(group, key):
            return False
        own = self._last.setdefault(group, {}).setdefault(key, (rank, {}))[1]
        if overwrite or bar_end_ms not in own:
            own[bar_end_ms] = close
            if len(own) > self.history_bars:
                del own[min(own)]
        return True

    def observe(self, key: str, bar_end_ms: int, close: float) -> list[Dislocation]:
        """Record one bar close; return the dislocations it reveals against members at the same bar end."""
        if not (close > 0 and math.isfinite(close)):
            return []
        out: list[Dislocation] = []
        for group, rank in groups_of(key):
            if not self._keep(group, key, rank, bar_end_ms, close):
                continue
            members = self._last[group]
            for other, (orank, closes) in members.items():
                px = closes.get(bar_end_ms) if other != key else None
                if px is None:
                    continue
                if (orank, other) < (rank, key):
                    ref, ref_px, mem, mem_px = other, px, key, close
                else:
                    ref, ref_px, mem, mem_px = key, close, other, px
                d = self._pair(group, ref, mem, bar_end_ms, math.log(mem_px / ref_px) * 1e4)
                if d is not None:
                    self._dislocated[d.key] = bar_end_ms
                    out.append(d)
        return out

    def _pair(self, group: str, ref: str, mem: str, end: int, basis: float) -> Dislocation | None:
        if not math.isfinite(basis):  # closes at opposite ends of the float range: no basis to learn from
            return None
        st = self._pairs.get((ref, mem))
        if st is None:
            st = self._pairs[(ref, mem)] = _PairStats()
            self._pairs_of.setdefault(ref, set()).add((ref, mem))
            self._pairs_of.setdefault(mem, set()).add((ref, mem))
        std = max(math.sqrt(st.var) if st.var > 0 else 0.0, MIN_STD_BPS)
        dev = abs(basis - st.mean)
        if st.n >= self.warmup_bars and dev >= self.min_bps and dev >= self.z * std:
            return Dislocation(mem, ref, group, end, basis, st.mean, std)
        a = self.alpha if st.n >= self.warmup_bars else 1.0 / (st.n + 1)
        diff = basis - st.mean
        st.mean += a * diff
        st.var = (1 - a) * (st.var + a * diff * diff)
        st.n += 1
        return None
