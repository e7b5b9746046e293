"""Approval rules at their edges: 0.85 and 0.95 on accuracy (the reference), with the ROC AUC bar."""

from __future__ import annotations

import pytest

from hybrid_mlops.approval import decide
from hybrid_mlops.specs.model import MetricRule

RULES = {"accuracy": MetricRule(approve_at=0.95, reject_below=0.85)}
BOTH = {**RULES, "roc_auc": MetricRule(approve_at=0.90, reject_below=0.80)}


@pytest.mark.parametrize(
    "accuracy, outcome",
    [(0.95, "Approve"), (0.9500001, "Approve"), (1.0, "Approve"), (0.9499999, "Human"), (0.90, "Human"),
     (0.85, "Human"), (0.8499999, "Reject"), (0.0, "Reject")],
)
def test_accuracy_edges(accuracy, outcome):
    assert decide({"accuracy": accuracy}, RULES).outcome == outcome


def test_statuses_and_reasons():
    approve = decide({"accuracy": 0.97, "roc_auc": 0.95}, BOTH)
    assert approve.status == "Approved" and "accuracy=0.9700 >= 0.95" in approve.reason
    reject = decide({"accuracy": 0.98, "roc_auc": 0.79}, BOTH)
    assert reject.status == "Rejected" and reject.reason == "auto-rejected: roc_auc=0.7900 < 0.8"
    human = decide({"accuracy": 0.98, "roc_auc": 0.85}, BOTH)
    assert human.status is None and "roc_auc=0.8500 in [0.8, 0.9)" in human.reason


def test_high_accuracy_alone_does_not_approve_a_useless_model():
    # always predicting "legit" on 2 % fraud: accuracy 0.98, ROC AUC 0.5
    assert decide({"accuracy": 0.98, "roc_auc": 0.5}, BOTH).outcome == "Reject"


def test_missing_or_nan_metric_goes_to_a_person():
    assert decide({"accuracy": 0.99}, BOTH).outcome == "Human"
    assert decide({"accuracy": 0.99, "roc_auc": float("nan")}, BOTH).outcome == "Human"


LOWER = {"rmse": MetricRule(approve_at=50.0, reject_above=70.0), "r2": MetricRule(approve_at=0.4, reject_below=0.2)}


@pytest.mark.parametrize(
    "rmse, outcome",
    [(50.0, "Approve"), (10.0, "Approve"), (50.0001, "Human"), (70.0, "Human"), (70.0001, "Reject")],
)
def test_lower_is_better_edges(rmse, outcome):
    assert decide({"rmse": rmse, "r2": 0.5}, LOWER).outcome == outcome


def test_lower_is_better_reasons():
    assert decide({"rmse": 80.0, "r2": 0.5}, LOWER).reason == "auto-rejected: rmse=80.0000 > 70.0"
    assert "rmse=60.0000 in (50.0, 70.0]" in decide({"rmse": 60.0, "r2": 0.5}, LOWER).reason
    assert decide({"rmse": 40.0, "r2": 0.5}, LOWER).reason == "auto-approved: rmse=40.0000 <= 50.0; r2=0.5000 >= 0.4"
