"""chain.txs through the worker: live address features (service/features/chain) scored by a chain model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from harness.modelgen import export_tiny_model
from service.bus.factory import standard_topics
from service.bus.memory import MemoryBus
from service.features.chain import (
    CHAIN_FEATURES,
    CHAIN_MODEL_TRANSFORM,
    CHAIN_SPEC_HASH,
    feature_vector,
    signed_log1p,
)
from service.features.chain_store import address_features, apply_transaction
from service.features.scaling import RobustScaler
from service.schemas.chain import Chain, ChainTx, involved_addresses
from service.scoring.worker import ScoringWorker
from service.settings import load_settings
from service.state.memory import MemoryState

WEI = 10**18


def _tx(i: int, src: str, dst: str, ether: float, t0: int = 1_700_000_000_000) -> ChainTx:
    return ChainTx(
        chain=Chain.ETHEREUM,
        address=src,
        tx_hash=f"0x{i:064x}",
        tx_index=0,
        block_number=100 + i,
        block_hash=f"0x{i + 7:064x}",
        time_ms=t0 + i * 12_000,
        ingest_time_ms=t0 + i * 12_000,
        from_address=src,
        to_address=dst,
        value=int(ether * WEI),
        fee=21_000 * 10**9,
        status=1,
    )


async def test_chain_transactions_scored_and_a_whale_alerts(tiny_model_dir: Path, tmp_path: Path) -> None:
    # "training": the scaler from the activity of ordinary addresses (small transfers among 7 of them)
    normal = [_tx(i, f"0x{i % 7:040x}", f"0x{(i + 3) % 7:040x}", 0.05 + 0.01 * i) for i in range(40)]
    fit_state = MemoryState()
    rows = []
    for tx in normal:  # snapshots of every address after each of its transactions, as a training set holds
        await apply_transaction(fit_state, tx)
        for addr in (tx.from_address, tx.to_address):
            assert addr is not None
            rows.append(feature_vector(await address_features(fit_state, "ethereum", addr)))
    sc = RobustScaler.fit(signed_log1p(np.asarray(rows, dtype=np.float32)))
    models = tmp_path / "models"
    export_tiny_model(models, version="v1", created_ms=1)  # the market model the worker always serves
    export_tiny_model(
        models, name="chain", version="c1", kind="chain", window=1, features=CHAIN_FEATURES, spec_hash=CHAIN_SPEC_HASH,
        transform=CHAIN_MODEL_TRANSFORM,
        alert=60.0, created_ms=1, center=sc.center.tolist(), scale=sc.scale.tolist(),
    )  # fmt: skip
    s = load_settings(model_dir=models, model_reload_interval_s=0, topic_partitions=2)
    bus, state = MemoryBus(default_partitions=2), MemoryState()
    await bus.create_topics(standard_topics(s))
    worker = ScoringWorker(s, bus, state)
    await worker.start()
    p = bus.producer()
    await p.start()
    whale = "0x" + "ab" * 20
    txs = normal[:20] + [_tx(40 + i, whale, f"0x{i % 7:040x}", 40_000.0) for i in range(4)]
    c = bus.consumer([s.topic_scores, s.topic_alerts], "reader")
    await c.start()
    scores: list[dict[str, object]] = []
    alerts: list[dict[str, object]] = []
    for tx in txs:  # what chain ingest does: apply to the aggregates, then publish per involved address
        await apply_transaction(state, tx)
        involved = involved_addresses(tx)
        for addr, role in involved:
            per = tx.for_address(addr, role)
            await p.send(s.topic_chain, per.encode(), key=per.key.encode())
        want = len(scores) + len(involved)
        for _ in range(200):  # the worker scores it before the next block arrives, as in a live run
            for r in await c.getmany(timeout_ms=20):
                (scores if r.topic == s.topic_scores else alerts).append(orjson.loads(r.value))
            if len(scores) >= want:
                break
    await worker.stop()
    assert worker.chain_model is not None and s.topic_chain in worker.topics
    assert {x["model_name"] for x in scores} == {"chain"} and len(scores) == 2 * len(txs)
    keys = {a["key"] for a in alerts}
    assert f"ethereum:{whale}" in keys
    # only the whale and the addresses it paid, and only from its first transfer on
    assert keys <= {f"ethereum:{whale}"} | {f"ethereum:0x{i:040x}" for i in range(4)}
    assert min(a["window_end_ms"] for a in alerts) >= txs[20].time_ms
    assert {a["anomaly_type"] for a in alerts} == {"suspicious_transfer"}
    whale_alert = next(a for a in alerts if a["key"] == f"ethereum:{whale}")
    assert "sent" in whale_alert["explanation"] and whale_alert["venue"] == "ethereum"
