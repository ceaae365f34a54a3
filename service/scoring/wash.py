"""Wash-trading-like prints: equal-size buy and sell trades at one price, milliseconds apart, in bulk.

Why a rule: matched pairs add volume without moving the price, so to the market model they look like a mild volume
surge at most. On the tape they are unmistakable: a taker buy and a taker sell of exactly the same size at exactly
the same price within `pair_ms` is rare in honest flow (sizes are continuous) and is what self-matching leaves.
`min_pairs` matched pairs within `window_ms` of event time that make up at least `min_share` of the key's volume
raise a signal (typed as a volume surge: volume that is not real trading interest). The window is kept in
`bucket_ms` buckets (its trailing edge is exact to a bucket), and unmatched prints are indexed by (price, size,
side), so the cost per print does not grow with the rate: matching is one dictionary lookup, not a scan of the
recent prints.
A `Detector` (service/scoring/detectors.py): `update(print)` returns the signal as a finding.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from service.schemas.scoring import AnomalyType
from service.scoring.detectors import TapePrint
from service.scoring.evidence import Contribution, Finding

RULE = "tape-rules"
VERSION = "1"

Number = float | Decimal


@dataclass(frozen=True, slots=True)
class WashSignal:
    key: str
    pairs: int
    share: float  # matched volume / all volume in the window
    window_ms: int
    event_ms: int

    def explanation(self) -> str:
        return (
            f"{self.key}: a volume surge of wash-trading-like prints: {self.pairs} buy/sell pairs of identical size "
            f"at identical prices within milliseconds in the last {self.window_ms / 1000:.0f} s, "
            f"{self.share:.0%} of all volume; such volume moves no price and is not real trading interest."
        )

    def finding(self, threshold: float) -> Finding:
        """Typed a volume surge: volume that is not real trading interest."""
        return Finding(
            rule=RULE,
            version=VERSION,
            policy_key=f"wt|{self.key}",
            key=self.key,
            event_ms=self.event_ms,
            anomaly=AnomalyType.VOLUME_SURGE,
            score=float(self.pairs),
            threshold=threshold,
            evidence=(
                Contribution("matched_pairs", float(self.pairs), 0.0, 0.0),
                Contribution("matched_volume_share", self.share, 0.0, 0.0),
            ),
            explanation=self.explanation(),
        )


@dataclass(slots=True)
class _Key:
    # (ts, (price, size), buy) of the prints kept for matching, in arrival order (price and size as given, compared
    # exactly), and per (price, size) among them: [unmatched ones, signed (+ buys, - sells: two of opposite sides
    # would have matched), matched ones]. Matching takes the oldest unmatched print of a (price, size), so its
    # matched prints are always its oldest in `recent`, and an expiring one is matched while that count is > 0.
    recent: deque[tuple[int, tuple[Number, Number], bool]] = field(default_factory=deque)
    index: dict[tuple[Number, Number], list[int]] = field(default_factory=dict)
    # the window's volume in buckets of `bucket_ms`: [bucket start, volume, matched volume, pairs]; one entry per
    # bucket rather than per print keeps a busy key's window short
    volume: deque[list[float]] = field(default_factory=deque)
    total: float = 0.0
    matched: float = 0.0
    pairs: int = 0
    newest: int = 0  # newest event time seen: trimming follows it, so a print out of order never stalls it


@dataclass
class WashMonitor:
    pair_ms: int = 50
    window_ms: int = 60_000
    min_pairs: int = 10
    min_share: float = 0.3
    max_keys: int = 100_000
    bucket_ms: int = 250  # resolution of the window's trailing edge
    max_recent: int = 256  # unmatched prints kept per key (a pathological burst cannot make matching O(n))
    _keys: dict[str, _Key] = field(default_factory=dict)

    @property
    def max_footprint(self) -> int:
        buckets = self.window_ms // self.bucket_ms + 3  # the window, its trailing bucket, the newest one
        return self.max_keys * (1 + self.max_recent + buckets)

    def footprint(self) -> int:
        return sum(1 + len(st.recent) + len(st.volume) for st in self._keys.values())

    def update(self, p: TapePrint) -> Sequence[Finding]:
        sig = self.observe(p.key, p.ts, p.price, p.size, p.buy)
        return () if sig is None else (sig.finding(float(self.min_pairs)),)

    def observe(self, key: str, ts: int, price: Number, size: Number, buy: bool) -> WashSignal | None:
        """One print; `price` and `size` are compared exactly as given (the worker's floats parsed from the
        exchange's decimal strings, or Decimals)."""
        st = self._keys.get(key)
        if st is None:
            if len(self._keys) >= self.max_keys:
                del self._keys[next(iter(self._keys))]
            st = self._keys[key] = _Key()
        if ts > st.newest:
            st.newest = ts
        now = st.newest
        recent, index = st.recent, st.index
        while recent and (
            now - recent[0][0] > self.pair_ms or len(recent) > self.max_recent or index[recent[0][1]][1] > 0
        ):
            _expire(index, recent.popleft())  # matched ones go as soon as they reach the front
        ps = (price, size)
        c = index.get(ps)
        matched = c is not None and c[0] != 0 and (c[0] > 0) != buy
        if c is not None and matched:  # the oldest unmatched opposite print of this price and size
            c[0] += 1 if c[0] < 0 else -1
            c[1] += 1
        else:
            recent.append((ts, ps, buy))
            if c is None:
                index[ps] = [1 if buy else -1, 0]
            else:
                c[0] += 1 if buy else -1
        q = float(size)
        vol = st.volume
        b0 = ts - ts % self.bucket_ms
        if vol and vol[-1][0] >= b0:
            cur = vol[-1]  # this print's bucket (or, out of order, the newest one)
        else:
            cur = [b0, 0.0, 0.0, 0]
            vol.append(cur)
        cur[1] += q
        st.total += q
        if matched:
            cur[2] += 2 * q
            cur[3] += 1
            st.matched += 2 * q
            st.pairs += 1
        horizon = now - self.window_ms - self.bucket_ms
        while vol and vol[0][0] <= horizon:
            _, q0, m0, p0 = vol.popleft()
            st.total -= q0
            st.matched -= m0
            st.pairs -= int(p0)
        if not matched or st.pairs < self.min_pairs:
            return None
        share = st.matched / st.total if st.total > 0 else 0.0
        if share >= self.min_share:
            return WashSignal(key, st.pairs, min(share, 1.0), self.window_ms, ts)
        return None


def _expire(index: dict[tuple[Number, Number], list[int]], entry: tuple[int, tuple[Number, Number], bool]) -> None:
    """A kept print leaves: a matched one if its (price, size) still counts matched ones (they are the oldest)."""
    ps = entry[1]
    c = index[ps]
    if c[1] > 0:
        c[1] -= 1
    else:
        c[0] += -1 if c[0] > 0 else 1
    if c[0] == 0 and c[1] == 0:
        del index[ps]
