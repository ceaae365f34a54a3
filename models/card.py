"""Model card: tables in the paper's layout (each row a method; precision, recall, F1, AUC, FPR, latency) and
PNG plots (ROC and PR curves, score timelines around the test events with the alert threshold)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.evaluation.metrics import ScoredSeries, window_labels

COLUMNS = (
    ("precision", "Precision", "{:.3f}"),
    ("recall", "Recall", "{:.3f}"),
    ("f1", "F1", "{:.3f}"),
    ("roc_auc", "ROC-AUC", "{:.3f}"),
    ("pr_auc", "PR-AUC", "{:.3f}"),
    ("fpr", "FPR", "{:.4f}"),
    ("delay_median_s", "Delay p50 (s)", "{:.0f}"),
    ("delay_p90_s", "Delay p90 (s)", "{:.0f}"),
    ("fa_per_day", "FA/sym-day (pump files)", "{:.2f}"),
    ("quiet_fa_per_day", "FA/sym-day (quiet months)", "{:.2f}"),
    ("detected_of", "Detected", "{}"),
)


def _fmt(v: Any, f: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f.format(v)


def table(rows: Sequence[tuple[str, dict[str, Any]]], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """A markdown table: one row per method."""
    head = "| Method | " + " | ".join(c[1] for c in columns) + " |"
    sep = "|---|" + "|".join("---:" for _ in columns) + "|"
    lines = [head, sep]
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(k), f) for k, _, f in columns) + " |")
    return "\n".join(lines)


def plot_curves(results: dict[str, list[ScoredSeries]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    cmap = plt.get_cmap("tab20")
    for i, (name, scored) in enumerate(results.items()):
        y, s = window_labels(scored)
        if len(y) == 0 or y.min() == y.max():
            continue
        style = {"color": cmap(i % 20), "lw": 1.2, "ls": "-" if i < 7 else "--"}
        fpr, tpr, _ = roc_curve(y, s)
        a1.plot(fpr, tpr, label=name, **style)
        p, r, _ = precision_recall_curve(y, s)
        a2.plot(r, p, label=name, **style)
    a1.plot([0, 1], [0, 1], "k:", lw=0.8)
    a1.set_xscale("log")
    a1.set_xlim(1e-5, 1)
    a1.set_xlabel("false positive rate (log)")
    a1.set_ylabel("true positive rate")
    a1.set_title(f"ROC — {title}")
    a2.set_xlabel("recall")
    a2.set_ylabel("precision")
    a2.set_title(f"PR — {title}")
    a1.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_timelines(scored: list[ScoredSeries], tau: float, path: Path, title: str, span_min: float = 30.0) -> None:
    """Score around each event (minutes from the announced time) with the alert threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = [s for s in scored if s.announce_ms is not None]
    if not events:
        return
    cols = 4
    rows = int(np.ceil(len(events) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.4 * rows), squeeze=False)
    for ax, s in zip(axes.ravel(), events, strict=False):
        assert s.announce_ms is not None
        m = (s.t_ms - s.announce_ms) / 60_000.0
        keep = (m >= -span_min) & (m <= span_min)
        ax.plot(m[keep], s.score[keep], lw=0.9)
        ax.axhline(tau, color="r", lw=0.8, ls="--")
        ax.axvline(0, color="k", lw=0.6, ls=":")
        ax.set_title(s.name + ("" if s.pump_visible else " (no pump visible)"), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yscale("symlog", linthresh=1.0)
    for ax in axes.ravel()[len(events) :]:
        ax.axis("off")
    fig.suptitle(f"{title}: score vs minutes from the announced minute (red: alert threshold)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
