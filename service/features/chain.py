"""Address activity features: their names, definitions and the exact aggregates both computing paths reduce to.

Why these names: `CHAIN_FEATURES` are spelt exactly like the columns of the Ethereum fraud-accounts dataset
(../shared/data/ethereum-fraud-accounts/transaction_dataset.csv, trailing space of "max value received " included)
where they mean the same thing, so a model trained on that file scores live addresses with the same features. The
dataset's ERC20 and "sent to contract" columns need token-transfer logs or contract code lookups that ingest does
not do, so they are not here. `WINDOW_FEATURES` (in/out degree and weighted degree over the last 1 h and 24 h of
chain time) and first/last seen are extra live signals; `ACTIVITY_FEATURES` is everything `address_features`
returns.

Definitions (one transaction is split into per-address legs by `legs`):
- Ethereum: only successful transactions (status 1) count; a reverted one moved no value. A plain transaction is a
  sent leg for `from` (counterparty `to`) and a received leg for `to` (counterparty `from`); a contract creation
  counts as a created contract for the creator (not a sent tx, as in the dataset, where total transactions =
  sent + received + created) and as a received leg for the new contract.
- Bitcoin: an address spending inputs sent `inputs - outputs back to itself` (change nets out) to the other output
  addresses; an output address that spent nothing received its outputs from the input addresses (none for coinbase).
- Values are in coins (ether, bitcoin), computed from exact integer sums of wei / satoshi; "Avg min between sent
  tnx" is (last - first sent time) / (sent - 1) in minutes, 0 below two transactions.
- Degree = transactions in the window, weighted degree = value in the window (coins), windows ending at the chain's
  clock (the newest block time applied), so replays and live runs agree.
- Unique counterparties are HyperLogLog counts in Redis (about 0.8 % standard error, exact for small sets in
  practice) and exact in the in-process store and in `features_from_transactions`.

The incremental path (a state store script per transaction, applied once each) is service.features.chain_store;
`features_from_transactions` here recomputes the same features from scratch and is what it is tested against.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.schemas.chain import UNIT_DECIMALS, Chain, ChainTx

#: Columns of the fraud-accounts dataset this module computes, in the dataset's order (model inputs).
CHAIN_FEATURES: tuple[str, ...] = (
    "Avg min between sent tnx",
    "Avg min between received tnx",
    "Time Diff between first and last (Mins)",
    "Sent tnx",
    "Received Tnx",
    "Number of Created Contracts",
    "Unique Received From Addresses",
    "Unique Sent To Addresses",
    "min value received",
    "max value received ",
    "avg val received",
    "min val sent",
    "max val sent",
    "avg val sent",
    "total transactions (including tnx to create contract",
    "total Ether sent",
    "total ether received",
    "total ether balance",
)

WINDOWS_S: tuple[tuple[str, int], ...] = (("1h", 3600), ("24h", 86400))
WINDOW_FEATURES: tuple[str, ...] = tuple(
    f"{name}_{w}"
    for w, _ in WINDOWS_S
    for name in ("out_degree", "in_degree", "out_weighted_degree", "in_weighted_degree")
)
ACTIVITY_FEATURES: tuple[str, ...] = (*CHAIN_FEATURES, *WINDOW_FEATURES, "first_seen_ms", "last_seen_ms")

#: Bump when a definition above changes without a name changing.
SPEC_VERSION = 1
SPEC_HASH = hashlib.sha256(repr((SPEC_VERSION, CHAIN_FEATURES, WINDOW_FEATURES, WINDOWS_S)).encode()).hexdigest()

# What a chain model consumes, so training and serving agree: the CHAIN_FEATURES row of one address, transformed
# by sign(x)*log1p(|x|), robust-scaled with the manifest's centre/scale, shaped [B, 1, F] (T = 1).
CHAIN_MODEL_TRANSFORM = "signed_log1p"
CHAIN_MODEL_LAYOUT = "address_row"
CHAIN_SPEC_HASH = hashlib.sha256(
    json.dumps(
        {"names": list(CHAIN_FEATURES), "transform": CHAIN_MODEL_TRANSFORM, "layout": CHAIN_MODEL_LAYOUT},
        sort_keys=True,
    ).encode()
).hexdigest()


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """The chain model's input transform: tames amounts spanning 20 orders of magnitude, keeps the sign."""
    out: np.ndarray = np.sign(x) * np.log1p(np.abs(x))
    return out


