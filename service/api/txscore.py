"""Transaction-level scoring: one trade or transfer judged for itself in its context, with the reasons.

Why next to the window model: the window model scores the market (or the address) around a transaction, so a 1x
and a 10,000x trade in the same minute got the same score. Here each transaction gets components on one scale
(robust z-like units: about 0-2 is usual, 3 worth a note, 5 worth watching, 8 an alert), the largest of which is
its score and the first reason given:

Trades (against the key's recent prints, `service.features.trade_context`):
- `size`: (ln size - median ln size) / robust spread of the recent sizes; only sizes above usual count.
- `price`: |ln(price / recent VWAP)| over half the recent high-low range (at least 5 bp); inside the range is < 2.
- `rush`: the trade is one of n fills in the same millisecond on the same side (a taker order eating the book):
  2 * log2(n) (two fills 2, eight fills 6).
- `wash`: an opposite-side print of exactly the same size within 60 s: 3 (a note: round sizes recur), 5 when it
  was at the same price within a second (one party on both sides, the pattern the worker's wash rule counts).

Chain transfers (against the sender's and receiver's address history in the state store):
- `value_vs_sender` / `value_vs_receiver`: 2 * log10(value / the address's average sent / received value);
  100x the usual is 4, 10,000x is 8.
- `fee_share`: fee / (value + fee) x 6 (a transfer that is mostly fee).
- `new_counterparty`: 2 when the receiver (or the sender) has no history at all, 3 when both are new.
The chain model scores the sender's address features *after* applying the transfer (`features_after`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from service.features.trade_context import TradeContext


@dataclass(frozen=True, slots=True)
class Tiers:
    """Score levels of a verdict, checked ordered (note < watch < alert) when made."""

    note: float
    watch: float
    alert: float

    def __post_init__(self) -> None:
        if not 0 < self.note < self.watch < self.alert:
            raise ValueError(f"tiers must be ordered 0 < note < watch < alert, got {self}")

    def verdict(self, score: float) -> str:
        if score >= self.alert:
            return "anomalous"
        if score >= self.watch:
            return "watch"
        if score >= self.note:
            return "note"
        return "normal"


TX_TIERS = Tiers(note=3.0, watch=5.0, alert=8.0)
WASH_WINDOW_MS = 60_000
MIN_HISTORY = 8  # recent prints needed before size and price are judged


@dataclass(frozen=True, slots=True)
class Driver:
    name: str
    score: float
    value: float
    typical: float | None
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "value": self.value, "typical": self.typical, "why": self.why}


@dataclass(slots=True)
class TxScore:
    drivers: list[Driver] = field(default_factory=list)
    context: int = 0  # recent prints (trades) or address history entries (chain) the judgement used

    @property
    def score(self) -> float:
        return max((d.score for d in self.drivers), default=0.0)

    @property
    def verdict(self) -> str:
        return TX_TIERS.verdict(self.score)

    def ranked(self) -> list[Driver]:
        return sorted(self.drivers, key=lambda d: -d.score)

    def as_dict(self) -> dict[str, Any]:
        ranked = self.ranked()
        return {
            "score": self.score,
            "verdict": self.verdict,
            "drivers": [d.as_dict() for d in ranked],
            "context": self.context,
            "summary": summary(ranked, self.context),
        }


def summary(ranked: list[Driver], context: int) -> str:
    if not ranked:
        return f"no context to judge this transaction against ({context} recent entries)"
    top = ranked[0]
    return f"driven by {top.name}: {top.why}"


def score_trade(ctx: TradeContext | None, ts_ms: int, price: float, size: float, buy: bool) -> TxScore:
    """The trade's components against its key's recent prints (none are judged without enough history)."""
    out = TxScore(context=0 if ctx is None else len(ctx))
    if ctx is None or not len(ctx):
        return out
    if len(ctx) >= MIN_HISTORY:
        logs = ctx.log_sizes()
        med = statistics.median(logs)
        mad = statistics.median(abs(x - med) for x in logs)
        spread = 1.4826 * mad + 0.25  # a floor: markets where every print is the same size
        z = (math.log(size) - med) / spread
        typical = math.exp(med)
        out.drivers.append(
            Driver(
                "size", max(0.0, z), size, typical, f"size {size:.6g} is {size / typical:.3g}x the usual {typical:.3g}"
            )
        )
        vwap, rng = ctx.vwap(), ctx.price_range()
        if vwap is not None and rng is not None:
            half = max(math.log(rng[1] / rng[0]) / 2.0, 5e-4)
            dev = math.log(price / vwap)
            out.drivers.append(
                Driver(
                    "price",
                    abs(dev) / half,
                    price,
                    vwap,
                    f"price {price:.6g} is {dev * 1e4:+.0f} bp from the recent VWAP {vwap:.6g} "
                    f"(range {rng[0]:.6g}-{rng[1]:.6g})",
                )
            )
    n = ctx.same_ms(ts_ms, buy) + 1
    if n >= 2:
        out.drivers.append(
            Driver(
                "rush",
                2.0 * math.log2(n),
                float(n),
                1.0,
                f"fill {n} of a same-millisecond {'buy' if buy else 'sell'} burst",
            )
        )
    mirror = ctx.mirror(ts_ms, size, buy, WASH_WINDOW_MS)
    if mirror is not None:
        same_price = abs(mirror[1] - price) <= 1e-9 * price
        tight = same_price and abs(ts_ms - mirror[0]) <= 1000
        out.drivers.append(
            Driver(
                "wash",
                5.0 if tight else 3.0,
                size,
                None,
                f"mirrors an opposite {'sell' if buy else 'buy'} of the same size "
                f"{abs(ts_ms - mirror[0]) / 1000:.3g} s away{' at the same price' if same_price else ''}",
            )
        )
    return out


def _ratio_driver(name: str, value: float, typical: float, who: str) -> Driver:
    ratio = (value + 1e-12) / (typical + 1e-12)
    return Driver(
        name, max(0.0, 2.0 * math.log10(ratio)), value, typical, f"{ratio:.3g}x the {who}'s average {typical:.6g}"
    )


def score_chain(sender: dict[str, float], receiver: dict[str, float] | None, value: float, fee: float) -> TxScore:
    """A transfer of `value` coins paying `fee` coins against both addresses' history (features, coins)."""
    sent = int(sender.get("Sent tnx", 0))
    received = 0 if receiver is None else int(receiver.get("Received Tnx", 0))
    out = TxScore(context=sent + received)
    if sent:
        out.drivers.append(_ratio_driver("value_vs_sender", value, sender.get("avg val sent", 0.0), "sender"))
    if receiver is not None and received:
        out.drivers.append(_ratio_driver("value_vs_receiver", value, receiver.get("avg val received", 0.0), "receiver"))
    if fee > 0.0:
        share = fee / (value + fee)
        out.drivers.append(Driver("fee_share", 6.0 * share, fee, None, f"the fee is {share:.1%} of what moves"))
    new_sender = not sender.get("first_seen_ms")
    new_receiver = receiver is not None and not receiver.get("first_seen_ms")
    if new_sender or new_receiver:
        who = " and ".join(w for w, new in (("sender", new_sender), ("receiver", new_receiver)) if new)
        out.drivers.append(
            Driver(
                "new_counterparty", 3.0 if new_sender and new_receiver else 2.0, 1.0, 0.0, f"the {who} has no history"
            )
        )
    return out


