"""Address activity features in the state store: one atomic script per transaction, one to read an address.

Ingest applies a block's transactions when the block is `confirmations` deep, so orphaned blocks of ordinary reorgs
never reach these aggregates (min/max and HyperLogLog cannot be un-applied). Each transaction is applied at most
once: the script first sets `chain:feat:<chain>:applied:<tx hash>` with NX, so a block re-applied after a crash
adds nothing. The scripts themselves live with the store (service.state.scripts.chain_features); the definitions
they implement are service.features.chain's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from service.features.chain import GWEI, LONGEST_WINDOW_MS, Aggregate, finish, legs
from service.schemas.chain import ChainTx
from service.state.base import ScriptCall, StateStore
from service.state.scripts.chain_features import READ_SCRIPT, UPDATE_SCRIPT


def address_prefix(chain: str, address: str) -> str:
    return f"chain:feat:{chain}:{address}"


def address_keys(chain: str, address: str) -> list[str]:
    """hash of aggregates, HLL sent-to, HLL received-from, window zset out, window zset in."""
    p = address_prefix(chain, address)
    return [p, p + ":to", p + ":from", p + ":wout", p + ":win"]


def clock_key(chain: str) -> str:
    return f"chain:feat:{chain}:clock"


def applied_key(chain: str, tx_hash: str) -> str:
    return f"chain:feat:{chain}:applied:{tx_hash}"


def update_call(
    tx: ChainTx,
    *,
    applied_ttl_s: int = 6 * 3600,
    window_ttl_s: int = 2 * 86400,
) -> ScriptCall | None:
    """Keys and the one JSON argument of the atomic update for `tx`; None when it touches no address's features.

    Every number travels as a decimal string: Lua numbers are doubles, and wei amounts are not.
    """
    chain = tx.chain.value
    ls = legs(tx)
    if not ls:
        return None
    t = tx.time_ms
    keys = [applied_key(chain, tx.tx_hash), clock_key(chain)]
    out_legs: list[dict[str, Any]] = []
    for leg in ls:
        keys += address_keys(chain, leg.address)
        d: dict[str, Any] = {"to": leg.to, "fr": leg.frm}
        if leg.sent is not None:
            s = leg.sent
            d.update(s=str(s), sh=str(s // GWEI), sl=str(s % GWEI))
        if leg.received is not None:
            rv = leg.received
            d.update(r=str(rv), rh=str(rv // GWEI), rl=str(rv % GWEI))
        if leg.created:
            d["c"] = True
        out_legs.append(d)
    payload = {
        "h": tx.tx_hash,
        "t": str(t),
        "ttl": str(applied_ttl_s),
        "cut": str(t - LONGEST_WINDOW_MS - 1),
        "wttl": str(window_ttl_s),
        "legs": out_legs,
    }
    return ScriptCall(keys, [orjson.dumps(payload)])


async def apply_transaction(state: StateStore, tx: ChainTx, **ttl: int) -> bool:
    """Apply one transaction atomically; False when it was already applied (or touches no features)."""
    call = update_call(tx, **ttl)
    if call is None:
        return False
    return bool(await state.run_script(UPDATE_SCRIPT, call.keys, call.args))


async def apply_transactions(state: StateStore, txs: Sequence[ChainTx], **ttl: int) -> int:
    """Apply many transactions in order, one atomic script each, in one batch. Returns how many applied."""
    calls = [c for c in (update_call(tx, **ttl) for tx in txs) if c is not None]
    if not calls:
        return 0
    return sum(int(r) for r in await state.run_script_batch(UPDATE_SCRIPT, calls))


def _int(b: bytes | None) -> int | None:
    return None if b is None else int(b)


def _window(members: Sequence[bytes]) -> list[tuple[int, int]]:
    out = []
    for m in members:
        t, v, _ = m.split(b"|", 2)
        out.append((int(t), int(v)))
    return out


async def address_features(state: StateStore, chain: str, address: str) -> dict[str, float]:
    """The live features of one address (`ACTIVITY_FEATURES`; zeros for an address never seen)."""
    keys = [*address_keys(chain, address), clock_key(chain)]
    clock, flat, uto, ufrom, wout, win = await state.run_script(READ_SCRIPT, keys, [LONGEST_WINDOW_MS])
    h = {
        (flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])): flat[i + 1] for i in range(0, len(flat), 2)
    }

    def n(f: str) -> int:
        return int(h.get(f, b"0"))

    agg = Aggregate(
        sent_n=n("sn"),
        recv_n=n("rn"),
        created_n=n("cn"),
        sent_sum=n("sh") * GWEI + n("sl"),
        recv_sum=n("rh") * GWEI + n("rl"),
        sent_min=_int(h.get("smin")),
        sent_max=_int(h.get("smax")),
        recv_min=_int(h.get("rmin")),
        recv_max=_int(h.get("rmax")),
        sent_t0=_int(h.get("st0")),
        sent_t1=_int(h.get("st1")),
        recv_t0=_int(h.get("rt0")),
        recv_t1=_int(h.get("rt1")),
        t0=_int(h.get("t0")),
        t1=_int(h.get("t1")),
        uniq_to=int(uto),
        uniq_from=int(ufrom),
        out_win=_window(wout),
        in_win=_window(win),
    )
    now = int(clock) if clock else 0
    return finish(agg, chain, now)


__all__ = [
    "address_features",
    "address_keys",
    "applied_key",
    "apply_transaction",
    "apply_transactions",
    "clock_key",
    "update_call",
]