LONGEST_WINDOW_MS = max(s for _, s in WINDOWS_S) * 1000
GWEI = 10**9  # sums are kept as two int64 halves (value // 1e9, value % 1e9) so HINCRBY never overflows


# ----------------------------------------------------------------------------------------------------------- legs
@dataclass(frozen=True, slots=True)
class Leg:
    """What one transaction means for one address."""

    address: str
    sent: int | None = None  # smallest units sent, None when the address did not send
    received: int | None = None
    created: bool = False
    to: tuple[str, ...] = ()  # counterparties sent to
    frm: tuple[str, ...] = ()  # counterparties received from


def legs(tx: ChainTx) -> list[Leg]:
    """Split one transaction into per-address legs (see the module docstring for the rules)."""
    if tx.chain == Chain.ETHEREUM:
        return _eth_legs(tx)
    return _btc_legs(tx)


def _eth_legs(tx: ChainTx) -> list[Leg]:
    if tx.status == 0 or not tx.from_address:
        return []
    frm = tx.from_address
    if tx.to_address is None:
        created = tx.contract_address
        out = [Leg(frm, created=True)]
        if created:
            out.append(Leg(created, received=tx.value, frm=(frm,)))
        return out
    to = tx.to_address
    if to == frm:
        return [Leg(frm, sent=tx.value, received=tx.value, to=(to,), frm=(frm,))]
    return [Leg(frm, sent=tx.value, to=(to,)), Leg(to, received=tx.value, frm=(frm,))]


def _btc_legs(tx: ChainTx) -> list[Leg]:
    spent: dict[str, int] = {}
    for i in tx.inputs:
        if i.address:
            spent[i.address] = spent.get(i.address, 0) + i.value
    got: dict[str, int] = {}
    for o in tx.outputs:
        if o.address:
            got[o.address] = got.get(o.address, 0) + o.value
    senders = tuple(sorted(spent))
    out: list[Leg] = []
    for a in senders:
        out.append(Leg(a, sent=max(spent[a] - got.get(a, 0), 0), to=tuple(sorted(x for x in got if x != a))))
    for a in sorted(got):
        if a not in spent:
            out.append(Leg(a, received=got[a], frm=senders))
    return out


# ----------------------------------------------------------------------------------------------- the aggregates
@dataclass
class Aggregate:
    """The exact per-address state both paths (Redis and recomputation) reduce to before making floats."""

    sent_n: int = 0
    recv_n: int = 0
    created_n: int = 0
    sent_sum: int = 0
    recv_sum: int = 0
    sent_min: int | None = None
    sent_max: int | None = None
    recv_min: int | None = None
    recv_max: int | None = None
    sent_t0: int | None = None
    sent_t1: int | None = None
    recv_t0: int | None = None
    recv_t1: int | None = None
    t0: int | None = None
    t1: int | None = None
    uniq_to: int = 0
    uniq_from: int = 0
    # (time ms, value) per transaction in the longest window, per direction
    out_win: list[tuple[int, int]] = field(default_factory=list)
    in_win: list[tuple[int, int]] = field(default_factory=list)


def _coins(units: int, decimals: int) -> float:
    scale: int = 10**decimals
    return units / scale


def _avg_minutes(t0: int | None, t1: int | None, n: int) -> float:
    if n < 2 or t0 is None or t1 is None:
        return 0.0
    return (t1 - t0) / (n - 1) / 60000.0


