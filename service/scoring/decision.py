"""The one decision from a scored window (or a rule's finding) to what the service says about it.

`decide` turns a model's `WindowResult` plus the key's alert-policy state into a `Decision`: the verdict (normal,
watch, anomalous, critical), the anomaly type and severity when the score crosses the threshold, the features
furthest from normal, a readable explanation, the key's next policy state and, when the policy fires, the `Alert`.
`decide_finding` does the same for a rule detector's `Finding` (service/scoring/evidence.py: spoofing, wash
trading, cross-venue, and any rule that implements service/scoring/detectors.py's `Detector`).

Why one function: the streaming worker, `rmad score` and the REST API must say the same thing about the same
window; three hand-written copies had drifted (the API patched the explanation text, kept its own feature ranking).
Why pure: the inputs (result, window, state, clock) decide the output and nothing is mutated, so the worker can
decide a batch on copies and keep the new states only once the batch's outputs are out, a retried batch decides
the same again, and a test can feed one window to all three paths and compare.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from service.schemas.scoring import (
    Action,
    Alert,
    AnomalyType,
    BranchScores,
    Severity,
    Verdict,
    alert_id,
)
from service.scoring.alerts import TYPE_LABEL, AlertPolicy, KeyAlertState, classify, split_key, tiers
from service.scoring.evidence import Contribution, Finding

if TYPE_CHECKING:
    from service.scoring.scorer import WindowResult

_BRANCH_NAMES = ("multi-domain VAE", "Transformer", "clustering")


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What a decision reads from the model that scored the window (its manifest and training medians)."""

    feature_names: Sequence[str]
    normal: np.ndarray
    kind: str
    watch: float | None
    critical: float | None
    note: float | None = None

    @classmethod
    def of(cls, model: Any) -> ModelFacts:
        """From a `LoadedModel` (typed loosely: tests pass lookalikes)."""
        m = model.artifact.manifest
        t = m.thresholds
        return cls(m.features.names, model.artifact.normal, m.kind, t.watch, t.critical, getattr(t, "note", None))


@dataclass(frozen=True, slots=True)
class Decision:
    """What the service says about one scored window."""

    key: str
    window_end_ms: int | None  # None: a caller's window with no event time (the API)
    result: WindowResult
    verdict: Verdict
    anomaly_type: AnomalyType | None  # set at or above the threshold
    severity: Severity | None
    action: Action | None
    explanation: str
    top_features: tuple[Contribution, ...]
    incomplete: bool
    state: KeyAlertState | None  # the key's policy state after this window; None when decided without one
    alert: Alert | None  # set when the policy fires


