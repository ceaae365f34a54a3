"""Frozen crash events and calm periods for the kline model, transcribed from the data's SOURCE.md files before
any model output was looked at (../shared/data/binance-crash-klines, binance-1m-klines, binance-1m-klines-more).

An event is detected when an alert falls within +/- `TOLERANCE_MS` of its worst bar (the most negative
close-to-close return, bar labelled by its open time). Where SOURCE.md names the worst bar it is used as written;
where it names only a span (a slow slide, or the other symbol of a pair), the worst bar is the most negative
return inside that span, found from the prices alone (`resolve`). Secondary events ("also ..." lines and
up-moves) are neither detections nor false alarms: alerts near them are excluded from the false-alarm count.

Periods are the leave-one-period-out folds: every file of a period is scored by a model that did not see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

TOLERANCE_MS = 30 * 60_000
MERGE_MS = 10 * 60_000
#: Alerts this close to any event (primary or secondary) are not false alarms (the aftermath of a crash is no
#: calm market).
EXCLUDE_MS = 6 * 3_600_000


def ms(s: str) -> int:
    return int(datetime.strptime(s, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class Event:
    name: str
    symbol: str  # BTCUSDT | ETHUSDT
    worst_ms: int | None  # worst bar open time when SOURCE.md gives it
    span: tuple[int, int]  # search span [a, b] for the worst bar (and the event's extent)
    primary: bool = True  # False: secondary (excluded from false alarms, not counted as a detection target)


def _ev(name: str, sym: str, worst: str | None, a: str, b: str, primary: bool = True) -> Event:
    return Event(name, sym, None if worst is None else ms(worst), (ms(a), ms(b)), primary)


#: (period, interval, file name part) -> the folds
PERIODS: dict[str, tuple[str, tuple[str, ...]]] = {
    # crash-klines (5 m)
    "2021Q1": ("binance-crash-klines", ("spot_{s}_5m_2020-12-01_2021-04-19.json.gz",)),
    "2021mid": ("binance-crash-klines", ("spot_{s}_5m_2021-05-21_2021-07-17.json.gz",)),
    "2021Q3": ("binance-crash-klines", ("spot_{s}_5m_2021-09-02_2021-11-10.json.gz",)),
    "2022": ("binance-crash-klines", ("spot_{s}_5m_2022-01-01_2022-08-04.json.gz",)),
    "2022Q4": ("binance-crash-klines", ("spot_{s}_5m_2022-10-19_2023-04-17.json.gz",)),
    "2023": ("binance-crash-klines", ("spot_{s}_5m_2023-04-18_2023-12-30.feather",)),
    "2024Q1": ("binance-crash-klines", ("spot_{s}_5m_2024-01-01_2024-02-29.feather",)),
    "2025Q4": ("binance-crash-klines", ("spot_{s}_5m_2025-10-28_2026-02-19.feather",)),
    # 1 m months
    "1m-2020-06": ("binance-1m-klines-more", ("spot_{s}_1m_2020-05-21_2020-06-20.json.gz",)),
    "1m-2021-09": ("binance-1m-klines", ("spot_{s}_1m_2021-09-17_2021-10-17.json.gz",)),
    "1m-2023-03": ("binance-1m-klines", ("spot_{s}_1m_2023-03-16_2023-05-01.json.gz",)),
    "1m-2025-06": ("binance-1m-klines", ("spot_{s}_1m_2025-06-01_2025-07-01.feather",)),
    "1m-2026-03": ("binance-1m-klines-more", ("spot_{s}_1m_2026-03-23_2026-04-22.feather",)),
}
SYMBOLS = ("BTCUSDT", "ETHUSDT")

#: Calm stretches where every alert is a false alarm: (period, start, end) -> both symbols.
CALM: tuple[tuple[str, str, str], ...] = (
    ("2023", "2023-07-01 00:00", "2023-08-01 00:00"),
    ("2023", "2023-09-01 00:00", "2023-10-01 00:00"),
    ("1m-2023-03", "2023-03-16 00:00", "2023-05-01 23:59"),
    ("1m-2026-03", "2026-03-23 00:00", "2026-04-22 23:59"),
)

B, E = "BTCUSDT", "ETHUSDT"
EVENTS: dict[str, tuple[Event, ...]] = {
    "2021Q1": (
        _ev("2021-01-11", B, "2021-01-11 16:05", "2021-01-10 12:00", "2021-01-11 23:55"),
        _ev("2021-01-11", E, "2021-01-11 06:45", "2021-01-10 12:00", "2021-01-11 23:55"),
        _ev("2021-01-21/22", B, None, "2021-01-21 00:00", "2021-01-22 01:15"),
        _ev("2021-01-21/22", E, "2021-01-21 22:25", "2021-01-21 00:00", "2021-01-22 02:00"),
        _ev("2021-02-22/23", B, "2021-02-23 09:05", "2021-02-22 00:00", "2021-02-23 11:45"),
        _ev("2021-02-22/23", E, "2021-02-23 09:05", "2021-02-22 00:00", "2021-02-23 09:10"),
        _ev("2021-04-18", B, "2021-04-18 03:30", "2021-04-17 18:00", "2021-04-18 03:35"),
        _ev("2021-04-18", E, "2021-04-18 03:30", "2021-04-17 18:00", "2021-04-18 03:35"),
        _ev("2021-01-04", B, "2021-01-04 10:10", "2021-01-04 00:00", "2021-01-04 23:55", primary=False),
        _ev("2021-01-04", E, None, "2021-01-04 00:00", "2021-01-04 23:55", primary=False),
        _ev("2021-03-15", B, None, "2021-03-15 00:00", "2021-03-15 23:55", primary=False),
        _ev("2021-03-15", E, None, "2021-03-15 00:00", "2021-03-15 23:55", primary=False),
    ),
    "2021mid": (
        _ev("2021-05-21", B, "2021-05-21 14:15", "2021-05-21 00:00", "2021-05-21 21:20"),
        _ev("2021-05-21", E, None, "2021-05-21 00:00", "2021-05-21 21:20", primary=False),
        _ev("2021-05-23", B, "2021-05-23 12:50", "2021-05-23 00:00", "2021-05-23 16:40"),
        _ev("2021-05-23", E, "2021-05-23 12:40", "2021-05-23 00:00", "2021-05-23 16:40"),
        _ev("2021-06-21/22", B, "2021-06-21 06:25", "2021-06-21 00:00", "2021-06-22 13:55"),
        _ev("2021-06-21/22", E, None, "2021-06-21 00:00", "2021-06-22 13:55"),
    ),
    "2021Q3": (
        _ev("2021-09-07", B, "2021-09-07 15:05", "2021-09-07 03:15", "2021-09-07 15:10"),
        _ev("2021-09-20/21", B, None, "2021-09-20 00:00", "2021-09-21 21:20"),
        _ev("2021-10-28", B, "2021-10-28 18:35", "2021-10-28 00:00", "2021-10-28 23:55"),
    ),
    "2022": (
        _ev("2022-01-21/22", B, "2022-01-21 21:45", "2022-01-21 00:00", "2022-01-22 10:10"),
        _ev("2022-01-21/22", E, None, "2022-01-21 00:00", "2022-01-22 10:10"),
        _ev("2022-02-24", B, "2022-02-24 02:55", "2022-02-24 00:00", "2022-02-24 12:00"),
        _ev("2022-02-24", E, None, "2022-02-24 00:00", "2022-02-24 12:00"),
        _ev("2022-05 LUNA", B, "2022-05-11 12:30", "2022-05-09 00:00", "2022-05-12 05:15"),
        _ev("2022-05 LUNA", E, "2022-05-11 12:45", "2022-05-09 00:00", "2022-05-12 05:15"),
        _ev("2022-06 3AC", B, "2022-06-18 06:50", "2022-06-13 00:00", "2022-06-18 20:30"),
        _ev("2022-06 3AC", E, "2022-06-18 06:50", "2022-06-13 00:00", "2022-06-18 20:10"),
        _ev("2022-07-13 CPI", B, "2022-07-13 12:30", "2022-07-13 00:00", "2022-07-13 23:55"),
        _ev("2022-07-13 CPI", E, None, "2022-07-13 00:00", "2022-07-13 23:55", primary=False),
    ),
    "2022Q4": (
        _ev("2022-11 FTX a", B, "2022-11-08 19:20", "2022-11-08 00:00", "2022-11-08 23:55"),
        _ev("2022-11 FTX b", B, "2022-11-09 20:40", "2022-11-09 00:00", "2022-11-09 23:05"),
        _ev("2022-11 FTX", E, "2022-11-08 19:20", "2022-11-08 00:00", "2022-11-09 23:35"),
        _ev("2023-03 SVB", B, "2023-03-09 20:55", "2023-03-09 00:00", "2023-03-10 10:45"),
        _ev("2023-03 SVB", E, None, "2023-03-09 00:00", "2023-03-10 10:40"),
        _ev("2023-03-13/14 rally", B, None, "2023-03-13 00:00", "2023-03-14 23:55", primary=False),
        _ev("2023-03-13/14 rally", E, None, "2023-03-13 00:00", "2023-03-14 23:55", primary=False),
        _ev("2023-01-24", E, "2023-01-24 22:25", "2023-01-24 00:00", "2023-01-24 23:55", primary=False),
    ),
    "2023": (
        _ev("2023-08-17", B, "2023-08-17 21:40", "2023-08-17 00:00", "2023-08-17 21:45"),
        _ev("2023-08-17", E, "2023-08-17 21:40", "2023-08-17 00:00", "2023-08-17 21:45"),
        _ev("2023-06-30", B, "2023-06-30 13:35", "2023-06-30 00:00", "2023-06-30 23:55", primary=False),
        _ev("2023-12-11", E, "2023-12-11 02:10", "2023-12-11 00:00", "2023-12-11 23:55", primary=False),
    ),
    "2024Q1": (
        _ev("2024-01-03", B, "2024-01-03 12:05", "2024-01-03 09:35", "2024-01-03 12:10"),
        _ev("2024-01-03", E, "2024-01-03 12:05", "2024-01-03 09:35", "2024-01-03 12:10"),
        _ev("2024-01-11/12", B, None, "2024-01-11 00:00", "2024-01-12 22:20"),
        _ev("2024-01-11/12", E, None, "2024-01-11 00:00", "2024-01-12 22:20", primary=False),
    ),
    "2025Q4": (
        _ev("2025-11-21", B, "2025-11-21 07:30", "2025-11-20 00:00", "2025-11-21 12:25"),
        _ev("2025-11-21", E, None, "2025-11-20 00:00", "2025-11-21 12:25"),
        _ev("2026-02-01/02", B, None, "2026-01-31 00:00", "2026-02-02 03:40"),
        _ev("2026-02-01/02", E, "2026-02-01 23:05", "2026-01-31 00:00", "2026-02-02 03:40"),
        _ev("2026-02-05/06", B, "2026-02-06 00:10", "2026-02-05 00:00", "2026-02-06 00:15"),
        _ev("2026-02-05/06", E, "2026-02-06 00:10", "2026-02-05 00:00", "2026-02-06 00:20"),
    ),
    "1m-2020-06": (
        _ev("2020-06-02", B, "2020-06-02 14:46", "2020-06-02 00:00", "2020-06-02 15:29"),
        _ev("2020-06-02", E, "2020-06-02 14:52", "2020-06-02 00:00", "2020-06-02 14:52"),
        _ev("2020-06-11", B, "2020-06-11 16:59", "2020-06-11 00:00", "2020-06-11 23:59", primary=False),
        _ev("2020-06-11", E, None, "2020-06-11 00:00", "2020-06-11 23:59", primary=False),
    ),
    "1m-2021-09": (
        _ev("2021-09-20/21", B, None, "2021-09-20 00:00", "2021-09-20 12:38"),
        _ev("2021-09-20/21", E, None, "2021-09-20 00:00", "2021-09-21 23:59"),
    ),
    "1m-2023-03": (),
    "1m-2025-06": (
        _ev("2025-06-21/22", E, "2025-06-21 21:24", "2025-06-21 00:00", "2025-06-22 23:59"),
        _ev("2025-06-21/22", B, None, "2025-06-21 00:00", "2025-06-22 23:59", primary=False),
    ),
    "1m-2026-03": (),
}


def resolve(ev: Event, bar_ms: np.ndarray, close: np.ndarray) -> int:
    """The event's worst bar open time: as written in SOURCE.md, else the most negative close-to-close return
    inside its span (prices only)."""
    if ev.worst_ms is not None:
        return ev.worst_ms
    a, b = ev.span
    r = np.diff(np.log(close), prepend=np.log(close[0]))
    m = (bar_ms >= a) & (bar_ms <= b)
    if not m.any():
        return a
    idx = np.flatnonzero(m)
    return int(bar_ms[idx[int(np.argmin(r[idx]))]])
