"""Model quality in Model Monitor's shapes, on windows whose figures are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_mlops.drift import quality


def value(section: dict, name: str) -> float:
    return section[name]["value"]


def test_binary_figures_best_constant_and_curves():
    # threshold 0.5: tp=1 fp=1 fn=1 tn=2
    stats = quality.binary_classification_statistics([1, 1, 0, 0, 0], [0.9, 0.4, 0.6, 0.2, 0.1], threshold=0.5)
    b = stats["binary_classification_metrics"]
    assert b["confusion_matrix"] == {"0": {"0": 2, "1": 1}, "1": {"0": 1, "1": 1}}
    for name, want in (("precision", 0.5), ("recall", 0.5), ("accuracy", 0.6), ("f1", 0.5), ("f2", 0.5),
                       ("f0_5", 0.5), ("true_negative_rate", 2 / 3), ("false_negative_rate", 0.5),
                       ("false_positive_rate", 1 / 3), ("true_positive_rate", 0.5)):
        assert value(b, name) == pytest.approx(want), name
    # the better of "always 1" (precision 0.4, recall 1) and "always 0" (accuracy 0.6)
    for name, want in (("precision", 0.4), ("recall", 1.0), ("accuracy", 0.6), ("f1", 0.8 / 1.4),
                       ("f2", 2 / 2.6), ("f0_5", 0.5 / 1.1)):
        assert value(b, f"{name}_best_constant_classifier") == pytest.approx(want), name
    assert value(b, "auc") == pytest.approx(5 / 6)
    assert b["recall"]["standard_deviation"] == "NaN"  # as Model Monitor writes it under 200 rows
    roc, pr = b["receiver_operating_characteristic_curve"], b["precision_recall_curve"]
    assert len(roc["false_positive_rates"]) == len(roc["true_positive_rates"]) == len(pr["precisions"]) == 5
    assert roc["true_positive_rates"][-1] == 1.0 and roc["false_positive_rates"][-1] == 1.0


def test_multiclass_weighted_figures_and_best_constant():
    y = np.array([0, 0, 1, 2, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 2, 2, 0]]  # predictions 0 1 1 2 2 0
    m = quality.multiclass_classification_statistics(y, probs, ["a", "b", "c"])["multiclass_classification_metrics"]
    assert value(m, "accuracy") == pytest.approx(4 / 6)
    assert value(m, "accuracy_best_constant_classifier") == pytest.approx(3 / 6)  # always "c"
    # recall per class 1/2, 1, 2/3 weighted by support 2, 1, 3
    assert value(m, "weighted_recall") == pytest.approx((0.5 * 2 + 1 * 1 + 2 / 3 * 3) / 6)
    assert value(m, "weighted_recall_best_constant_classifier") == pytest.approx(3 / 6)
    assert m["confusion_matrix"]["c"] == {"a": 1, "b": 0, "c": 2}
    assert {"weighted_f0_5", "weighted_f2", "weighted_precision_best_constant_classifier"} <= set(m)


def test_regression_and_constraints_in_the_metrics_direction():
    r = quality.regression_statistics([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])["regression_metrics"]
    assert value(r, "mse") == pytest.approx(4 / 3) and value(r, "rmse") == pytest.approx((4 / 3) ** 0.5)
    constraints = quality.quality_constraints({"rmse": 1.0, "r2": 0.5}, 0.1, "regression")
    assert constraints["regression_constraints"]["rmse"] == {"threshold": pytest.approx(1.1),
                                                             "comparison_operator": "GreaterThanThreshold"}
    stats = quality.regression_statistics(np.arange(200.0), np.arange(200.0) + 3)
    (v,) = [x for x in quality.quality_violations(stats, constraints) if x["metric_name"] == "rmse"]
    assert v["constraint_check_type"] == "GreaterThanThreshold"
