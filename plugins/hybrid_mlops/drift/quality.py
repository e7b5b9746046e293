"""Model quality of the served model once ground truth arrives, in Model Monitor's shapes.

Labels (``{"transaction_id", "label"}`` lines under ``labels/<model>/...``) are joined with the
captured outputs on ``transaction_id``; ROC AUC, precision and recall of the window are compared
with the baseline's evaluation (``evaluation.json`` in ``model.tar.gz``).

.. seealso::
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-model-quality-metrics.html
"""

from __future__ import annotations

import math

import numpy as np

from hybrid_mlops.data.generator import roc_auc

#: Window metric -> names it may carry in the baseline's evaluation.json.
_BASELINE_KEYS = {"au_roc": ("roc_auc", "au_roc", "auc"), "precision": ("precision",), "recall": ("recall",)}


def _metric(value: float | None) -> dict:
    return {"value": None if value is None or not math.isfinite(value) else float(value), "standard_deviation": 0.0}


def binary_classification_statistics(
    labels: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5, evaluation_time: str | None = None
) -> dict:
    """Model Monitor model-quality ``statistics.json`` (``binary_classification_metrics``)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pred = s >= threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    tn = int(np.count_nonzero(~pred & ~y))
    n = y.size
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if (tp and precision + recall) else float("nan")
    return {
        "version": 0.0,
        "dataset": {"item_count": int(n), **({"evaluation_time": evaluation_time} if evaluation_time else {})},
        "binary_classification_metrics": {
            "confusion_matrix": {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}},
            "recall": _metric(recall),
            "precision": _metric(precision),
            "accuracy": _metric((tp + tn) / n if n else float("nan")),
            "f1": _metric(f1),
            "au_roc": _metric(roc_auc(y, s) if n else float("nan")),
            "true_positive_rate": _metric(recall),
            "false_positive_rate": _metric(fp / (fp + tn) if fp + tn else float("nan")),
            "threshold": threshold,
        },
    }


def baseline_metrics(evaluation: dict) -> dict[str, float]:
    """``{"au_roc", "precision", "recall"}`` found in an ``evaluation.json`` (flat, or under ``metrics``)."""
    flat = dict(evaluation or {})
    for key in ("metrics", "validation", "binary_classification_metrics"):
        if isinstance(flat.get(key), dict):
            flat = {**flat, **flat[key]}
    out = {}
    for name, keys in _BASELINE_KEYS.items():
        for key in keys:
            value = flat.get(key)
            if isinstance(value, dict):
                value = value.get("value")
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[name] = float(value)
                break
    return out


def quality_constraints(baseline: dict[str, float], tolerance: float = 0.05) -> dict:
    """Model Monitor model-quality ``constraints.json``: each metric may drop ``tolerance`` below baseline."""
    return {
        "version": 0.0,
        "binary_classification_constraints": {
            name: {"threshold": max(value - tolerance, 0.0), "comparison_operator": "LessThanThreshold"}
            for name, value in sorted(baseline.items())
        },
    }


def quality_violations(statistics: dict, constraints: dict, *, min_labels: int = 100) -> list[dict]:
    """Model Monitor model-quality violations (``constraint_check_type`` = the comparison operator)."""
    metrics = statistics["binary_classification_metrics"]
    if statistics["dataset"]["item_count"] < min_labels:
        return []
    out = []
    for name, rule in constraints.get("binary_classification_constraints", {}).items():
        value = (metrics.get(name) or {}).get("value")
        if value is None:
            continue
        if rule["comparison_operator"] == "LessThanThreshold" and value < rule["threshold"]:
            out.append({
                "constraint_check_type": "LessThanThreshold",
                "metric_name": name,
                "description": f"Metric {name} with {value:.6g} was LessThanThreshold '{rule['threshold']:.6g}'",
            })
    return out
