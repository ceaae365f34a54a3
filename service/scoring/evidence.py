"""The shapes of evidence: a feature named in an explanation, and what a rule detector reports.

Why a module of its own: the model's decision (service/scoring/decision.py) and the rule detectors
(service/scoring/detectors.py and the rules) both speak in these terms, and neither should import the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.schemas.scoring import AnomalyType, FeatureContribution


@dataclass(frozen=True, slots=True)
class Contribution:
    """One feature named in an explanation (the plain twin of `FeatureContribution`: the API's hot path answers
    with dicts of these, an alert carries the pydantic model)."""

    name: str
    value: float
    normal: float
    error: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "normal": self.normal, "error": self.error}

    def model(self) -> FeatureContribution:
        return FeatureContribution(name=self.name, value=self.value, normal=self.normal, error=self.error)


@dataclass(frozen=True, slots=True)
class Finding:
    """What a rule detector reports: the key it is about, an event time, a score against the rule's threshold,
    the evidence, and the words for it. `service.scoring.decision.decide_finding` turns it into an alert."""

    rule: str  # the rule set that found it; the alert's model name (book-rules, tape-rules, crossvenue)
    version: str
    policy_key: str  # the alert-policy state it goes through: one per rule and key (sp|key, wt|key, xv|key)
    key: str  # the market key the alert is about
    event_ms: int
    anomaly: AnomalyType
    score: float
    threshold: float
    evidence: tuple[Contribution, ...]
    explanation: str
    incomplete: bool = False
