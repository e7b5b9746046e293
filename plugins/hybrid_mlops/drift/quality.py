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


def _fbeta(precision: float, recall: float, beta: float) -> float:
    b2 = beta * beta
    denominator = b2 * precision + recall
    return (1 + b2) * precision * recall / denominator if denominator > 0 else float("nan")


def _binary_figures(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Precision, recall, accuracy and F-scores of one confusion matrix (NaN where undefined)."""
    n = tp + fp + fn + tn
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return {"precision": precision, "recall": recall, "accuracy": (tp + tn) / n if n else float("nan"),
            **{name: _fbeta(precision, recall, beta) for name, beta in (("f0_5", 0.5), ("f1", 1.0), ("f2", 2.0))}}


def _best_constant(y: np.ndarray) -> dict[str, float]:
    """Each metric of the better constant classifier (every row positive, or every row negative)."""
    pos, n = int(np.count_nonzero(y)), int(y.size)
    always_yes = _binary_figures(pos, n - pos, 0, 0)
    always_no = _binary_figures(0, 0, pos, n - pos)
    return {k: max((v for v in (always_yes[k], always_no[k]) if math.isfinite(v)), default=float("nan"))
            for k in always_yes}


def _curves(y: np.ndarray, s: np.ndarray, points: int = 100) -> tuple[dict, dict]:
    """ROC and precision-recall curves at up to ``points`` score thresholds (highest first)."""
    thresholds, tp, fp, n_pos = m._curve(y, s)
    if len(thresholds) > points:
        keep = np.unique(np.linspace(0, len(thresholds) - 1, points).round().astype(int))
        thresholds, tp, fp = thresholds[keep], tp[keep], fp[keep]
    n_neg = y.size - n_pos
    tpr = (tp / n_pos).tolist() if n_pos else []
    fpr = (fp / n_neg).tolist() if n_neg else []
    precision = (tp / np.maximum(tp + fp, 1)).tolist()
    return ({"false_positive_rates": fpr, "true_positive_rates": tpr},
            {"precisions": precision, "recalls": tpr})


def binary_classification_statistics(
    labels: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5, evaluation_time: str | None = None
) -> dict:
    """Model Monitor model-quality ``statistics.json`` (``binary_classification_metrics``): the
    figures at ``threshold``, the best constant classifier's, the ROC and precision-recall curves."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pred = s >= threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    tn = int(np.count_nonzero(~pred & ~y))
    figures = _binary_figures(tp, fp, fn, tn)
    best = _best_constant(y)
    roc, pr = _curves(y, s) if y.size else ({"false_positive_rates": [], "true_positive_rates": []},
                                             {"precisions": [], "recalls": []})
    body: dict = {"confusion_matrix": {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}}}
    for name in ("recall", "precision", "accuracy"):
        body[name] = _metric(figures[name])
        body[f"{name}_best_constant_classifier"] = _metric(best[name])
    body.update({
        "true_positive_rate": _metric(figures["recall"]),
        "true_negative_rate": _metric(tn / (tn + fp) if tn + fp else float("nan")),
        "false_positive_rate": _metric(fp / (fp + tn) if fp + tn else float("nan")),
        "false_negative_rate": _metric(fn / (fn + tp) if fn + tp else float("nan")),
        "receiver_operating_characteristic_curve": roc,
        "precision_recall_curve": pr,
        "auc": _metric(m.roc_auc(y, s) if y.size else float("nan")),
    })
    for name in ("f0_5", "f1", "f2"):
        body[name] = _metric(figures[name])
        body[f"{name}_best_constant_classifier"] = _metric(best[name])
    body["threshold"] = threshold
    return _statistics(int(y.size), evaluation_time, "binary_classification_metrics", body)


def multiclass_classification_statistics(labels: np.ndarray, probabilities: np.ndarray, classes: list[str], *,
                                         evaluation_time: str | None = None) -> dict:
    """``multiclass_classification_metrics``: accuracy and weighted recall, precision, F0.5, F1, F2,
    each beside the best constant classifier's (always the most frequent class); macro F1 too."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64).reshape(len(y), len(classes))
    pred = np.argmax(p, axis=1) if len(y) else np.empty(0, np.int64)
    matrix = {str(a): {str(b): int(np.count_nonzero((y == i) & (pred == j))) for j, b in enumerate(classes)}
              for i, a in enumerate(classes)}
    body: dict = {"confusion_matrix": matrix}
    constant = np.full(len(y), np.bincount(y, minlength=len(classes)).argmax() if len(y) else 0)
    for suffix, predicted in (("", pred), ("_best_constant_classifier", constant)):
        weighted = _weighted(y, predicted, len(classes))
        body[f"accuracy{suffix}"] = _metric(float(np.mean(predicted == y)) if len(y) else float("nan"))
        for name, value in weighted.items():
            body[f"weighted_{name}{suffix}"] = _metric(value)
    body["macro_f1"] = _metric(m.multiclass_metrics(y, p, classes)["macro_f1"] if len(y) else float("nan"))
    return _statistics(len(y), evaluation_time, "multiclass_classification_metrics", body)


def _weighted(y: np.ndarray, predicted: np.ndarray, k: int) -> dict[str, float]:
    """Support-weighted recall, precision and F-scores over the classes."""
    support = np.bincount(y, minlength=k).astype(np.float64)
    if not support.sum():
        return {n: float("nan") for n in ("recall", "precision", "f0_5", "f1", "f2")}
    per = [_binary_figures(int(np.count_nonzero((predicted == c) & (y == c))),
                           int(np.count_nonzero((predicted == c) & (y != c))),
                           int(np.count_nonzero((predicted != c) & (y == c))), 0) for c in range(k)]
    out = {}
    for name in ("recall", "precision", "f0_5", "f1", "f2"):
        values = np.array([f[name] if math.isfinite(f[name]) else 0.0 for f in per])
        out[name] = float(np.dot(values, support) / support.sum())
    return out


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
