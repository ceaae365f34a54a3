"""Pump labels: La Morgia et al.'s announced pumps and hand-refined onset chunks, plus the other event lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True, slots=True)
class PumpEvent:
    symbol: str
    time_ms: int  # announced (or refined onset) time, UTC ms
    source: str


def _ms(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(ts, utc=True).dt.as_unit("ms").astype("int64")


def load_lamorgia_onsets(folder: str | Path, chunk: str = "25S") -> dict[tuple[str, str], int]:
    """(symbol, YYYY-MM-DD) -> refined onset ms (the chunk the authors flagged as the real start)."""
    root = Path(folder)
    p = root / f"onset_chunks_label_{chunk}.csv"
    if not p.exists():
        p = root / "lamorgia-pump-events" / f"onset_chunks_label_{chunk}.csv"
    df = pd.read_csv(p)
    ms = _ms(df["date"])
    return {(str(s), str(d)[:10]): int(m) for s, d, m in zip(df["symbol"], df["date"], ms, strict=True)}


def load_pump_telegram(folder: str | Path, exchange: str | None = "binance") -> list[PumpEvent]:
    root = Path(folder)
    p = root / "pump_telegram.csv"
    if not p.exists():
        p = root / "lamorgia-pump-events" / "pump_telegram.csv"
    df = pd.read_csv(p)
    if exchange:
        df = df[df["exchange"].str.lower() == exchange]
    ms = _ms(df["date"].astype(str) + " " + df["hour"].astype(str))
    return sorted(
        (PumpEvent(str(s), int(m), "lamorgia") for s, m in zip(df["symbol"], ms, strict=True)),
        key=lambda e: e.time_ms,
    )


def onset_for(onsets: dict[tuple[str, str], int], symbol: str, announce_ms: int, max_lead_ms: int = 300_000) -> int:
    """Refined onset for an announced pump when La Morgia has one within `max_lead_ms`, else the announced minute."""
    day = pd.Timestamp(announce_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d")
    t = onsets.get((symbol, day))
    if t is not None and abs(t - announce_ms) <= max_lead_ms:
        return t
    return announce_ms
