"""Loaders for every market-data format in ../shared/data, the simulator's labelled output, and pump labels.

Training-side only (pandas/pyarrow); paths always come in as arguments, nothing here knows where the data lives.
"""

from models.data.fingerprint import fingerprint
from models.data.klines import load_binanceus_csv, load_feather_klines, load_freqtrade_json, load_klines
from models.data.labels import PumpEvent, load_lamorgia_onsets, load_pump_telegram
from models.data.trades import NO_PUMP_VISIBLE, PumpFile, list_pump_files, load_trades

__all__ = [
    "NO_PUMP_VISIBLE",
    "PumpEvent",
    "PumpFile",
    "fingerprint",
    "list_pump_files",
    "load_binanceus_csv",
    "load_feather_klines",
    "load_freqtrade_json",
    "load_klines",
    "load_lamorgia_onsets",
    "load_pump_telegram",
    "load_trades",
]
