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
    """Apply every rule in its metric's direction: any metric past its floor rejects; all at or
    better than their bar approves.

    A metric the evaluation lacks cannot be judged automatically, so it goes to a person.
    """
    rejected, between, missing, passed = [], [], [], []
    for name, rule in rules.items():
        value = metrics.get(name)
        if value is None or value != value:  # missing or NaN
            missing.append(name)
            continue
        if rule.direction > 0:
            floor, bar, worse = rule.reject_below, rule.approve_at, "<"
            past_floor, reaches_bar = value < floor, value >= bar
        else:
            floor, bar, worse = rule.reject_above, rule.approve_at, ">"
            past_floor, reaches_bar = value > floor, value <= bar
        if past_floor:
            rejected.append(f"{name}={value:.4f} {worse} {floor}")
        elif not reaches_bar:
            band = f"[{floor}, {bar})" if rule.direction > 0 else f"({bar}, {floor}]"
            between.append(f"{name}={value:.4f} in {band}")
        else:
            passed.append(f"{name}={value:.4f} {'>=' if rule.direction > 0 else '<='} {bar}")
    if rejected:
        return Decision(REJECT, "auto-rejected: " + "; ".join(rejected))
    if missing:
        return Decision(HUMAN, f"needs a person: evaluation lacks {', '.join(missing)}")
    if between:
        return Decision(HUMAN, "needs a person: " + "; ".join(between))
    return Decision(APPROVE, "auto-approved: " + "; ".join(passed))
