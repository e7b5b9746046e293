"""Binary-classification metrics, vectorised (numpy only).

Shipped inside the training source bundle as well, so the training job and the monitor compute
ROC AUC and friends the same way.
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
