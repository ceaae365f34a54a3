"""Which model scores a recorded file: picked by what the input holds, or checked when the user names one.

Why a module of its own: `rmad score` without `--model` must choose the model that fits the input (trades ->
the trade-bar model `market`, klines -> the kline model `market-kline`), and a named model that cannot take the
input (the chain model on a market file, the kline model on trades, a candle interval the kline model was not
trained on, a model with no servable artifact) must be refused with a message naming what it needs, before any
window is built, never with a traceback from deep inside the scoring code.

What a file holds is known from its format where the format says it (trades CSV; kline CSV, freqtrade JSON,
feather, NAB CSV are candles), and read off its first market events where it does not (ws-frames, events-jsonl):
at most `PEEK_EVENTS` events are held to decide, then replayed in order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from service.schemas.market import Bar, Trade
from service.scoring.manifest import Manifest

InputKind = Literal["trades", "klines"]

#: the model each kind of input gets when no --model is given
DEFAULT_MODEL: dict[str, str] = {"trades": "market", "klines": "market-kline"}
FORMAT_KIND: dict[str, InputKind] = {
    "binance-trades-csv": "trades",
    "binance-kline-csv": "klines",
    "freqtrade-json": "klines",
    "feather": "klines",
    "nab-csv": "klines",
}
PEEK_EVENTS = 10_000
_DESCRIBE = {"trades": "exchange trades", "klines": "exchange klines (candles)"}


class ModelRefused(ValueError):
    """The model cannot score this input; the message says what the model needs and what to run instead."""


@dataclass
class Peeked:
    kind: InputKind
    interval_ms: int | None  # candle interval of the first bar (klines)
    events: Iterator[object]  # the whole stream again, peeked events first


def bar_interval_ms(bar: Bar) -> int:
    """A candle's interval from its open and close times (close given as the last millisecond or the next open)."""
    interval = bar.close_time_ms - bar.open_time_ms + 1
    return interval + 1 if interval % 1000 == 999 else interval


def peek(events: Iterator[object], fmt: str | None, source: str = "input") -> Peeked:
    """Read up to PEEK_EVENTS events to learn whether the stream holds trades or klines (and the candle
    interval); raise ModelRefused when it holds neither."""
    held: list[object] = []
    kind: InputKind | None = FORMAT_KIND.get(fmt or "")
    interval: int | None = None
    for ev in itertools.islice(events, PEEK_EVENTS):
        held.append(ev)
        if isinstance(ev, Trade):
            kind = kind or "trades"
            if kind == "trades":
                break
        elif isinstance(ev, Bar):
            kind = kind or "klines"
            interval = bar_interval_ms(ev)
            break
    if kind is None:
        what = "no events" if not held else f"no trades or klines in its first {len(held)} events"
        raise ModelRefused(
            f"{source}: {what}; the market models score trades (model market) or klines (model market-kline)"
        )
    return Peeked(kind, interval, itertools.chain(held, events))


def default_model(kind: InputKind) -> str:
    return DEFAULT_MODEL[kind]


def _fmt_interval(ms: float) -> str:
    s = ms / 1000
    if s >= 86_400 and s % 86_400 == 0:
        return f"{s / 86_400:g}d"
    if s >= 3600 and s % 3600 == 0:
        return f"{s / 3600:g}h"
    return f"{s / 60:g}m" if s >= 60 else f"{s:g}s"


def check_fit(m: Manifest, kind: InputKind, interval_ms: int | None) -> None:
    """Raise ModelRefused when model `m` cannot take this input; the message names what it needs."""
    name = f"model {m.name!r}"
    other = {"trades": "--model market", "klines": "--model market-kline"}[kind]
    if m.kind == "chain":
        raise ModelRefused(
            f"{name} scores on-chain transactions (chain events with address features), and this input holds "
            f"{_DESCRIBE[kind]}; omit --model to pick the model by input format, or use {other}"
        )
    if m.feature_set == "kline":
        if kind != "klines":
            raise ModelRefused(
                f"{name} takes exchange klines (OHLCV candles of "
                f"{', '.join(_fmt_interval(s * 1000) for s in m.bar_intervals_s or [m.bar_interval_s])}), and this "
                f"input holds {_DESCRIBE[kind]}; omit --model, or use --model market"
            )
        allowed = [round(s * 1000) for s in (m.bar_intervals_s or [m.bar_interval_s])]
        if interval_ms is not None and interval_ms not in allowed:
            raise ModelRefused(
                f"{name} takes candles of {', '.join(_fmt_interval(a) for a in allowed)}; this input's candles are "
                f"{_fmt_interval(interval_ms)} (resample them to one of those intervals first)"
            )


def describe_choice(model_name: str, version: str, kind: InputKind, chosen: bool) -> str:
    how = "picked by input format" if chosen else "as asked"
    return f"rmad score: input holds {_DESCRIBE[kind]}; scoring with {model_name}/{version} ({how})"
