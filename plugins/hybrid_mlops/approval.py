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


#: What a person chooses between in the human-in-the-loop review: the lifecycle's approval stages, or reject.
APPROVE_TO_STAGING, APPROVE_TO_PROD, REJECT_OPTION = "Approve to staging", "Approve to prod", "Reject"
REVIEW_OPTIONS = (APPROVE_TO_STAGING, APPROVE_TO_PROD, REJECT_OPTION)
#: The lifecycle stage each approving option moves the version to.
OPTION_STAGE = {APPROVE_TO_STAGING: "staging", APPROVE_TO_PROD: "prod"}


def review_option(default: str, stage_on_approval: str) -> str:
    """The review option for the spec's ``approval.human_default`` (``Approve`` / ``Reject``), an approval
    going to ``stage_on_approval``; a review option is returned as it is."""
    if default in REVIEW_OPTIONS:
        return default
    if default == APPROVE:
        return {v: k for k, v in OPTION_STAGE.items()}[stage_on_approval]
    if default == REJECT:
        return REJECT_OPTION
    raise ValueError(f"default={default!r} must be one of {REVIEW_OPTIONS} (or Approve / Reject)")


def _figure(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def review_markdown(
    *,
    model: str,
    candidate: dict,
    production: dict | None,
    rules: Mapping[str, MetricRule],
    reason: str,
    metrics: Mapping[str, float],
    links: Mapping[str, str],
    drift: Mapping[str, object] | None = None,
    metric_names: tuple[str, ...] | list[str] = (),
) -> str:
    """The human-in-the-loop body (markdown): the candidate's metrics beside the production version's and
    the rules' bars, the oracle / baseline figures the evaluation carries, the drift report that started
    the run, and links to the evaluation, the data and the run.

    :param candidate: ``{"version", "metrics"}`` of the version under review.
    :param production: ``{"version", "metrics"}`` of the version serving in prod, None when none.
    :param metrics: every figure of the candidate's evaluation (``oracle_*`` / ``baseline_*`` shown below).
    :param links: label -> URL, listed in that order.
    :param metric_names: the task's other metrics to show below the rules' (the evaluation also holds
        counts and timings, which are no quality figure).
    """
    prod = production or {}
    head = f"| metric | candidate v{candidate['version']} | " + (
        f"production v{prod['version']} |" if production else "production (none) |") + " approve at | reject past |"
    lines = [f"**{model}**: the rules could not decide. {reason}", "", head, "| --- | --- | --- | --- | --- |"]
    for name, rule in rules.items():
        floor = rule.reject_below if rule.direction > 0 else rule.reject_above
        sign = (">=", "<") if rule.direction > 0 else ("<=", ">")
        lines.append(f"| {name} | {_figure(candidate['metrics'].get(name))} | {_figure(prod.get('metrics', {}).get(name))}"
                     f" | {sign[0]} {rule.approve_at} | {sign[1]} {floor} |")
    for name in (n for n in metric_names if n not in rules):
        if isinstance(metrics.get(name), (int, float)):
            lines.append(f"| {name} | {_figure(metrics[name])} | {_figure(prod.get('metrics', {}).get(name))} | | |")
    ceilings = {k: v for k, v in metrics.items() if k.startswith(("oracle_", "baseline_")) and isinstance(v, (int, float))}
    if ceilings:
        lines += ["", "Reference figures of this evaluation: " + ", ".join(
            f"{k} **{_figure(v)}**" + (" (the best any model can reach on this data)" if k.startswith("oracle_") else "")
            for k, v in sorted(ceilings.items()))]
    if drift:
        features = ", ".join(drift.get("violated_features") or []) or "none named"
        lines += ["", f"Started by drift: window from {drift.get('window_start') or '?'}, violated features: {features}."
                  + (f" Report: `{drift['report_uri']}`." if drift.get("report_uri") else "")]
    if links:
        lines += ["", "Links: " + " · ".join(f"[{label}]({url})" for label, url in links.items() if url)]
    lines += ["", "*Approve to staging* or *Approve to prod* sets the version's approval and lifecycle stage in "
              "the registry with your name; *Reject* keeps it in dev and skips the deploy."]
    return "\n".join(lines)
