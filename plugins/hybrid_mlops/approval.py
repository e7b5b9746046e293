"""Approval rules: auto-approve above the bar, auto-reject below the floor, a person in between."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

from hybrid_mlops.specs.model import MetricRule

APPROVE, REJECT, HUMAN = "Approve", "Reject", "Human"


@dataclass(frozen=True)
class Decision:
    outcome: Literal["Approve", "Reject", "Human"]
    reason: str

    @property
    def status(self) -> str | None:
        """The registry's ModelApprovalStatus for an automatic decision (None: a person decides)."""
        return {APPROVE: "Approved", REJECT: "Rejected"}.get(self.outcome)


def decide(metrics: Mapping[str, float], rules: Mapping[str, MetricRule]) -> Decision:
    """Apply every rule: any metric below its floor rejects; all at or above their bar approves.

    A metric the evaluation lacks cannot be judged automatically, so it goes to a person.
    """
    below, between, missing = [], [], []
    for name, rule in rules.items():
        value = metrics.get(name)
        if value is None or value != value:  # missing or NaN
            missing.append(name)
        elif value < rule.reject_below:
            below.append(f"{name}={value:.4f} < {rule.reject_below}")
        elif value < rule.approve_at:
            between.append(f"{name}={value:.4f} in [{rule.reject_below}, {rule.approve_at})")
    if below:
        return Decision(REJECT, "auto-rejected: " + "; ".join(below))
    if missing:
        return Decision(HUMAN, f"needs a person: evaluation lacks {', '.join(missing)}")
    if between:
        return Decision(HUMAN, "needs a person: " + "; ".join(between))
    passed = "; ".join(f"{n}={metrics[n]:.4f} >= {r.approve_at}" for n, r in rules.items())
    return Decision(APPROVE, "auto-approved: " + passed)