class _Named(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def normal(self) -> float: ...


def top_features(result: WindowResult, names: Sequence[str], normal: np.ndarray, n: int = 3) -> list[Contribution]:
    """The `n` features with the largest reconstruction error, non-finite errors read as numbers (NaN 0, inf the
    largest float)."""
    errs = np.asarray(result.feature_errors, dtype=np.float64)
    if not np.isfinite(errs).all():
        errs = np.nan_to_num(errs)
    order = np.argsort(-errs)[:n]
    last = result.last_values
    return [Contribution(names[i], float(last[i]), float(normal[i]), float(errs[i])) for i in order.tolist()]


def fmt(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.2e}"


def explain(
    key: str,
    anomaly: AnomalyType,
    window_end_ms: int | None,
    score: float,
    threshold: float,
    branches: Sequence[float],
    weights: Sequence[float],
    contributions: Sequence[_Named],
    incomplete: bool = False,
) -> str:
    """One paragraph an analyst can read: what, when (when known), how strong, which features, which branch."""
    when = ""
    if window_end_ms is not None:
        stamp = datetime.fromtimestamp(window_end_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        when = f" in the window ending {stamp}"
    feats = "; ".join(f"{c.name} = {fmt(c.value)} (normal {fmt(c.normal)})" for c in contributions)
    lead = max(range(3), key=lambda i: weights[i])
    text = (
        f"{key}: {TYPE_LABEL[anomaly]} suspected{when}: risk score {score:.3g} against a "
        f"threshold of {threshold:.3g}. Furthest from normal: {feats or 'n/a'}. "
        f"The fusion weighted the {_BRANCH_NAMES[lead]} branch most ({weights[lead]:.0%}; scores: VAE "
        f"{fmt(branches[0])}, Transformer {fmt(branches[1])}, clustering {fmt(branches[2])})."
    )
    if incomplete:
        text += " The window contains a data gap reported by ingest; confirm on the venue's own chart."
    return text


def decide(
    result: WindowResult,
    window: np.ndarray,
    model: ModelFacts,
    *,
    key: str,
    window_end_ms: int | None,
    now_ms: int,
    incomplete: bool = False,
    state: KeyAlertState | None = None,
    policy: AlertPolicy | None = None,
    dislocated: bool = False,
    n_features: int = 3,
    cold_context: int | None = None,
) -> Decision:
    """Decide one window.

    `window` is the unscaled [T, F] window the result came from (its shape decides the anomaly type);
    `state`/`policy`: the key's alert-policy state and the policy (hysteresis, cool-down); without them the
    decision has no alert (a one-off request); `dislocated`: the key was seen dislocated from its cross-venue
    reference just before (an anomaly is then a de-peg); `cold_context`: how many bars of live context the window
    had when it was padded with typical values (said in the explanation); `now_ms` stamps the alert."""
    fused, threshold = result.fused, result.threshold
    contribs = top_features(result, model.feature_names, model.normal, n_features)
    branches = (result.s_md, result.s_trans, result.s_clust)
    anomaly: AnomalyType | None = None
    severity: Severity | None = None
    action: Action | None = None
    if fused >= threshold:
        anomaly = AnomalyType.DEPEG if dislocated else classify(key, model.feature_names, window, model.kind)
        severity, action = tiers(fused, threshold, model.critical, incomplete)
        verdict = Verdict.CRITICAL if severity is Severity.CRITICAL else Verdict.ANOMALOUS
        text = explain(key, anomaly, window_end_ms, fused, threshold, branches, result.weights, contribs, incomplete)
    else:
        verdict = (
            Verdict.WATCH
            if model.watch is not None and fused >= model.watch
            else Verdict.NOTE
            if model.note is not None and fused >= model.note
            else Verdict.NORMAL
        )
        feats = ", ".join(f"{c.name} {c.value:.3g} (normal {c.normal:.3g})" for c in contribs)
        text = f"{key}: score {fused:.3g} below the threshold {threshold:.3g}; furthest from normal: {feats}."
    if cold_context is not None:
        text += f" Only {cold_context} bars of live context were available; the rest of the window is typical values."
    new_state: KeyAlertState | None = None
    alert: Alert | None = None
    if state is not None:
        if window_end_ms is None:
            raise ValueError("an alert-policy decision needs the window's end time")
        new_state = dataclasses.replace(state)
        fired = (policy or AlertPolicy()).decide(
            new_state, fused, threshold, window_end_ms, anomaly or AnomalyType.OTHER
        )
        if fired:
            assert anomaly is not None and severity is not None and action is not None  # fired: at/above threshold
            venue, symbol = split_key(key)
            alert = Alert(
                id=alert_id(result.model_version, key, window_end_ms),
                key=key,
                venue=venue,
                symbol=symbol,
                window_end_ms=window_end_ms,
                created_ms=now_ms,
                anomaly_type=anomaly,
                severity=severity,
                action=action,
                score=fused,
                threshold=threshold,
                branches=result.branches,
                weights=result.branch_weights,
                top_features=[c.model() for c in contribs],
                explanation=text,
                model_name=result.model_name,
                model_version=result.model_version,
                incomplete=incomplete,
            )
    return Decision(
        key,
        window_end_ms,
        result,
        verdict,
        anomaly,
        severity,
        action,
        text,
        tuple(contribs),
        incomplete,
        new_state,
        alert,
    )


_ZERO = BranchScores(md=0.0, trans=0.0, clust=0.0)


def decide_finding(
    finding: Finding, state: KeyAlertState, policy: AlertPolicy, now_ms: int
) -> tuple[KeyAlertState, Alert | None]:
    """A rule finding through its policy state (hysteresis, cool-down): the new state and the alert, if it fires.
    Severity runs from the rule's threshold to three times it."""
    st = dataclasses.replace(state)
    f = finding
    if not policy.decide(st, f.score, f.threshold, f.event_ms, f.anomaly):
        return st, None
    venue, symbol = split_key(f.key)
    sev, action = tiers(f.score, f.threshold, f.threshold * 3, f.incomplete)
    return st, Alert(
        id=alert_id(f"{f.rule}-{f.version}", f.key, f.event_ms),
        key=f.key,
        venue=venue,
        symbol=symbol,
        window_end_ms=f.event_ms,
        created_ms=now_ms,
        anomaly_type=f.anomaly,
        severity=sev,
        action=action,
        score=f.score,
        threshold=f.threshold,
        branches=_ZERO,
        weights=_ZERO,
        top_features=[c.model() for c in f.evidence],
        explanation=f.explanation,
        model_name=f.rule,
        model_version=f.version,
        incomplete=f.incomplete,
    )
