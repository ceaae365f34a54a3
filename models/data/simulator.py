"""The market simulator's labelled output (service/ingest/simulator/): trades CSVs in the Binance pump-file
layout plus labels.json / labels.csv, read through the same loaders as the real files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models.data.trades import load_trades


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One labelled injected anomaly (a plain copy of service.ingest.simulator.SimLabel)."""

    type: str
    key: str
    start_ms: int
    onset_ms: int
    end_ms: int
    magnitude: float = 0.0


def load_sim_labels(path: str | Path) -> list[SimEvent]:
    """labels.json (list of objects) or labels.csv (type,key,start_ms,end_ms,onset_ms,magnitude,seed)."""
    p = Path(path)
    rows = pd.read_csv(p).to_dict("records") if p.suffix == ".csv" else json.loads(p.read_text())
    return sorted(
        (
            SimEvent(
                type=str(r["type"]),
                key=str(r["key"]),
                start_ms=int(r["start_ms"]),
                onset_ms=int(r["onset_ms"]),
                end_ms=int(r["end_ms"]),
                magnitude=float(r.get("magnitude", 0.0) or 0.0),
            )
            for r in rows
        ),
        key=lambda e: (e.onset_ms, e.key),
    )


def load_sim_trades(path: str | Path) -> pd.DataFrame:
    """A simulator trades CSV (written by `write_trades_csv`): same frame as `load_trades`."""
    return load_trades(path)
