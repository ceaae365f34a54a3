"""Row-level detection metrics for the chain model and its baselines (one harness, same split, same rules).

Every method outputs a score (higher = more suspicious). PR-AUC (average precision) and ROC-AUC are threshold-free.
Precision, recall, F1 and FPR use one threshold per method, chosen on the validation part (the threshold that
maximises validation F1) and then applied unchanged to the held-back part; the test labels never pick it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


@dataclass(frozen=True)
class Metrics:
    method: str
    precision: float
    recall: float
    f1: float
    pr_auc: float
    roc_auc: float
    fpr: float
    threshold: float
    latency_us: float  # mean scoring time per address (batch scoring), microseconds

    def row(self) -> dict[str, float | str]:
        return asdict(self)


def best_f1_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """Threshold maximising F1 on (y, score); ties go to the higher threshold (fewer alerts)."""
    prec, rec, thr = precision_recall_curve(y, score)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)[:-1]
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)[-1]
    return float(thr[best])


def evaluate_scores(
    method: str,
    y_val: np.ndarray,
    s_val: np.ndarray,
    y_test: np.ndarray,
    s_test: np.ndarray,
    latency_us: float = float("nan"),
) -> Metrics:
    thr = best_f1_threshold(y_val, s_val)
    pred = s_test >= thr
    tp = int((pred & (y_test == 1)).sum())
    fp = int((pred & (y_test == 0)).sum())
    fn = int((~pred & (y_test == 1)).sum())
    tn = int((~pred & (y_test == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Metrics(
        method=method,
        precision=precision,
        recall=recall,
        f1=f1,
        pr_auc=float(average_precision_score(y_test, s_test)),
        roc_auc=float(roc_auc_score(y_test, s_test)),
        fpr=fp / (fp + tn) if fp + tn else 0.0,
        threshold=thr,
        latency_us=latency_us,
    )


def table(rows: list[Metrics], title: str) -> str:
    """Markdown table in the paper's layout: one row per method; precision, recall, F1, AUC, FPR, latency."""
    out = [
        f"### {title}",
        "",
        "| method | precision | recall | F1 | PR-AUC | ROC-AUC | FPR | latency (us/address) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        out.append(
            f"| {m.method} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | {m.pr_auc:.3f} | {m.roc_auc:.3f} "
            f"| {m.fpr:.3f} | {m.latency_us:.1f} |"
        )
    return "\n".join(out)
