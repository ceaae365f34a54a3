"""Market series (bars + features) from the shared data, the time-forward split, and window sampling.

A `Series` is one symbol's contiguous bar stream with its unscaled feature matrix, computed through the same
`service.features` code the worker runs. Windows are views into it: the window scored at bar i is
X[i - T + 1 : i + 1] and its decision time is the end of bar i (what the worker would know at that moment).

Split (time-forward, frozen before any model output was seen):
- pump trade files sorted by announced time: the last `n_test` (12) are the test set, the `n_val` (6) before
  them are validation (fusion gate and threshold calibration), the rest train;
- kline months: 2021-09/10 and the first half of 2023-03-16..05-01 train, the second half validation, 2025-06
  test (false alarms per symbol-day on a quiet month).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.data.fingerprint import fingerprint
from models.data.klines import kline_rows, load_klines
from models.data.labels import load_lamorgia_onsets, onset_for
from models.data.trades import PumpFile, list_pump_files, load_trades
from service.features import SPEC_HASH, MarketFeatureState, bars_from_klines, bars_from_trades
from service.features.bars import TimeBar

log = logging.getLogger(__name__)

MIN_MS = 60_000
HOUR_MS = 3_600_000

#: Detection window of a pump event: an alarm in [announce - PRE, announce + POST] detects it. La Morgia et al.
#: flag onsets up to 120 s before the Telegram message (admins pre-pump).
EVENT_PRE_MS = 120_000
EVENT_POST_MS = 10 * MIN_MS
#: Alarms in (announce + POST, announce + AFTERMATH] are neither detections nor false alarms: the dump and its
#: aftermath are not a quiet market.
AFTERMATH_MS = HOUR_MS
#: Window-level positives for ROC/PR: decision time in [onset, onset + ANOM_SPAN].
ANOM_SPAN_MS = 3 * MIN_MS
#: Training anomalies (GAN, outlier exposure, fusion gate): the first minute only, so that training rewards
#: the windows a fast detector must flag (the pump in the last few bars), not the ones minutes later.
TRAIN_ANOM_SPAN_MS = MIN_MS
#: Normal training windows keep this far from any announcement.
NORMAL_GUARD_MS = 2 * HOUR_MS


@dataclass
class Series:
    """One symbol's bar stream with features; `announce_ms` is None for kline series (no pump)."""

    name: str
    kind: str  # "pump" | "kline"
    symbol: str
    interval_ms: int
    bar_ms: np.ndarray  # int64 [N] bar start
    X: np.ndarray  # float32 [N, F] unscaled features
    close: np.ndarray  # float64 [N]
    quote_volume: np.ndarray  # float64 [N]
    trades: np.ndarray  # float64 [N] (NaN when unknown)
    rush: np.ndarray  # float64 [N] buy rush orders (NaN when unknown)
    incomplete: np.ndarray  # bool [N]
    warmup: int
    announce_ms: int | None = None
    onset_ms: int | None = None
    pump_visible: bool = True
    source_sha256: str = ""
    segment: tuple[int, int] | None = None  # [start_ms, end_ms) restriction of a split (kline halves)

    @property
    def decision_ms(self) -> np.ndarray:
        """When the window ending at bar i can be scored: the bar's end."""
        return self.bar_ms + self.interval_ms

    def valid_ends(self, window: int) -> np.ndarray:
        """Bar indices that may end a scored window: past warm-up, a full window, inside the segment."""
        start = max(self.warmup, window - 1)
        idx = np.arange(start, len(self.bar_ms))
        if self.segment is not None:
            t = self.decision_ms[idx]
            idx = idx[(t >= self.segment[0]) & (t < self.segment[1])]
        return idx

    @property
    def days(self) -> float:
        return float(len(self.bar_ms) * self.interval_ms / 86_400_000)

    def with_segment(self, start_ms: int, end_ms: int, name: str) -> Series:
        return Series(**{**self.__dict__, "segment": (start_ms, end_ms), "name": name})


