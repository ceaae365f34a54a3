"""`rmad score` and the window store on files with absurd holes and timestamps: bounded work, clear refusals."""

from __future__ import annotations

import csv
import tracemalloc
from pathlib import Path

import pytest

from service.cli import main
from service.ingest.readers import ReaderError, read_events
from service.scoring.windows import WindowStore

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
