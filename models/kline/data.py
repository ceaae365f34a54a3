"""Kline series for the `market-kline` model: bars -> `service.features.kline` features, cached per file.

Every file of every period (binance-crash-klines at 5 m; the 1 m months of binance-1m-klines(-more), natively
and resampled to 5 m) becomes one `KSeries`; the features are computed by the exact streaming code the worker
runs, once, and cached under runs/cache/kline keyed by the file's sha256 and the feature spec hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.data.fingerprint import fingerprint
from models.data.klines import kline_rows, load_klines
from models.kline.events import EVENTS, PERIODS, SYMBOLS, Event, resolve
from service.features import bars_from_klines
from service.features.kline import KLINE_SPEC_HASH, KlineFeatureState, resample_bars


@dataclass
class KSeries:
    name: str
    period: str
    symbol: str
    interval_ms: int
    bar_ms: np.ndarray  # int64 [N] bar open
    X: np.ndarray  # float32 [N, F]
    close: np.ndarray  # float64 [N]
    incomplete: np.ndarray  # bool [N]
    warmup: int
    source_sha256: str = ""
    events: list[tuple[Event, int]] = field(default_factory=list)  # (event, resolved worst-bar open ms)

    @property
    def decision_ms(self) -> np.ndarray:
        return self.bar_ms + self.interval_ms

    @property
    def days(self) -> float:
        return float(len(self.bar_ms) * self.interval_ms / 86_400_000)


_ARR = ("bar_ms", "X", "close", "incomplete")


def _build(path: Path, resample_ms: int | None) -> dict[str, np.ndarray]:
    df = load_klines(path)
    t = df["open_time_ms"].to_numpy(np.int64)
    native = int(np.median(np.diff(t[: min(len(t), 1000)])))
    bars = bars_from_klines(kline_rows(df), interval_ms=native)
    if resample_ms is not None and resample_ms != native:
        bars = resample_bars(bars, resample_ms)
    st = KlineFeatureState()
    X = st.update_many(bars)
    return {
        "bar_ms": np.asarray([b.start_ms for b in bars], np.int64),
        "X": X,
        "close": np.asarray([b.close for b in bars], np.float64),
        "incomplete": np.asarray([b.incomplete for b in bars], bool),
        "interval": np.asarray([bars[0].interval_ms], np.int64),
    }


def load_file(path: Path, period: str, symbol: str, cache_dir: Path | None, resample_ms: int | None = None) -> KSeries:
    sha = fingerprint(path)
    arrays: dict[str, np.ndarray] | None = None
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{sha}|{KLINE_SPEC_HASH}|{resample_ms}".encode()).hexdigest()[:24]
        cache = cache_dir / f"kline-{key}.npz"
        if cache.exists():
            z = np.load(cache)
            arrays = {k: z[k] for k in z.files}
    if arrays is None:
        arrays = _build(path, resample_ms)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(cache)
    interval = int(arrays["interval"][0])
    tag = "" if resample_ms is None else f"@{resample_ms // 60_000}m"
    s = KSeries(
        name=f"{period}:{symbol}{tag}",
        period=period,
        symbol=symbol,
        interval_ms=interval,
        bar_ms=arrays["bar_ms"],
        X=arrays["X"],
        close=arrays["close"],
        incomplete=arrays["incomplete"],
        warmup=KlineFeatureState().params.warmup,
        source_sha256=sha,
    )
    s.events = [(ev, resolve(ev, s.bar_ms, s.close)) for ev in EVENTS.get(period, ()) if ev.symbol == symbol]
    return s


def load_all(data_root: Path, cache_dir: Path | None, with_resampled: bool = True) -> list[KSeries]:
    """Every period x symbol that exists under `data_root` (1 m months also resampled to 5 m)."""
    out: list[KSeries] = []
    for period, (folder, patterns) in PERIODS.items():
        for sym in SYMBOLS:
            for pat in patterns:
                p = data_root / folder / pat.format(s=sym)
                if not p.exists():
                    continue
                out.append(load_file(p, period, sym, cache_dir))
                if with_resampled and period.startswith("1m-"):
                    out.append(load_file(p, period, sym, cache_dir, resample_ms=300_000))
    return out


def fingerprints(series: list[KSeries]) -> dict[str, str]:
    return {s.name: s.source_sha256 for s in series}


def describe(series: list[KSeries]) -> str:
    return json.dumps({s.name: {"bars": len(s.bar_ms), "events": len(s.events)} for s in series})
