"""A scripted blockchain for the fake nodes: canonical blocks, orphaned blocks kept by hash, deterministic txs.

The model is independent of the code under test: `expected_txs` builds the ChainTx a correct ingest must publish
straight from this model (not through the parsers), so the tests check the parsers too.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from service.schemas.chain import Chain, ChainTx, TxInput, TxOutput


def _h(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


@dataclass
class EthTx:
    hash: str
    frm: str
    to: str | None
    value: int
    input: str
    status: int
    gas_used: int
    price: int
    nonce: int
    contract: str | None = None


@dataclass
class BtcIn:
    txid: str | None  # None: coinbase
    vout: int = 0
    address: str | None = None
    sat: int = 0


@dataclass
class BtcOut:
    address: str | None
    sat: int
    kind: str = "witness_v0_keyhash"


@dataclass
class BtcTx:
    txid: str
    vin: list[BtcIn]
    vout: list[BtcOut]


@dataclass
class FakeBlock:
    number: int
    hash: str  # ethereum: 0x + 64 hex; bitcoin: 64 hex
    parent: str
    time_s: int
    txs: list[EthTx] | list[BtcTx]


@dataclass
class FakeChain:
    kind: str  # "eth" | "btc"
    seed: int = 7
    n_addresses: int = 12
    block_time_s: int = 12
    genesis_time_s: int = 1_700_000_000
    canonical: list[FakeBlock] = field(default_factory=list)
    by_hash: dict[str, FakeBlock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._salt = 0
        self._nonce = 0
        if self.kind == "eth":
            self.addresses = ["0x" + _h("addr", i)[:40] for i in range(self.n_addresses)]
        else:
            self.addresses = ["bc1q" + _h("addr", i)[:38] for i in range(self.n_addresses)]
        genesis = FakeBlock(0, self._hash("genesis"), self._zero(), self.genesis_time_s, [])
        self._add(genesis)

    # -------------------------------------------------------------------------------------------------- helpers
    def _zero(self) -> str:
        return ("0x" + "0" * 64) if self.kind == "eth" else "0" * 64

    def _hash(self, *parts: object) -> str:
        self._salt += 1
        h = _h(self.kind, self._salt, *parts)
        return "0x" + h if self.kind == "eth" else h

    def _add(self, b: FakeBlock) -> None:
        self.canonical.append(b)
        self.by_hash[b.hash] = b

    @property
    def tip(self) -> FakeBlock:
        return self.canonical[-1]

    def block(self, number: int) -> FakeBlock | None:
        return self.canonical[number] if 0 <= number < len(self.canonical) else None

    # ----------------------------------------------------------------------------------------------- tx makers
    def _eth_tx(self) -> EthTx:
        r = self.rng
        self._nonce += 1
        frm = r.choice(self.addresses)
        roll = r.random()
        h = self._hash("tx")
        if roll < 0.08:  # contract creation
            contract = "0x" + _h("contract", h)[:40]
            return EthTx(
                h,
                frm,
                None,
                r.randrange(0, 10**18),
                "0x6080604052" + "00" * 40,
                1,
                210_000,
                30 * 10**9,
                self._nonce,
                contract,
            )
        to = r.choice(self.addresses)
        value = r.choice([0, r.randrange(1, 10**15), r.randrange(10**17, 5 * 10**19), 2**70 + r.randrange(10**6)])
        data = "0x" if r.random() < 0.6 else "0xa9059cbb" + "ab" * 64
        status = 0 if r.random() < 0.1 else 1
        return EthTx(
            h, frm, to, value, data, status, 21_000 + r.randrange(50_000), r.randrange(10**9, 80 * 10**9), self._nonce
        )

    def _btc_tx(self) -> BtcTx:
        r = self.rng
        n_in = r.randint(1, 3)
        vin = [
            BtcIn(
                _h("prev", self._salt, j)[:64], r.randrange(4), r.choice(self.addresses), r.randrange(10_000, 5 * 10**8)
            )
            for j in range(n_in)
        ]
        self._salt += 1
        total = sum(i.sat for i in vin)
        fee = r.randrange(200, 5_000)
        outs: list[BtcOut] = []
        left = total - fee
        for _ in range(r.randint(1, 3)):
            part = r.randrange(0, left // 2 + 1)
            outs.append(BtcOut(r.choice(self.addresses), part))
            left -= part
        if r.random() < 0.5:
            outs.append(BtcOut(vin[0].address, left))  # change back to the first sender
        else:
            outs.append(BtcOut(r.choice(self.addresses), left))
        if r.random() < 0.2:
            outs.append(BtcOut(None, 0, "nulldata"))
        return BtcTx(self._hash("tx"), vin, outs)

    def _coinbase(self, height: int) -> BtcTx:
        return BtcTx(
            self._hash("cb", height), [BtcIn(None)], [BtcOut(self.rng.choice(self.addresses), 312_500_000 + height)]
        )

    # ----------------------------------------------------------------------------------------------- chain ops
    def mine(
        self, n: int = 1, *, txs_per_block: int = 6, reuse: list[EthTx] | list[BtcTx] | None = None
    ) -> list[FakeBlock]:
        """Append n canonical blocks; `reuse` txs (from orphaned blocks) are re-included first."""
        pending = list(reuse or [])
        out = []
        for _ in range(n):
            parent = self.tip
            number = parent.number + 1
            txs: list = []
            if self.kind == "btc":
                txs.append(self._coinbase(number))
            take = min(len(pending), max(1, txs_per_block // 2))
            txs.extend(pending[:take])
            del pending[:take]
            count = self.rng.randint(max(0, txs_per_block - 3), txs_per_block)
            for _ in range(count):
                txs.append(self._eth_tx() if self.kind == "eth" else self._btc_tx())
            b = FakeBlock(number, self._hash("block", number), parent.hash, parent.time_s + self.block_time_s, txs)
            self._add(b)
            out.append(b)
        return out

    def reorg(self, depth: int, new_length: int) -> tuple[list[FakeBlock], list[FakeBlock]]:
        """Replace the last `depth` blocks with `new_length` new ones that re-include half of their txs."""
        orphaned = self.canonical[-depth:]
        del self.canonical[-depth:]
        reuse: list = []
        for b in orphaned:
            txs = [t for t in b.txs if not (isinstance(t, BtcTx) and t.vin[0].txid is None)]
            reuse.extend(txs[: len(txs) // 2])
        new = self.mine(new_length, reuse=reuse)
        return orphaned, new

    # ------------------------------------------------------------------------------------------ expected output
    def expected_txs(self, up_to: int | None = None) -> list[ChainTx]:
        """The canonical chain's transactions as a correct ingest normalises them (tx-level, address = first)."""
        out: list[ChainTx] = []
        for b in self.canonical[1:]:
            if up_to is not None and b.number > up_to:
                break
            for i, t in enumerate(b.txs):
                out.append(self.expected_tx(b, i, t))
        return out

    def expected_tx(self, b: FakeBlock, i: int, t: EthTx | BtcTx) -> ChainTx:
        if isinstance(t, EthTx):
            return ChainTx(
                chain=Chain.ETHEREUM,
                address=t.frm,
                tx_hash=t.hash,
                tx_index=i,
                block_number=b.number,
                block_hash=b.hash,
                time_ms=b.time_s * 1000,
                ingest_time_ms=0,
                from_address=t.frm,
                to_address=t.to,
                contract_address=t.contract,
                value=t.value,
                fee=t.gas_used * t.price,
                status=t.status,
                input_size=(len(t.input) - 2) // 2,
                method=t.input[:10] if len(t.input) >= 10 else None,
            )
        inputs = tuple(
            TxInput(txid=v.txid, vout=v.vout if v.txid else None, address=v.address, value=v.sat) for v in t.vin
        )
        outputs = tuple(TxOutput(n=n, address=o.address, value=o.sat, script_type=o.kind) for n, o in enumerate(t.vout))
        coinbase = t.vin[0].txid is None
        return ChainTx(
            chain=Chain.BITCOIN,
            address="",
            tx_hash=t.txid,
            tx_index=i,
            block_number=b.number,
            block_hash=b.hash,
            time_ms=b.time_s * 1000,
            ingest_time_ms=0,
            value=sum(o.sat for o in t.vout),
            fee=0 if coinbase else sum(v.sat for v in t.vin) - sum(o.sat for o in t.vout),
            status=1,
            inputs=inputs,
            outputs=outputs,
        )