def finish(agg: Aggregate, chain: str, now_ms: int) -> dict[str, float]:
    """Turn exact aggregates into the feature dict (the one place floats are made)."""
    d = UNIT_DECIMALS[chain]
    scale = 10**d
    f: dict[str, float] = {
        "Avg min between sent tnx": _avg_minutes(agg.sent_t0, agg.sent_t1, agg.sent_n),
        "Avg min between received tnx": _avg_minutes(agg.recv_t0, agg.recv_t1, agg.recv_n),
        "Time Diff between first and last (Mins)": (
            (agg.t1 - agg.t0) / 60000.0 if agg.t0 is not None and agg.t1 is not None else 0.0
        ),
        "Sent tnx": float(agg.sent_n),
        "Received Tnx": float(agg.recv_n),
        "Number of Created Contracts": float(agg.created_n),
        "Unique Received From Addresses": float(agg.uniq_from),
        "Unique Sent To Addresses": float(agg.uniq_to),
        "min value received": _coins(agg.recv_min or 0, d),
        "max value received ": _coins(agg.recv_max or 0, d),
        "avg val received": float(agg.recv_sum / (agg.recv_n * scale)) if agg.recv_n else 0.0,
        "min val sent": _coins(agg.sent_min or 0, d),
        "max val sent": _coins(agg.sent_max or 0, d),
        "avg val sent": float(agg.sent_sum / (agg.sent_n * scale)) if agg.sent_n else 0.0,
        "total transactions (including tnx to create contract": float(agg.sent_n + agg.recv_n + agg.created_n),
        "total Ether sent": _coins(agg.sent_sum, d),
        "total ether received": _coins(agg.recv_sum, d),
        "total ether balance": _coins(agg.recv_sum - agg.sent_sum, d),
    }
    for w, seconds in WINDOWS_S:
        lo = now_ms - seconds * 1000
        outs = [v for t, v in agg.out_win if lo <= t <= now_ms]
        ins = [v for t, v in agg.in_win if lo <= t <= now_ms]
        f[f"out_degree_{w}"] = float(len(outs))
        f[f"in_degree_{w}"] = float(len(ins))
        f[f"out_weighted_degree_{w}"] = _coins(sum(outs), d)
        f[f"in_weighted_degree_{w}"] = _coins(sum(ins), d)
    f["first_seen_ms"] = float(agg.t0 or 0)
    f["last_seen_ms"] = float(agg.t1 or 0)
    return f


def _lo(a: int | None, b: int) -> int:
    return b if a is None or b < a else a


def _hi(a: int | None, b: int) -> int:
    return b if a is None or b > a else a


def features_from_transactions(txs: Iterable[ChainTx], now_ms: int | None = None) -> dict[str, dict[str, float]]:
    """Recompute every address's features from scratch over canonical transactions (each tx hash counted once).

    The reference the incremental Redis path is tested against, and what training can use on a transaction
    dump. `now_ms` ends the sliding windows (default: the newest transaction time).
    """
    aggs: dict[str, Aggregate] = {}
    to_sets: dict[str, set[str]] = {}
    from_sets: dict[str, set[str]] = {}
    seen: set[str] = set()
    chain: str | None = None
    newest = 0
    for tx in txs:
        if tx.retraction or tx.tx_hash in seen:
            continue
        seen.add(tx.tx_hash)
        t = tx.time_ms
        tx_legs = legs(tx)
        if tx_legs:  # as in Redis, only transactions that touch features advance the chain clock
            chain = tx.chain.value
            newest = max(newest, t)
        for leg in tx_legs:
            a = aggs.setdefault(leg.address, Aggregate())
            a.t0, a.t1 = _lo(a.t0, t), _hi(a.t1, t)
            if leg.created:
                a.created_n += 1
            if leg.sent is not None:
                v = leg.sent
                a.sent_n += 1
                a.sent_sum += v
                a.sent_min, a.sent_max = _lo(a.sent_min, v), _hi(a.sent_max, v)
                a.sent_t0, a.sent_t1 = _lo(a.sent_t0, t), _hi(a.sent_t1, t)
                to_sets.setdefault(leg.address, set()).update(leg.to)
                a.out_win.append((t, v))
            if leg.received is not None:
                v = leg.received
                a.recv_n += 1
                a.recv_sum += v
                a.recv_min, a.recv_max = _lo(a.recv_min, v), _hi(a.recv_max, v)
                a.recv_t0, a.recv_t1 = _lo(a.recv_t0, t), _hi(a.recv_t1, t)
                from_sets.setdefault(leg.address, set()).update(leg.frm)
                a.in_win.append((t, v))
    if chain is None:
        return {}
    now = newest if now_ms is None else now_ms
    out: dict[str, dict[str, float]] = {}
    for addr, a in aggs.items():
        a.uniq_to = len(to_sets.get(addr, ()))
        a.uniq_from = len(from_sets.get(addr, ()))
        out[addr] = finish(a, chain, now)
    return out


def feature_vector(features: dict[str, float], names: Sequence[str] = CHAIN_FEATURES) -> list[float]:
    """The features in model order."""
    return [features[n] for n in names]


__all__ = [
    "ACTIVITY_FEATURES",
    "CHAIN_FEATURES",
    "CHAIN_MODEL_LAYOUT",
    "CHAIN_MODEL_TRANSFORM",
    "CHAIN_SPEC_HASH",
    "GWEI",
    "LONGEST_WINDOW_MS",
    "SPEC_HASH",
    "WINDOWS_S",
    "WINDOW_FEATURES",
    "Aggregate",
    "Leg",
    "feature_vector",
    "features_from_transactions",
    "finish",
    "legs",
    "signed_log1p",
]
