"""Ingest settings: real exchange endpoints by default, lists from env as `A,B` or JSON, bad values refused."""

from __future__ import annotations

import pytest

from service.ingest.binance import BinanceConfig
from service.ingest.bybit import BybitConfig
from service.settings import SettingsError, load_settings


def test_defaults_are_the_real_endpoints() -> None:
    s = load_settings()
    assert s.binance_spot_ws_url == "wss://stream.binance.com:9443"
    assert s.binance_usdm_ws_url == "wss://fstream.binance.com"
    assert s.binance_spot_rest_url == "https://api.binance.com"
    assert s.binance_usdm_rest_url == "https://fapi.binance.com"
    assert s.bybit_spot_ws_url == "wss://stream.bybit.com/v5/public/spot"
    assert s.bybit_linear_ws_url == "wss://stream.bybit.com/v5/public/linear"
    assert s.binance_spot_max_msgs_per_s == 5 and s.binance_usdm_max_msgs_per_s == 10
    assert s.ingest_max_connection_age_s < 24 * 3600
    assert BinanceConfig.from_settings(s, "usdm").send_rate_per_s == 10
    assert BybitConfig.from_settings(s, "spot").topics("BTCUSDT") == [
        "publicTrade.BTCUSDT",
        "orderbook.50.BTCUSDT",
        "kline.1.BTCUSDT",
    ]


def test_lists_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMAD_INGEST_SYMBOLS", "btcusdt, ethusdt")
    monkeypatch.setenv("RMAD_INGEST_VENUES", '["bybit-linear"]')
    monkeypatch.setenv("RMAD_INGEST_STREAMS", "trades")
    s = load_settings()
    assert s.ingest_symbols == ["BTCUSDT", "ETHUSDT"]
    assert s.ingest_venues == ["bybit-linear"]
    assert BinanceConfig.from_settings(s, "spot").stream_names("BTCUSDT") == ["btcusdt@aggTrade"]


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("RMAD_INGEST_VENUES", "kraken"),
        ("RMAD_INGEST_SYMBOLS", "BTC/USDT"),
        ("RMAD_BINANCE_MAX_STREAMS_PER_CONNECTION", "2000"),
        ("RMAD_BYBIT_MAX_ARGS_PER_SUBSCRIBE", "11"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        load_settings()
