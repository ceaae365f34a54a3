"""Wash-trading-like prints: equal-size buy and sell trades at one price, milliseconds apart, in bulk.

Why a rule: matched pairs add volume without moving the price, so to the market model they look like a mild volume
surge at most. On the tape they are unmistakable: a taker buy and a taker sell of exactly the same size at exactly
the same price within `pair_ms` is rare in honest flow (sizes are continuous) and is what self-matching leaves.
`min_pairs` matched pairs within `window_ms` of event time that make up at least `min_share` of the key's volume
raise a signal (typed as a volume surge: volume that is not real trading interest).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


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


@dataclass(slots=True)
class _Key:
    recent: deque[tuple[int, str, str, bool]] = field(default_factory=deque)  # (ts, price, size, buy), last pair_ms
    volume: deque[tuple[int, float, bool]] = field(default_factory=deque)  # (ts, size, matched) in the window
    total: float = 0.0
    matched: float = 0.0
    pairs: int = 0


@dataclass
class WashMonitor:
    pair_ms: int = 50
    window_ms: int = 60_000
    min_pairs: int = 10
    min_share: float = 0.3
    max_keys: int = 100_000
    _keys: dict[str, _Key] = field(default_factory=dict)

    def observe(self, key: str, ts: int, price: str, size: str, buy: bool) -> WashSignal | None:
        st = self._keys.get(key)
        if st is None:
            if len(self._keys) >= self.max_keys:
                del self._keys[next(iter(self._keys))]
            st = self._keys[key] = _Key()
        while st.recent and ts - st.recent[0][0] > self.pair_ms:
            st.recent.popleft()
        matched = False
        for i, (_, p_other, q_other, b_other) in enumerate(st.recent):
            if b_other != buy and p_other == price and q_other == size:
                del st.recent[i]
                matched = True
                break
        if not matched:
            st.recent.append((ts, price, size, buy))
        q = float(size)
        st.volume.append((ts, q, matched))
        st.total += q
        if matched:
            st.matched += 2 * q
            st.pairs += 1
        while st.volume and ts - st.volume[0][0] > self.window_ms:
            _, q0, m0 = st.volume.popleft()
            st.total -= q0
            if m0:
                st.matched -= 2 * q0
                st.pairs -= 1
        share = st.matched / st.total if st.total > 0 else 0.0
        if matched and st.pairs >= self.min_pairs and share >= self.min_share:
            return WashSignal(key, st.pairs, min(share, 1.0), self.window_ms, ts)
        return None
