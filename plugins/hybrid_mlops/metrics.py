"""Model metrics per task (binary, multiclass, regression), vectorised, numpy only.

Shipped inside the training source bundle as well, so the training job, the approval gate and the
monitor compute every figure the same way.
"""

from __future__ import annotations

import numpy as np


def roc_auc(labels, scores) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _curve(labels, scores):
    """Cumulative true/false positives at each distinct score, highest score first."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return s[last], tp, fp, int(labels.sum())


def average_precision(labels, scores) -> float:
    """Area under the precision-recall curve (step-wise, as sklearn's average_precision_score)."""
    thresholds, tp, fp, n_pos = _curve(labels, scores)
    if n_pos == 0:
        return float("nan")
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_f1_threshold(labels, scores) -> float:
    """The score threshold (predict positive at >=) that maximises F1."""
    thresholds, tp, fp, n_pos = _curve(labels, scores)
    if n_pos == 0:
        return 0.5
    f1 = 2 * tp / (tp + fp + n_pos)
    return float(thresholds[int(np.argmax(f1))])


def classification_metrics(labels, scores, threshold: float) -> dict[str, float]:
    """Accuracy, ROC AUC, PR AUC, precision, recall and F1 at ``threshold``."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "roc_auc": roc_auc(labels, scores),
        "pr_auc": average_precision(labels, scores),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "threshold": float(threshold),
        "rows": int(labels.size),
        "positives": int(labels.sum()),
    }


def log_loss(labels, probabilities, eps: float = 1e-7) -> float:
    """Mean cross-entropy: ``probabilities`` [N] (binary, P(positive)) or [N, K] with integer labels."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim == 1:
        y = y.astype(np.float64)
        p = np.clip(p, eps, 1 - eps)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    picked = np.clip(p[np.arange(len(y)), y.astype(np.int64)], eps, 1.0)
    return float(-np.mean(np.log(picked)))


def binary_metrics(labels, scores, threshold: float) -> dict[str, float]:
    """:func:`classification_metrics` plus log loss."""
    return {**classification_metrics(labels, scores, threshold), "log_loss": log_loss(labels, scores)}


def multiclass_metrics(labels, probabilities, classes) -> dict:
    """Accuracy, macro/weighted F1, log loss and per-class precision/recall/F1 (labels: class indices)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    predicted = np.argmax(p, axis=1)
    per_class, f1s, support = {}, [], []
    for k, name in enumerate(classes):
        tp = int(np.sum((predicted == k) & (y == k)))
        fp = int(np.sum((predicted == k) & (y != k)))
        fn = int(np.sum((predicted != k) & (y == k)))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[str(name)] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
        f1s.append(f1)
        support.append(tp + fn)
    weights = np.asarray(support, dtype=np.float64)
    return {
        "accuracy": float(np.mean(predicted == y)) if y.size else float("nan"),
        "macro_f1": float(np.mean(f1s)),
        "weighted_f1": float(np.dot(f1s, weights) / weights.sum()) if weights.sum() else float("nan"),
        "log_loss": log_loss(y, p),
        "rows": int(y.size),
        "per_class": per_class,
    }


def regression_metrics(targets, predictions) -> dict[str, float]:
    """MAE, RMSE and R² (1 - SS_res / SS_tot)."""
    y = np.asarray(targets, dtype=np.float64)
    f = np.asarray(predictions, dtype=np.float64)
    err = f - y
    ss_tot = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
    return {
        "mae": float(np.mean(np.abs(err))) if y.size else float("nan"),
        "rmse": float(np.sqrt(np.mean(err**2))) if y.size else float("nan"),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "rows": int(y.size),
    }
