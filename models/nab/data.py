"""Loader for the NAB corpus as copied to ../shared/data/nab (data/, labels/, config/).

NAB is read by path and never copied into the project. A series is a list of (timestamp, value) rows; its anomaly
windows come from labels/combined_windows.json and are turned into inclusive index ranges here, once, so the scorer
works on integer positions only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class NABSeries:
    """One NAB data file with its labels, windows as inclusive [start, end] row indices."""

    name: str  # relative path inside data/, e.g. "realTweets/Twitter_volume_AAPL.csv"
    timestamps: np.ndarray  # datetime64[ns]
    values: np.ndarray  # float64
    windows: list[tuple[int, int]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # row indices of the labelled anomaly points

    @property
    def group(self) -> str:
        return self.name.split("/", 1)[0]

    def __len__(self) -> int:
        return len(self.values)


def window_indices(timestamps: np.ndarray, limits: list[list[str]]) -> list[tuple[int, int]]:
    """Map NAB window limits (timestamp strings) to inclusive row index ranges.

    NAB's limits coincide with row timestamps; searchsorted keeps this exact for them and still sensible (first row
    at or after the start, last row at or before the end) if a limit falls between rows.
    """
    out: list[tuple[int, int]] = []
    for start_s, end_s in limits:
        start = int(np.searchsorted(timestamps, np.datetime64(pd.Timestamp(start_s)), side="left"))
        end = int(np.searchsorted(timestamps, np.datetime64(pd.Timestamp(end_s)), side="right")) - 1
        if start <= end:
            out.append((start, end))
    return sorted(out)


def load_series(root: Path, name: str, windows: list[list[str]], labels: list[str]) -> NABSeries:
    frame = pd.read_csv(root / "data" / name)
    ts = pd.to_datetime(frame["timestamp"]).to_numpy(dtype="datetime64[ns]")
    values = frame["value"].to_numpy(dtype=np.float64)
    label_idx = [int(np.searchsorted(ts, np.datetime64(pd.Timestamp(s)), side="left")) for s in labels]
    return NABSeries(name=name, timestamps=ts, values=values, windows=window_indices(ts, windows), labels=label_idx)


def load_corpus(root: Path, names: list[str] | None = None) -> list[NABSeries]:
    """Every series listed in combined_windows.json (58 in v1.1), or the given subset, in name order."""
    windows: dict[str, list[list[str]]] = json.loads((root / "labels" / "combined_windows.json").read_text())
    labels: dict[str, list[str]] = json.loads((root / "labels" / "combined_labels.json").read_text())
    chosen = sorted(windows) if names is None else names
    return [load_series(root, n, windows[n], labels.get(n, [])) for n in chosen]
