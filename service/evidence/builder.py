"""Build one alert's evidence from the series around it: bars (before, during, after), score and threshold, each
branch's score and weight, top features against normal, the trades of the rush, book snapshots for book rules.

Why a pure function over plain series: the same evidence must come out wherever the alert is built (the worker's
emitter, or the API when it logs an alert from the topic), and tests can feed it exact series. Everything is
bounded here (`Limits`), so the stored record has a known maximum size whatever the input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Phase = Literal["before", "during", "after"]


@dataclass(frozen=True, slots=True)
class Limits:
    before_ms: int = 300_000  # context before the onset
    after_ms: int = 180_000  # what followed the alert
    max_bars: int = 300  # during is thinned to fit
    max_scores: int = 300
    max_trades: int = 400
    max_books: int = 120


@dataclass(frozen=True, slots=True)
class EvBar:
    t: int
    o: float
    h: float
    l: float  # noqa: E741 - OHLC's own letter
    c: float
    v: float
    phase: Phase = "before"


@dataclass(frozen=True, slots=True)
class EvScore:
    t: int
    fused: float
    threshold: float


@dataclass(frozen=True, slots=True)
class EvTrade:
    t: int
    price: float
    size: float
    side: str


@dataclass(frozen=True, slots=True)
class EvBook:
    """The touch and the largest resting level on each side (where a spoofing wall shows)."""

    t: int
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    wall_bid: float = 0.0
    wall_bid_size: float = 0.0
    wall_ask: float = 0.0
    wall_ask_size: float = 0.0


@dataclass(slots=True)
class Evidence:
    alert_id: str
    key: str
    anomaly_type: str
    severity: str
    score: float
    threshold: float
    model: str
    onset_ms: int  # first window of the run of scores above threshold that ended in the alert
    alert_ms: int  # the alert's window end
    start_ms: int  # first bar shown
    end_ms: int  # last moment the evidence covers (alert + after bars)
    bar_ms: int
    captured_ms: int
    complete: bool  # the after-part is in (the data had passed the evidence window when it was captured)
    branches: list[dict[str, float | str]] = field(default_factory=list)
    top_features: list[dict[str, float | str]] = field(default_factory=list)
    bars: list[EvBar] = field(default_factory=list)
    scores: list[EvScore] = field(default_factory=list)
    trades: list[EvTrade] = field(default_factory=list)
    books: list[EvBook] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""  # where it was captured: "worker" (where the alert was decided) or "api" (when it was logged)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BOOK_TYPES = frozenset({"spoofing_like"})
GIVE_UP_MS = 3_600_000


def onset_of(scores: Sequence[EvScore], alert_ms: int, threshold: float) -> int:
    """The start of the run of scores at or above their threshold that ends at the alert (the alert time if none);
    `threshold` (the alert's) stands in for a score without one."""
    onset = alert_ms
    for s in reversed([s for s in scores if s.t <= alert_ms]):
        if s.fused >= (s.threshold if s.threshold > 0 else threshold):
            onset = s.t
        else:
            break
    return onset


def _thin(items: Sequence[Any], most: int) -> list[Any]:
    """Every k-th item so at most `most` remain, always keeping the last (the alert end)."""
    if len(items) <= most:
        return list(items)
    step = -(-len(items) // most)
    out = list(items[::step])
    if out[-1] is not items[-1]:
        out[-1] = items[-1]
    return out


def build_evidence(
    alert: Mapping[str, Any],
    bars: Iterable[Mapping[str, Any]],
    scores: Iterable[Mapping[str, Any]],
    trades: Iterable[Mapping[str, Any]] = (),
    books: Iterable[Mapping[str, Any]] = (),
    *,
    bar_ms: int,
    now_ms: int,
    limits: Limits = Limits(),
) -> Evidence:
    alert_ms = int(alert["window_end_ms"])
    thr = float(alert["threshold"])
    sc = sorted(
        (EvScore(int(s["window_end_ms"]), float(s["fused"]), float(s["threshold"])) for s in scores),
        key=lambda s: s.t,
    )
    onset = onset_of(sc, alert_ms, thr)
    start = onset - limits.before_ms
    end = alert_ms + limits.after_ms
    ev_bars: list[EvBar] = []
    frontier = sc[-1].t if sc else 0  # the newest data seen, in event time
    for b in sorted(bars, key=lambda b: int(b["t"])):
        t = int(b["t"])
        frontier = max(frontier, t)
        if t < start or t > end:
            continue
        phase: Phase = "before" if t + bar_ms <= onset else "during" if t <= alert_ms else "after"
        ev_bars.append(EvBar(t, float(b["o"]), float(b["h"]), float(b["l"]), float(b["c"]), float(b["v"]), phase))
    sc = [s for s in sc if start <= s.t <= end]
    # the rush: trades from one bar before the onset to the alert (the moments that moved the score)
    rush = sorted(
        (
            EvTrade(int(t["t"]), float(t["price"]), float(t["size"]), str(t.get("side", "")))
            for t in trades
            if onset - bar_ms <= int(t["t"]) <= alert_ms + bar_ms
        ),
        key=lambda t: t.t,
    )
    if len(rush) > limits.max_trades:  # keep the largest, in time order
        rush = sorted(sorted(rush, key=lambda t: -t.size)[: limits.max_trades], key=lambda t: t.t)
    ev_books = sorted(
        (
            EvBook(
                int(b["t"]),
                float(b["bid"]),
                float(b["bid_size"]),
                float(b["ask"]),
                float(b["ask_size"]),
                float(b.get("wall_bid", 0.0)),
                float(b.get("wall_bid_size", 0.0)),
                float(b.get("wall_ask", 0.0)),
                float(b.get("wall_ask_size", 0.0)),
            )
            for b in books
            if start <= int(b["t"]) <= end
        ),
        key=lambda b: b.t,
    )
    branches: list[dict[str, float | str]] = []
    br, wt = alert.get("branches") or {}, alert.get("weights") or {}
    for name, label in (("md", "distance (MD)"), ("trans", "transformer"), ("clust", "cluster")):
        if name in br:
            branches.append({"name": name, "label": label, "score": float(br[name]), "weight": float(wt.get(name, 0))})
    feats: list[dict[str, float | str]] = [
        {"name": str(f["name"]), "value": float(f["value"]), "normal": float(f["normal"]), "error": float(f["error"])}
        for f in (alert.get("top_features") or [])[:12]
    ]
    notes = []
    if str(alert.get("anomaly_type")) in BOOK_TYPES and not ev_books:
        notes.append("no book snapshots were available where this evidence was captured")
    return Evidence(
        alert_id=str(alert["id"]),
        key=str(alert["key"]),
        anomaly_type=str(alert["anomaly_type"]),
        severity=str(alert["severity"]),
        score=float(alert["score"]),
        threshold=thr,
        model=f"{alert.get('model_name', '')} {alert.get('model_version', '')}".strip(),
        onset_ms=onset,
        alert_ms=alert_ms,
        start_ms=ev_bars[0].t if ev_bars else start,
        end_ms=end,
        bar_ms=bar_ms,
        captured_ms=now_ms,
        # complete once the data (not the wall clock: a backfill decides alerts long after they happened) has
        # passed the evidence window; a market gone quiet is given up on an hour later
        complete=frontier >= end or now_ms >= end + GIVE_UP_MS,
        branches=branches,
        top_features=feats,
        bars=_thin(ev_bars, limits.max_bars),
        scores=_thin(sc, limits.max_scores),
        trades=rush,
        books=_thin(ev_books, limits.max_books),
        notes=notes,
    )


def evidence_from_dict(d: Mapping[str, Any]) -> Evidence:
    return Evidence(
        **{k: v for k, v in d.items() if k not in ("bars", "scores", "trades", "books")},
        bars=[EvBar(**b) for b in d.get("bars", ())],
        scores=[EvScore(**s) for s in d.get("scores", ())],
        trades=[EvTrade(**t) for t in d.get("trades", ())],
        books=[EvBook(**b) for b in d.get("books", ())],
    )
