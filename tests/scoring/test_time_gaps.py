"""`rmad score` and the window store on files with absurd holes and timestamps: bounded work, clear refusals."""

from __future__ import annotations

import csv
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.cli import main
from service.ingest.readers import ReaderError, read_events
from service.scoring.windows import WindowStore, apply_event

YEAR_MS = 365 * 86_400_000
T0 = 1_700_000_000_000


def _trades_csv(path: Path, times: list[int]) -> Path:
    rows = ["symbol,timestamp,datetime,side,price,amount,btc_volume"]
    rows += [f"XYZ/BTC,{t},x,buy,0.001,{i + 1}.0,0.001" for i, t in enumerate(times)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_rmad_score_with_a_one_year_hole_finishes_in_bounded_memory(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _trades_csv(tmp_path / "gap.csv", [T0, T0 + 1000, T0 + YEAR_MS])
    monkeypatch.setenv("RMAD_SCORING_WARMUP_BARS", "0")
    out = tmp_path / "out.csv"
    tracemalloc.start()
    try:
        rc = main(
            ["score", "--model", "market", "--model-dir", str(tiny_model_dir), "--input", str(path),
             "--format", "binance-trades-csv", "--output", str(out), "--quiet"]
        )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rc == 0
    assert peak < 64 * 2**20  # a bar per empty 5 s interval of the year would be 6.3 million bars
    rows = list(csv.DictReader(out.open()))
    assert 0 < len(rows) <= 720 + 2  # the hour of empty bars the gap cap allows, and the bar after the hole
    assert max(int(r["timestamp"]) for r in rows) > T0 + YEAR_MS  # the trade after the hole was scored


def test_a_year_5000_row_is_a_bad_row_with_its_reason(tmp_path: Path) -> None:
    path = _trades_csv(tmp_path / "future.csv", [T0, 95_617_584_000_000, T0 + 2000])
    with pytest.raises(ReaderError, match=r"future\.csv:2: bad_time: .*after now"):
        list(read_events(path, "binance-trades-csv"))
    bad: list[tuple[str, str, str]] = []
    got = list(read_events(path, "binance-trades-csv", on_bad=lambda *a: bad.append(a)))
    assert [e.event_time_ms for e in got] == [T0, T0 + 2000]
    assert [b[1] for b in bad] == ["bad_time"] and "95617584000000" in bad[0][0]


def test_window_store_gap_mark_flags_the_windows_after_the_hole() -> None:
    store = WindowStore(4, 27, 5000, warmup_bars=0, max_gap_ms=60_000)
    wins = []
    for i in range(10):
        wins += store.on_trade("k", T0 + i * 5000, 1.0 + i / 100, 1.0, True)
    wins += store.on_trade("k", T0 + YEAR_MS, 2.0, 1.0, True)
    wins += store.on_trade("k", T0 + YEAR_MS + 5000, 2.0, 1.0, True)
    assert len(wins) <= 10 + 12 + 1
    assert wins[-1].window_end_ms == T0 + YEAR_MS + 5000 and wins[-1].incomplete


ROW_TIMES = st.one_of(
    st.integers(-(10**15), 10**16),
    st.integers(-3_600_000, 3_600_000).map(lambda d: T0 + d),
    st.sampled_from([0, 1, 2**53, 95_617_584_000_000, T0 // 1000, T0 * 1000]),
)
ROW_NUMS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-1", "1e308", "1e-320", "abc", "", "0.001"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(ROW_TIMES, ROW_NUMS, ROW_NUMS, st.sampled_from(["buy", "sell", "x"])), max_size=30))
def test_replayed_rows_with_adversarial_times_and_numbers_stay_bounded(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[int, str, str, str]]
) -> None:
    """A recorded file of absurd rows, read and built into windows as replay and `rmad score` do: bad rows go to
    on_bad with a reason, nothing else escapes, and the bars built are bounded by the rows and the gap cap."""
    path = tmp_path_factory.mktemp("fuzz") / "rows.csv"
    lines = ["symbol,timestamp,datetime,side,price,amount,btc_volume"]
    lines += [f"XYZ/BTC,{t},x,{side},{p},{a},0" for t, p, a, side in rows]
    path.write_text("\n".join(lines) + "\n")
    cap_bars = 10
    store = WindowStore(2, 27, 5000, warmup_bars=0, max_gap_ms=cap_bars * 5000)
    reasons: list[str] = []
    n_events = n_windows = 0
    for ev in read_events(path, "binance-trades-csv", on_bad=lambda _raw, reason, _d: reasons.append(reason)):
        n_events += 1
        assert ev.event_time_ms <= int(time.time() * 1000) + 300_000
        try:
            n_windows += len(apply_event(store, ev))
        except ValueError:
            reasons.append("trade")  # a price or size no bar can hold (the worker counts these as bad)
    n_windows += len(store.flush())
    assert n_events + len(reasons) >= len(rows)
    assert n_windows <= (n_events + 1) * (cap_bars + 2)