def features_after(
    feats: dict[str, float], value: float, fee: float, time_ms: int, receiver_new: bool
) -> dict[str, float]:
    """The sender's address features as they would be after this transfer (what the chain model scores)."""
    f = dict(feats)
    n = int(f.get("Sent tnx", 0))
    f["min val sent"] = value if n == 0 else min(f.get("min val sent", value), value)
    f["max val sent"] = max(f.get("max val sent", 0.0), value)
    f["avg val sent"] = (f.get("avg val sent", 0.0) * n + value) / (n + 1)
    f["Sent tnx"] = float(n + 1)
    f["total transactions (including tnx to create contract"] = (
        f.get("total transactions (including tnx to create contract", 0.0) + 1.0
    )
    f["total Ether sent"] = f.get("total Ether sent", 0.0) + value
    f["total ether balance"] = f.get("total ether balance", 0.0) - value - fee
    if receiver_new or n == 0:
        f["Unique Sent To Addresses"] = f.get("Unique Sent To Addresses", 0.0) + 1.0
    first, last = f.get("first_seen_ms") or time_ms, f.get("last_seen_ms") or time_ms
    f["Time Diff between first and last (Mins)"] = max(0.0, (max(time_ms, last) - min(first, time_ms)) / 60_000)
    if n >= 1:
        gap = max(0.0, (time_ms - last) / 60_000)
        f["Avg min between sent tnx"] = (f.get("Avg min between sent tnx", 0.0) * max(n - 1, 0) + gap) / n
    return f


_KIND = {"size": "volume_surge", "rush": "volume_surge", "price": "other", "wash": "other"}
_KIND.update(
    {n: "suspicious_transfer" for n in ("value_vs_sender", "value_vs_receiver", "fee_share", "new_counterparty")}
)
_RANK = {"normal": 0, "note": 1, "watch": 2, "anomalous": 3, "critical": 4}


def with_transaction(result: dict[str, Any], tx: TxScore, window_warm: bool) -> dict[str, Any]:
    """The scoring response with the transaction's own score: `transaction` filled, `verdict` the more severe of
    the transaction's and the window's (a window padded with typical values is context only, it cannot raise the
    verdict), and the explanation led by what drove the transaction's score."""
    d = tx.as_dict()
    result["transaction"] = d
    window_verdict = result["verdict"] if window_warm else "normal"
    if _RANK[d["verdict"]] > _RANK.get(window_verdict, 0) or (
        not window_warm and _RANK.get(result["verdict"], 0) > _RANK[d["verdict"]]
    ):
        result["verdict"] = d["verdict"]
        result["anomaly_type"] = result["severity"] = None
        if d["verdict"] == "anomalous":  # the transaction alone is an anomaly: say what kind, and how severe
            top = tx.ranked()[0].name
            result["anomaly_type"] = _KIND.get(top, "other")
            s = tx.score
            result["severity"] = "critical" if s >= 16 else "high" if s >= 12 else "medium"
            if s >= 16:
                result["verdict"] = "critical"
    result["explanation"] = (
        f"Transaction score {tx.score:.3g} ({d['verdict']}), {d['summary']}. Window: " + result["explanation"]
    )
    return result
