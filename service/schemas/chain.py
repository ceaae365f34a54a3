"""Normalised on-chain transactions: what chain ingest writes to `chain.txs`, keyed `chain:address`.

One transaction is published once per involved address (the event's `address`), so every address's events stay
in one partition and in block order. A reorg publishes the orphaned transactions again with `kind="retraction"`
(same tx hash and block hash as the event it cancels) before the replacement chain's transactions; a consumer that
counts `tx` as +1 and `retraction` as -1 per (tx hash, block hash, address) holds exactly the canonical chain.

Amounts are exact integers in the chain's smallest unit (wei, satoshi). JSON carries them as decimal strings
because a wei amount passes 2^53 at 0.009 ETH and JavaScript or float-based consumers would round it silently.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

SCHEMA_VERSION = 1


class Chain(StrEnum):
    ETHEREUM = "ethereum"
    BITCOIN = "bitcoin"


# Smallest units per native coin: features report values in coins (ether, bitcoin) like the fraud dataset does.
UNIT_DECIMALS: dict[str, int] = {Chain.ETHEREUM: 18, Chain.BITCOIN: 8}


def _to_int(v: Any) -> Any:
    """Accept ints and decimal strings (the JSON form); refuse floats, which cannot carry wei exactly."""
    if isinstance(v, bool):
        raise ValueError("expected an integer amount, got a boolean")
    if isinstance(v, str):
        if not v or not (v.isdigit() or (v[0] == "-" and v[1:].isdigit())):
            raise ValueError(f"expected a decimal integer string, got {v!r}")
        return int(v)
    if isinstance(v, float):
        raise ValueError("amounts must be exact integers (wei / satoshi), not floats")
    return v


Amount = Annotated[int, BeforeValidator(_to_int), PlainSerializer(str, return_type=str, when_used="json")]
OptAmount = Annotated[
    int | None,
    BeforeValidator(lambda v: None if v is None else _to_int(v)),
    PlainSerializer(lambda v: None if v is None else str(v), return_type=str | None, when_used="json"),
]

EventKind = Literal["tx", "retraction"]
Role = Literal["sender", "receiver", "both", "creator", "created"]


class TxInput(BaseModel):
    """A Bitcoin input with the output it spends (`prevout`): address and value are the prevout's."""

    model_config = ConfigDict(frozen=True)

    txid: str | None = Field(default=None, description="spent transaction id; None for the coinbase input")
    vout: int | None = None
    address: str | None = Field(default=None, description="None for coinbase or non-standard scripts")
    value: Amount = 0


class TxOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    n: int
    address: str | None = Field(default=None, description="None for OP_RETURN and other address-less scripts")
    value: Amount
    script_type: str = ""


class ChainTx(BaseModel):
    """One transaction as seen by one involved address (the Kafka key is `chain:address`)."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    kind: EventKind = "tx"
    chain: Chain
    address: str = Field(description="the address this event is about (the key's address); lower-case hex for EVM")
    role: Role = "sender"
    tx_hash: str
    tx_index: int = Field(description="position of the transaction in its block")
    block_number: int
    block_hash: str
    time_ms: int = Field(description="block timestamp, ms UTC (the source's event time)")
    ingest_time_ms: int
    from_address: str | None = Field(default=None, description="Ethereum sender; None on Bitcoin (see inputs)")
    to_address: str | None = Field(default=None, description="Ethereum recipient; None for contract creation")
    contract_address: str | None = Field(default=None, description="the contract a creation transaction made")
    value: Amount = Field(default=0, description="wei / satoshi moved (Bitcoin: sum of outputs)")
    fee: OptAmount = Field(default=None, description="wei (gas used x effective price) / satoshi (inputs - outputs)")
    status: int | None = Field(default=None, description="1 success, 0 reverted (Ethereum); Bitcoin txs are 1")
    input_size: int = Field(default=0, description="bytes of call data (Ethereum) / serialized size (Bitcoin)")
    method: str | None = Field(default=None, description="4-byte selector 0x........ of the call data, if any")
    inputs: tuple[TxInput, ...] = ()
    outputs: tuple[TxOutput, ...] = ()
    io_truncated: bool = Field(
        default=False,
        description="a large Bitcoin tx's per-address record keeps only this address's inputs and outputs",
    )

    @property
    def key(self) -> str:
        return f"{self.chain.value}:{self.address}"

    @property
    def retraction(self) -> bool:
        return self.kind == "retraction"

    @property
    def coinbase(self) -> bool:
        return bool(self.inputs) and self.inputs[0].txid is None

    def as_retraction(self) -> ChainTx:
        return self.model_copy(update={"kind": "retraction"})

    def for_address(self, address: str, role: Role) -> ChainTx:
        return self.model_copy(update={"address": address, "role": role})

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    def json_dict(self) -> dict[str, Any]:
        """`model_dump(mode="json")`, written out by hand: it runs once per published transaction.

        tests/ingest/chain/test_units.py checks that both give the same dict.
        """
        fee = self.fee
        return {
            "schema_version": self.schema_version,
            "kind": self.kind,
            "chain": self.chain.value,
            "address": self.address,
            "role": self.role,
            "tx_hash": self.tx_hash,
            "tx_index": self.tx_index,
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "time_ms": self.time_ms,
            "ingest_time_ms": self.ingest_time_ms,
            "from_address": self.from_address,
            "to_address": self.to_address,
            "contract_address": self.contract_address,
            "value": str(self.value),
            "fee": None if fee is None else str(fee),
            "status": self.status,
            "input_size": self.input_size,
            "method": self.method,
            "inputs": [
                {"txid": i.txid, "vout": i.vout, "address": i.address, "value": str(i.value)} for i in self.inputs
            ],
            "outputs": [
                {"n": o.n, "address": o.address, "value": str(o.value), "script_type": o.script_type}
                for o in self.outputs
            ],
            "io_truncated": self.io_truncated,
        }

    @classmethod
    def decode(cls, data: bytes | str) -> ChainTx:
        return cls.model_validate_json(data)


def involved_addresses(tx: ChainTx) -> list[tuple[str, Role]]:
    """Every address a transaction touches with its role, in a stable order (senders first).

    Ethereum: the sender, the recipient or the created contract. Bitcoin: input addresses (senders), then output
    addresses not among them (receivers); an address on both sides (change) is `both`.
    """
    out: list[tuple[str, Role]] = []
    if tx.chain == Chain.ETHEREUM:
        frm = tx.from_address or ""
        other = tx.to_address or tx.contract_address
        if other is not None and other == frm:
            return [(frm, "both")]
        if frm:
            out.append((frm, "creator" if tx.to_address is None else "sender"))
        if other is not None:
            out.append((other, "created" if tx.to_address is None else "receiver"))
        return out
    senders = list(dict.fromkeys(i.address for i in tx.inputs if i.address))
    receivers = set(o.address for o in tx.outputs if o.address)
    for a in senders:
        out.append((a, "both" if a in receivers else "sender"))
    seen = set(senders)
    for o in tx.outputs:
        if o.address and o.address not in seen:
            seen.add(o.address)
            out.append((o.address, "receiver"))
    return out


__all__ = [
    "SCHEMA_VERSION",
    "UNIT_DECIMALS",
    "Chain",
    "ChainTx",
    "EventKind",
    "Role",
    "TxInput",
    "TxOutput",
    "involved_addresses",
]
