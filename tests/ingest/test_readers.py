"""Readers: project-made fixture files in every format, plus `data`-marked checks on the real files."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import sys
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.ingest.readers import ReaderError, read_events, sniff_format, symbol_from_name
from service.ingest.simulator import SimConfig, generate_files
from service.schemas.market import Bar, BookUpdate, Trade

TRADES_HEADER = "symbol,timestamp,datetime,side,price,amount,btc_volume\n"


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def test_binance_trades_csv_exact_decimals_ids_and_bad_rows(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "OAX_2020-01-01_18.00.csv.gz",
        TRADES_HEADER
        + "OAX/BTC,1605549866174,2020-11-16T18:04:26.174Z,buy,1.36e-06,335.0,0.0004556\n"
        + "OAX/BTC,1605549866174,2020-11-16T18:04:26.174Z,sell,0.00000137,0.10000000,0.000000137\n"
        + "OAX/BTC,notatime,x,buy,1,1,1\n"
        + "OAX/BTC,1605549866200,2020-11-16T18:04:26.200Z,hold,1,1,1\n"
        + "ETH/BTC,1605549866300,2020-11-16T18:04:26.300Z,sell,0.03,2,0.06\n",
    )
    assert sniff_format(p) == "binance-trades-csv"
    bad: list[tuple[str, str, str]] = []
    events = list(read_events(p, on_bad=lambda raw, reason, detail: bad.append((raw, reason, detail))))
    assert [type(e) for e in events] == [Trade, Trade, Trade]
    t0, t1, t2 = events
    assert isinstance(t0, Trade) and isinstance(t1, Trade) and isinstance(t2, Trade)
    assert (t0.venue, t0.symbol, t0.price, t0.size, t0.side) == (
        "binance-spot",
        "OAXBTC",
        Decimal("1.36e-06"),
        Decimal("335.0"),
        "buy",
    )
    assert t1.price == Decimal("0.00000137") and str(t1.size) == "0.10000000"  # nothing lost
    assert t0.event_time_ms == t1.event_time_ms == 1605549866174  # same-millisecond trades stay distinct
    assert [t0.trade_id, t1.trade_id, t2.trade_id] == ["1", "2", "5"]  # row numbers: stable, unique
    assert [b[1] for b in bad] == ["bad_row", "bad_row"] and "notatime" in bad[0][0] and "hold" in bad[1][2]
    only = list(read_events(p, symbol="ETH/BTC", on_bad=lambda *a: None))
    assert len(only) == 1 and only[0].symbol == "ETHBTC"
    with pytest.raises(ReaderError, match=r"\.csv\.gz:4: bad_row"):
        list(read_events(p))  # without a handler a bad row raises, naming the line


def test_kline_csv_headed_iso_and_headless_binance_vision(tmp_path: Path) -> None:
    headed = _write(
        tmp_path / "BTCUSDC_1m_20230301_20230321.csv",
        "open_time,open,high,low,close,volume\n"
        "2023-03-01 00:00:00+00:00,23143.82,23152.65,23140.02,23152.65,0.26395\n"
        "2023-03-01 00:01:00+00:00,23152.65,23152.65,23152.65,23152.65,0.0\n",
    )
    bars = list(read_events(headed))
    assert sniff_format(headed) == "binance-kline-csv"
    assert all(isinstance(b, Bar) for b in bars) and len(bars) == 2
    b0 = bars[0]
    assert isinstance(b0, Bar)
    assert (b0.symbol, b0.interval, b0.open_time_ms, b0.close_time_ms) == (
        "BTCUSDC",
        "1m",
        1677628800000,
        1677628859999,
    )
    assert b0.event_time_ms == b0.close_time_ms and b0.high == Decimal("23152.65")
    # data.binance.vision: no header, 12 columns; spot files from 2025 on use microseconds
    headless = _write(
        tmp_path / "ETHUSDT-5m-2025-01-01.csv",
        "1735689600000000,3337.78,3341.64,3335.00,3339.88,1012.5,1735689899999999,3379000.1,4321,500.25,1669000.5,0\n"
        "1735689900000000,3339.88,3345.00,3339.00,3344.10,800.0,1735690199999999,2675000.0,3000,400.0,1337000.0,0\n",
    )
    bars = list(read_events(headless, "binance-kline-csv", symbol="ETHUSDT"))
    b0, b1 = bars
    assert isinstance(b0, Bar) and isinstance(b1, Bar)
    assert b0.open_time_ms == 1735689600000 and b0.interval == "5m" and b0.close_time_ms == 1735689899999
    assert (b0.trades, b0.quote_volume, b0.taker_buy_volume) == (4321, Decimal("3379000.1"), Decimal("500.25"))
    inconsistent = _write(
        tmp_path / "X_1m_bad.csv", "open_time,open,high,low,close,volume\n1700000000000,10,9,8,10,1\n"
    )
    with pytest.raises(ReaderError, match="inconsistent candle"):
        list(read_events(inconsistent))


def test_freqtrade_json_streams_across_chunk_boundaries(tmp_path: Path) -> None:
    rows = [
        [1631917380000 + 60_000 * i, 47336.47 + i, 47336.48 + i, 47295.0, 47310.83, 8.83233 + i] for i in range(300)
    ]
    p = _write(tmp_path / "spot_BTCUSDT_1m_2021-09-17_2021-10-17.json.gz", json.dumps(rows, separators=(",", ":")))
    assert sniff_format(p) == "freqtrade-json" and symbol_from_name(p) == "BTCUSDT"
    from service.ingest.readers import read_freqtrade_json

    small = list(read_freqtrade_json(p, chunk_chars=37))  # every row straddles a chunk boundary somewhere
    full = list(read_events(p))
    assert small == full and len(full) == 300
    last = full[-1]
    assert isinstance(last, Bar)
    assert last.open == Decimal(repr(rows[-1][1])) and last.volume == Decimal(repr(rows[-1][5]))
    assert last.open_time_ms == rows[-1][0] and last.interval == "1m"
    notarray = _write(tmp_path / "x.json", '{"a": 1}')
    with pytest.raises(ReaderError, match="not a freqtrade JSON array"):
        list(read_events(notarray))


def test_feather_reads_batches_and_explains_missing_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.feather as feather

    ts = pa.array([1748798400000000000 + i * 60_000_000_000 for i in range(5)], type=pa.timestamp("ns", tz="UTC"))
    table = pa.table(
        {
            "date": ts,
            "open": [105137.2, 1.0, 2.0, 3.0, 4.0],
            "high": [105137.21, 1.5, 2.5, 3.5, 4.5],
            "low": [105120.41, 0.5, 1.5, 2.5, 3.5],
            "close": [105121.96, 1.0, 2.0, 3.0, 4.0],
            "volume": [2.14669, 1.0, 1.0, 1.0, 1.0],
        }
    )
    p = tmp_path / "spot_ETHUSDT_1m_2025-06-01_2025-07-01.feather"
    feather.write_feather(table, p, chunksize=2)  # three record batches
    bars = list(read_events(p))
    assert len(bars) == 5 and sniff_format(p) == "feather"
    b0 = bars[0]
    assert isinstance(b0, Bar)
    assert (b0.symbol, b0.open_time_ms, b0.open, b0.volume) == (
        "ETHUSDT",
        1748798400000,
        Decimal("105137.2"),
        Decimal("2.14669"),
    )
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as on a runtime-only install
    with pytest.raises(ReaderError, match="needs pyarrow"):
        list(read_events(p))


def test_nab_csv_values_become_flat_bars(tmp_path: Path) -> None:
    p = _write(tmp_path / "nyc_taxi.csv", "timestamp,value\n2014-07-01 00:00:00,10844\n2014-07-01 00:30:00,8127.5\n")
    assert sniff_format(p) == "nab-csv"
    b0, b1 = list(read_events(p))
    assert isinstance(b0, Bar) and isinstance(b1, Bar)
    assert (b0.venue, b0.symbol, b0.interval) == ("nab", "nyc_taxi", "30m")
    assert b1.close == b1.open == b1.high == b1.low == Decimal("8127.5") and b1.volume == 0
    assert b1.open_time_ms == 1404174600000


def _kline(closed: bool, event_ms: int) -> dict[str, object]:
    k = {"t": 1633998480000, "T": 1633998539999, "s": "NKNUSDT", "i": "1m", "f": 1, "L": 2, "o": "0.35", "c": "0.36"}
    k |= {"h": "0.37", "l": "0.34", "v": "10", "n": 2, "x": closed, "q": "3.5", "V": "5", "Q": "1.7", "B": "0"}
    return {"stream": "nknusdt@kline_1m", "data": {"e": "kline", "E": event_ms, "s": "NKNUSDT", "k": k}}


_DEPTH = {"e": "depthUpdate", "E": 1633998512068, "s": "NKNUSDT", "U": 499869750, "u": 499869752}
_AGG = {"e": "aggTrade", "E": 1633998523963, "s": "NKNUSDT", "a": 15683430, "p": "0.35280000", "q": "58.00000000"}
_AGG |= {"f": 19862790, "l": 19862790, "T": 1633998523963, "m": True, "M": True}
WS_FILE = "\n".join(
    [
        "wss://stream.binance.com:9443/stream?streams=nknusdt@depth@100ms/nknusdt@aggTrade <-> 1633998511.1",
        "1633998512.0633569: "
        + json.dumps({"stream": "nknusdt@depth@100ms", "data": _DEPTH | {"b": [["0.35130000", "6195.0"]], "a": []}}),
        "1633998523.957215: " + json.dumps({"stream": "nknusdt@aggTrade", "data": _AGG}),
        "1633998524.0: " + json.dumps(_kline(False, 1633998524000)),
        "1633998540.1: " + json.dumps(_kline(True, 1633998540050)),
        '1633998541.0: {"stream":"nknusdt@aggTrade","data":{garbage',
        "",
    ]
)


def test_ws_frames_go_through_the_live_parser(tmp_path: Path) -> None:
    p = _write(tmp_path / "recorded.ws.txt", WS_FILE)
    assert sniff_format(p) == "ws-frames"
    bad: list[tuple[str, str, str]] = []
    events = list(read_events(p, on_bad=lambda raw, reason, detail: bad.append((raw, reason, detail))))
    assert [type(e).__name__ for e in events] == ["BookUpdate", "Trade", "Bar"]  # the open kline is not a bar
    upd, trade, bar = events
    assert isinstance(upd, BookUpdate) and upd.first_update_id == 499869750 and upd.ingest_time_ms == 1633998512063
    assert isinstance(trade, Trade) and trade.side == "sell" and trade.price == Decimal("0.35280000")
    assert trade.venue == "binance-spot" and trade.ingest_time_ms == 1633998523957  # the recorded receive time
    assert isinstance(bar, Bar) and bar.close_time_ms == 1633998539999
    assert len(bad) == 1 and bad[0][1] == "invalid_json" and bad[0][0].endswith("{garbage")
    fut = _write(tmp_path / "fut.txt", WS_FILE.replace("wss://stream.binance.com:9443", "wss://fstream.binance.com"))
    assert {e.venue for e in read_events(fut, on_bad=lambda *a: None)} == {"binance-usdm"}


def test_events_jsonl_round_trips_the_simulator(tmp_path: Path) -> None:
    res = generate_files(SimConfig(duration_s=120, anomalies=()), tmp_path)
    back = list(read_events(res.events))
    assert sniff_format(res.events) == "events-jsonl"
    assert len(back) == sum(res.counts.values())
    assert {type(e).__name__ for e in back} == {"Trade", "BookTop", "Bar"}
    only = list(read_events(res.events, symbol="ETHUSDT"))
    assert only and {e.symbol for e in only} == {"ETHUSDT"}


def test_unknown_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="no such file"):
        list(read_events(tmp_path / "nope.csv"))
    odd = _write(tmp_path / "data.bin", "x")
    with pytest.raises(ReaderError, match="cannot tell the format"):
        list(read_events(odd))
    with pytest.raises(ReaderError, match="unknown format"):
        list(read_events(odd, "parquet"))


def test_trade_reader_memory_stays_flat(tmp_path: Path) -> None:
    """A 60k-row file is read with a peak far below what holding its rows would take."""
    p = tmp_path / "BIG_2021-01-01_00.00.csv.gz"
    with gzip.open(p, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TRADES_HEADER.strip().split(","))
        for i in range(60_000):
            w.writerow(
                ["BIG/BTC", 1609459200000 + i, "x", "buy" if i % 3 else "sell", "0.00001234", "100.5", "0.00124"]
            )
    tracemalloc.start()
    n = sum(1 for _ in read_events(p))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 60_000
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes: the reader holds rows it should stream"


# ------------------------------------------------------------------------------------- real files (data)


@pytest.mark.data
def test_real_pump_trades(shared_data: Path) -> None:
    p = shared_data / "binance-pump-trades" / "trades" / "APPC_2020-11-18_18.00.csv.gz"
    if not p.exists():
        pytest.skip(f"{p} absent")
    n, last_ts, first = 0, 0, None
    for e in read_events(p):
        assert isinstance(e, Trade) and e.symbol == "APPCBTC" and e.price > 0
        first = first or e
        assert e.event_time_ms >= last_ts - 60_000  # file order is (almost) time order
        last_ts = e.event_time_ms
        n += 1
    assert first is not None and first.price == Decimal("0.00000136") and first.event_time_ms == 1605549866174
    assert n > 5000


@pytest.mark.data
def test_real_kline_files(shared_data: Path) -> None:
    depeg = shared_data / "binanceus-usdc-depeg-2023-03" / "BTCUSDC_1m_20230301_20230321.csv"
    bars = [e for e in read_events(depeg) if isinstance(e, Bar)]
    assert len(bars) == 30_240 and {b.interval for b in bars} == {"1m"} and bars[0].symbol == "BTCUSDC"
    assert all(b2.open_time_ms - b1.open_time_ms == 60_000 for b1, b2 in itertools.pairwise(bars))
    ft = shared_data / "binance-1m-klines" / "spot_ETHUSDT_1m_2021-09-17_2021-10-17.json.gz"
    n = sum(1 for e in read_events(ft) if isinstance(e, Bar) and e.symbol == "ETHUSDT")
    assert n > 40_000
    fe = shared_data / "binance-1m-klines" / "spot_BTCUSDT_1m_2025-06-01_2025-07-01.feather"
    if "pyarrow" in sys.modules or _has_pyarrow():
        fb = list(read_events(fe))
        assert len(fb) > 40_000 and fb[0].symbol == "BTCUSDT"


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


@pytest.mark.data
def test_real_ws_frames_and_nab(shared_data: Path) -> None:
    spot = shared_data / "ws-recorded-messages" / "cryptofeed_BINANCE.ws.1.0.txt"
    fut = shared_data / "ws-recorded-messages" / "cryptofeed_BINANCE_FUTURES.ws.1.0.txt"
    bad: list[tuple[str, str, str]] = []
    se = list(read_events(spot, on_bad=lambda *a: bad.append(a)))
    fe = list(read_events(fut, on_bad=lambda *a: bad.append(a)))
    assert not bad  # every real frame parses
    assert sum(isinstance(e, BookUpdate) for e in se) == 177 and sum(isinstance(e, Trade) for e in se) == 2
    assert sum(isinstance(e, Trade) for e in fe) == 91 and all(e.venue == "binance-usdm" for e in fe)
    assert all(e.prev_final_update_id is not None for e in fe if isinstance(e, BookUpdate))
    nab = shared_data / "nab" / "data" / "realKnownCause" / "nyc_taxi.csv"
    nb = list(read_events(nab))
    assert len(nb) == 10_320 and nb[0].symbol == "nyc_taxi"


_HEADS = {
    "binance-trades-csv": TRADES_HEADER.encode(),
    "binance-kline-csv": b"open_time,open,high,low,close,volume\n",
    "nab-csv": b"timestamp,value\n",
    "freqtrade-json": b"[",
    "ws-frames": b"wss://stream.binance.com:9443/stream?streams=x <-> 1\n",
    "events-jsonl": b"",
    "feather": b"ARROW1",
}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    fmt=st.sampled_from(sorted(_HEADS)),
    body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    with_head=st.booleans(),
    gz=st.booleans(),
)
def test_garbage_never_escapes_as_anything_but_reader_error(
    tmp_path_factory: pytest.TempPathFactory, fmt: str, body: bytes, with_head: bool, gz: bool
) -> None:
    """Whatever a file holds, a reader yields events, hands bad rows to on_bad, or raises ReaderError: a replay or
    `rmad score` never dies of an IndexError deep inside."""
    d = tmp_path_factory.mktemp("garbage")
    data = (_HEADS[fmt] if with_head else b"") + body
    path = d / ("f.dat.gz" if gz else "f.dat")
    path.write_bytes(gzip.compress(data) if gz and len(body) % 2 else data)  # sometimes a name that lies
    try:
        for ev in read_events(path, fmt, on_bad=lambda raw, reason, detail: None):
            assert ev.event_time_ms is not None
    except ReaderError:
        pass