def _bars_to_series(bars: list[TimeBar], **kw: object) -> Series:
    state = MarketFeatureState()
    X = state.update_many(bars)
    nan = float("nan")
    return Series(
        bar_ms=np.asarray([b.start_ms for b in bars], np.int64),
        X=X,
        close=np.asarray([b.close for b in bars], np.float64),
        quote_volume=np.asarray([b.quote_volume for b in bars], np.float64),
        trades=np.asarray([nan if b.trades is None else b.trades for b in bars], np.float64),
        rush=np.asarray([nan if b.rush_orders is None else b.rush_orders for b in bars], np.float64),
        incomplete=np.asarray([b.incomplete for b in bars], bool),
        warmup=state.params.warmup,
        **kw,  # type: ignore[arg-type]
    )


_ARRAYS = ("bar_ms", "X", "close", "quote_volume", "trades", "rush", "incomplete")


def _cache_path(cache_dir: Path | None, sha: str, interval_ms: int) -> Path | None:
    if cache_dir is None:
        return None
    key = hashlib.sha256(f"{sha}|{SPEC_HASH}|{interval_ms}".encode()).hexdigest()[:24]
    return cache_dir / f"{key}.npz"


def _cached(cache: Path | None, build: object, meta: dict[str, object]) -> Series:
    if cache is not None and cache.exists():
        z = np.load(cache)
        m = json.loads(str(z["meta"]))
        return Series(**{k: z[k] for k in _ARRAYS}, **m)
    assert callable(build)
    s: Series = build()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        m = {k: v for k, v in s.__dict__.items() if k not in _ARRAYS and k != "segment"}
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, meta=json.dumps(m), **{k: getattr(s, k) for k in _ARRAYS})
        tmp.replace(cache)
    return s


def pump_series(
    pf: PumpFile,
    onsets: dict[tuple[str, str], int] | None = None,
    interval_ms: int = 5000,
    cache_dir: Path | None = None,
) -> Series:
    """Bars and features of one pump trade file (cached by file hash + feature spec)."""
    sha = fingerprint(pf.path)
    onset = onset_for(onsets, pf.symbol, pf.announce_ms) if onsets else pf.announce_ms
    meta: dict[str, object] = dict(
        name=pf.stem,
        kind="pump",
        symbol=pf.symbol,
        interval_ms=interval_ms,
        announce_ms=pf.announce_ms,
        onset_ms=onset,
        pump_visible=pf.pump_visible,
        source_sha256=sha,
    )

    def build() -> Series:
        df = load_trades(pf.path)
        bars = bars_from_trades(
            df["ts_ms"].to_numpy(),
            df["price"].to_numpy(),
            df["size"].to_numpy(),
            df["taker_buy"].to_numpy(),
            interval_ms=interval_ms,
            quote=df["quote"].to_numpy(),
        )
        return _bars_to_series(bars, **meta)

    s = _cached(_cache_path(cache_dir, sha, interval_ms), build, meta)
    s.onset_ms, s.pump_visible, s.name = onset, pf.pump_visible, pf.stem  # labels are never cached
    return s


def kline_series(path: Path, cache_dir: Path | None = None, interval_ms: int = 60_000) -> Series:
    sha = fingerprint(path)
    symbol = path.name.split("_")[1] if path.name.startswith(("spot_", "usdm_")) else path.name.split("_")[0]
    meta: dict[str, object] = dict(
        name=path.name.split(".")[0], kind="kline", symbol=symbol, interval_ms=interval_ms, source_sha256=sha
    )

    def build() -> Series:
        bars = bars_from_klines(kline_rows(load_klines(path)), interval_ms=interval_ms)
        return _bars_to_series(bars, **meta)

    return _cached(_cache_path(cache_dir, sha, interval_ms), build, meta)


