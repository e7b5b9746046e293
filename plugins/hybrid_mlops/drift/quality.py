"""Model quality of the served model once ground truth arrives, in Model Monitor's shapes, per task.

Ground truth (``{<id>, <label>}`` lines under ``labels/<model>/...``, named by the spec's schema) is
joined with the captured outputs on the id; the window's metrics are compared with the baseline's
evaluation (``evaluation.json`` beside ``model.tar.gz``):

binary      ``binary_classification_metrics``: accuracy, precision, recall, f1, auc, rates
multiclass  ``multiclass_classification_metrics``: accuracy, weighted/macro F1, confusion matrix
regression  ``regression_metrics``: mae, mse, rmse, r2

.. seealso::
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-model-quality-metrics.html
"""

from __future__ import annotations

import math

import numpy as np

from hybrid_mlops import metrics as m

#: Per task: the statistics section, and window metric -> (names in evaluation.json, higher is better).
SECTIONS = {"binary": "binary_classification_metrics", "multiclass": "multiclass_classification_metrics",
            "regression": "regression_metrics"}
GATED = {
    "binary": {"auc": (("roc_auc", "auc", "au_roc"), True), "precision": (("precision",), True),
               "recall": (("recall",), True)},
    "multiclass": {"accuracy": (("accuracy",), True), "weighted_f1": (("weighted_f1",), True)},
    "regression": {"mae": (("mae",), False), "rmse": (("rmse",), False), "r2": (("r2",), True)},
}


def _metric(value: float | None) -> dict:
    ok = value is not None and math.isfinite(value)
    return {"value": float(value) if ok else None, "standard_deviation": "NaN"}


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
    return _statistics(n, evaluation_time, "binary_classification_metrics", {
        "confusion_matrix": {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}},
        "recall": _metric(recall),
        "precision": _metric(precision),
        "accuracy": _metric((tp + tn) / n if n else float("nan")),
        "f1": _metric(f1),
        "auc": _metric(m.roc_auc(y, s) if n else float("nan")),
        "true_positive_rate": _metric(recall),
        "false_positive_rate": _metric(fp / (fp + tn) if fp + tn else float("nan")),
        "threshold": threshold,
    })


def multiclass_classification_statistics(labels: np.ndarray, probabilities: np.ndarray, classes: list[str], *,
                                         evaluation_time: str | None = None) -> dict:
    """``multiclass_classification_metrics`` from class indices and [N, K] probabilities."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64).reshape(len(y), len(classes))
    pred = np.argmax(p, axis=1) if len(y) else np.empty(0, np.int64)
    figures = m.multiclass_metrics(y, p, classes) if len(y) else {}
    matrix = {str(a): {str(b): int(np.count_nonzero((y == i) & (pred == j))) for j, b in enumerate(classes)}
              for i, a in enumerate(classes)}
    return _statistics(len(y), evaluation_time, "multiclass_classification_metrics", {
        "confusion_matrix": matrix,
        "accuracy": _metric(figures.get("accuracy")),
        "weighted_f1": _metric(figures.get("weighted_f1")),
        "macro_f1": _metric(figures.get("macro_f1")),
    })


def regression_statistics(targets: np.ndarray, predictions: np.ndarray, *, evaluation_time: str | None = None) -> dict:
    """``regression_metrics``: mae, mse, rmse, r2."""
    y = np.asarray(targets, dtype=np.float64)
    figures = m.regression_metrics(y, predictions) if y.size else {}
    rmse = figures.get("rmse")
    return _statistics(int(y.size), evaluation_time, "regression_metrics", {
        "mae": _metric(figures.get("mae")), "mse": _metric(None if rmse is None else rmse**2),
        "rmse": _metric(rmse), "r2": _metric(figures.get("r2")),
    })


def _statistics(n: int, evaluation_time: str | None, section: str, body: dict) -> dict:
    return {"version": 0.0,
            "dataset": {"item_count": int(n), **({"evaluation_time": evaluation_time} if evaluation_time else {})},
            section: body}


def window_statistics(task: str, labels: list, outputs: np.ndarray, *, classes: list[str] | None = None,
                      threshold: float = 0.5, evaluation_time: str | None = None) -> dict:
    """Statistics of the labelled rows of a window, by task; rows whose label or output is unusable are left out."""
    if task == "multiclass":
        index = {c: i for i, c in enumerate(classes or [])}
        y = np.array([index.get(str(v), -1) for v in labels], dtype=np.int64)
        keep = (y >= 0) & ~np.isnan(outputs).any(axis=1) if outputs.ndim == 2 else np.zeros(len(y), bool)
        return multiclass_classification_statistics(y[keep], outputs[keep], classes or [], evaluation_time=evaluation_time)
    y = np.array([_float(v) for v in labels], dtype=np.float64)
    keep = ~np.isnan(y) & ~np.isnan(outputs)
    if task == "binary":
        keep &= np.isin(y, (0.0, 1.0))
        return binary_classification_statistics(y[keep], outputs[keep], threshold=threshold,
                                                evaluation_time=evaluation_time)
    return regression_statistics(y[keep], outputs[keep], evaluation_time=evaluation_time)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def baseline_metrics(evaluation: dict, task: str = "binary") -> dict[str, float]:
    """The gated window metrics found in an ``evaluation.json`` (flat, or under ``metrics``)."""
    flat = dict(evaluation or {})
    for key in ("metrics", "validation", SECTIONS[task]):
        if isinstance(flat.get(key), dict):
            flat = {**flat, **flat[key]}
    out = {}
    for name, (keys, _) in GATED[task].items():
        for key in keys:
            value = flat.get(key)
            if isinstance(value, dict):
                value = value.get("value")
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[name] = float(value)
                break
    return out


def quality_constraints(baseline: dict[str, float], tolerance: float = 0.05, task: str = "binary") -> dict:
    """Model Monitor model-quality ``constraints.json``: each metric may get ``tolerance`` worse than the
    baseline (relative for error metrics, absolute for scores)."""
    rules = {}
    for name, value in sorted(baseline.items()):
        higher_is_better = GATED[task][name][1]
        if higher_is_better:
            rules[name] = {"threshold": max(value - tolerance, 0.0) if name != "r2" else value - tolerance,
                           "comparison_operator": "LessThanThreshold"}
        else:
            rules[name] = {"threshold": value * (1 + tolerance), "comparison_operator": "GreaterThanThreshold"}
    section = SECTIONS[task].replace("_metrics", "_constraints")
    return {"version": 0.0, section: rules}


def quality_violations(statistics: dict, constraints: dict, *, min_labels: int = 100) -> list[dict]:
    """Model Monitor model-quality violations (``constraint_check_type`` = the comparison operator)."""
    if statistics["dataset"]["item_count"] < min_labels:
        return []
    section = next(k for k in statistics if k.endswith("_metrics"))
    figures = statistics[section]
    rules = constraints.get(section.replace("_metrics", "_constraints"), {})
    out = []
    for name, rule in rules.items():
        value = (figures.get(name) or {}).get("value")
        if value is None:
            continue
        op, threshold = rule["comparison_operator"], rule["threshold"]
        if (op == "LessThanThreshold" and value < threshold) or (op == "GreaterThanThreshold" and value > threshold):
            out.append({
                "constraint_check_type": op,
                "metric_name": name,
                "description": f"Metric {name} with {value:.6g} was {op} '{threshold:.6g}'",
            })
    return out
