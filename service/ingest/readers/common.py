"""What every reader shares: the format names, the bad-row contract, file opening, times, decimals."""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Literal

Format = Literal[
    "binance-trades-csv", "binance-kline-csv", "freqtrade-json", "feather", "nab-csv", "ws-frames", "events-jsonl"
]
FORMATS: tuple[Format, ...] = (
    "binance-trades-csv",
    "binance-kline-csv",
    "freqtrade-json",
    "feather",
    "nab-csv",
    "ws-frames",
    "events-jsonl",
)

# Called for a row that cannot be read: (raw text, reason code, detail). Without one, the reader raises.
BadRowHandler = Callable[[str, str, str], None]


class ReaderError(ValueError):
    """A file or row that cannot be read in the requested format; the message names the file and line."""


_INTERVALS = {
    1_000: "1s",
    60_000: "1m",
    180_000: "3m",
    300_000: "5m",
    900_000: "15m",
    1_800_000: "30m",
    3_600_000: "1h",
    7_200_000: "2h",
    14_400_000: "4h",
    86_400_000: "1d",
}
_INTERVAL_MS = {v: k for k, v in _INTERVALS.items()}


def interval_name(ms: int) -> str:
    return _INTERVALS.get(ms, f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms")


def open_text(path: Path) -> IO[str]:
    """UTF-8 text; undecodable bytes become U+FFFD, so a corrupt row fails as that row, not as the file."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return path.open("r", encoding="utf-8", errors="replace", newline="")


def file_stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".json", ".jsonl", ".feather", ".txt"):
        name = name.removesuffix(suffix)
    return name


_SYMBOL_IN_NAME = re.compile(r"(?:^|_)([A-Z0-9]{5,20})_(\d+[smhdw])(?:_|$)")


def symbol_from_name(path: Path) -> str:
    """`spot_BTCUSDT_1m_2021-...json.gz` -> BTCUSDT; `BTCUSDC_1m_2023....csv` -> BTCUSDC; else the file stem."""
    stem = file_stem(path)
    m = _SYMBOL_IN_NAME.search(stem)
    return m.group(1) if m else stem


def interval_from_name(path: Path) -> int | None:
    m = _SYMBOL_IN_NAME.search(file_stem(path))
    return _INTERVAL_MS.get(m.group(2)) if m else None


def to_ms(value: str) -> int:
    """Epoch s / ms / µs / ns (by magnitude) or an ISO-8601 / `YYYY-mm-dd HH:MM:SS[+00:00]` UTC time -> epoch ms."""
    text = value.strip()
    if text.replace(".", "", 1).isdigit():
        x = float(text)
        if x >= 1e17:  # ns
            return int(x // 1_000_000)
        if x >= 1e14:  # µs (data.binance.vision spot files from 2025 on)
            return int(x // 1_000)
        if x >= 1e11:  # ms
            return int(x)
        return int(x * 1000)  # s
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def to_decimal(text: str) -> Decimal:
    d = Decimal(text.strip())
    if not d.is_finite():
        raise InvalidOperation(text)
    return d


def bad_row(on_bad: BadRowHandler | None, path: Path, line: int, raw: str, reason: str, detail: str) -> None:
    if on_bad is None:
        raise ReaderError(f"{path}:{line}: {reason}: {detail}")
    on_bad(raw, reason, f"{path.name}:{line}: {detail}")