@dataclass
class MarketSplit:
    train: list[Series] = field(default_factory=list)
    val: list[Series] = field(default_factory=list)
    test: list[Series] = field(default_factory=list)
    quiet_train: list[Series] = field(default_factory=list)
    quiet_val: list[Series] = field(default_factory=list)
    quiet_test: list[Series] = field(default_factory=list)

    def fingerprints(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for group in (self.train, self.val, self.test, self.quiet_train, self.quiet_val, self.quiet_test):
            for s in group:
                out[s.name.split("#")[0]] = s.source_sha256
        return out

    def describe(self) -> dict[str, list[str]]:
        return {
            k: [s.name for s in getattr(self, k)]
            for k in ("train", "val", "test", "quiet_train", "quiet_val", "quiet_test")
        }


def load_split(
    data_root: str | Path,
    n_test: int = 12,
    n_val: int = 6,
    cache_dir: Path | None = None,
    interval_ms: int = 5000,
    with_klines: bool = True,
) -> MarketSplit:
    """The frozen time-forward split described in the module docstring."""
    root = Path(data_root)
    files = list_pump_files(root)
    try:
        onsets = load_lamorgia_onsets(root)
    except FileNotFoundError:
        onsets = {}
    series = []
    for pf in files:
        log.info("features: %s", pf.stem)
        series.append(pump_series(pf, onsets, interval_ms, cache_dir))
    n = len(series)
    split = MarketSplit(
        train=series[: max(0, n - n_test - n_val)],
        val=series[max(0, n - n_test - n_val) : n - n_test],
        test=series[n - n_test :],
    )
    kdir = root / "binance-1m-klines"
    if with_klines and kdir.is_dir():
        for path in sorted(kdir.iterdir()):
            if not (path.name.endswith(".json.gz") or path.name.endswith(".feather")) or "_1m_" not in path.name:
                continue
            log.info("features: %s", path.name)
            s = kline_series(path, cache_dir)
            if "2021-09-17" in path.name:
                split.quiet_train.append(s)
            elif "2023-03-16" in path.name:
                t0, t1 = int(s.bar_ms[0]), int(s.bar_ms[-1]) + s.interval_ms
                mid = t0 + (t1 - t0) // 2
                split.quiet_train.append(s.with_segment(t0, mid, s.name + "#first-half"))
                split.quiet_val.append(s.with_segment(mid, t1, s.name + "#second-half"))
            else:
                split.quiet_test.append(s)
    return split


# ------------------------------------------------------------------------------------------------- windows


def windows_at(Xs: np.ndarray, idx: np.ndarray, window: int) -> np.ndarray:
    """Windows [len(idx), T, F] ending at the bar indices `idx` of a (scaled) feature matrix."""
    view = np.lib.stride_tricks.sliding_window_view(Xs, window, axis=0)  # [N-T+1, F, T]
    return np.ascontiguousarray(view[idx - window + 1].transpose(0, 2, 1))


def event_mask(s: Series, t_ms: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Decision times within [announce + lo, announce + hi] (all False for kline series)."""
    if s.announce_ms is None:
        return np.zeros(len(t_ms), bool)
    return (t_ms >= s.announce_ms + lo) & (t_ms <= s.announce_ms + hi)


def normal_ends(s: Series, window: int, stride: int) -> np.ndarray:
    idx = s.valid_ends(window)[::stride]
    if s.announce_ms is not None:
        t = s.decision_ms[idx]
        idx = idx[np.abs(t - s.announce_ms) > NORMAL_GUARD_MS]
    return idx


def anomaly_ends(s: Series, window: int, span_ms: int = TRAIN_ANOM_SPAN_MS) -> np.ndarray:
    """Bars whose window ends in [onset, onset + span_ms] of a visible pump."""
    if s.announce_ms is None or not s.pump_visible:
        return np.zeros(0, np.int64)
    idx = s.valid_ends(window)
    onset = s.onset_ms if s.onset_ms is not None else s.announce_ms
    t = s.decision_ms[idx]
    return idx[(t >= onset) & (t <= onset + span_ms)]
