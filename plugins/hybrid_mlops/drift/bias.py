"""Bias drift in SageMaker Clarify's shapes: pre- and post-training bias metrics of one facet, per window.

Clarify's conventions: the facet value(s) given (``facet.values``, or ``> facet.threshold`` for a
numeric facet) pick the *disadvantaged* group ``d``; every other row is ``a``. The label's positive
outcome is ``label in label.values`` (or ``> label.threshold``); a prediction is positive the same way
(binary: ``probability >= threshold``; multiclass: the argmax class; regression: the prediction).

Pre-training (labels only): CI, DPL, KL, JS, LP (p = 2), TVD, KS, CDDL (with a group column).
Post-training (labels and predictions): DPPL, DI, DCAcc, DCR, RD, SD, DAR, DRR, AD, TE, CDDPL (with a
group column), GE (alpha = 2). FT (the counterfactual flip test) needs the model on altered rows and is
not computed here.

Bias drift (Model Monitor's ``bias_drift_check``): a window's metric is a violation when it lies farther
from the metric's ideal value (0; 1 for DI) than the baseline's (computed on the version's validation
data) by more than ``drift.bias.tolerance``, or, when ``drift.bias.thresholds`` names the metric, farther
than that bound.

.. seealso::
    https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-measure-data-bias.html
    https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-measure-post-training-bias.html
    https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-model-monitor-bias-drift-violations.html
"""

from __future__ import annotations

import math

import numpy as np

from hybrid_mlops.drift.bias_metrics import IDEAL, POST_TRAINING, PRE_TRAINING  # noqa: F401  (re-exported)


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def facet_mask(values: np.ndarray, facet_values: list | None, threshold: float | None) -> np.ndarray:
    """Rows of the disadvantaged group ``d``: value in ``facet_values`` (compared as text), or ``> threshold``."""
    if threshold is not None:
        v = np.asarray(values, dtype=np.float64)
        return np.nan_to_num(v, nan=-np.inf) > threshold
    wanted = {str(x) for x in facet_values or []}
    return np.fromiter((v is not None and str(v) in wanted for v in np.asarray(values, dtype=object).tolist()),
                       bool, len(values))


def positive(values: np.ndarray, label_values: list | None, threshold: float | None) -> np.ndarray:
    """The positive outcome: value in ``label_values`` (as text; ``1`` matches ``1.0``), or ``> threshold``."""
    if threshold is not None:
        return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-np.inf) > threshold
    wanted = {_text(x) for x in label_values or []}
    return np.fromiter((_text(v) in wanted for v in np.asarray(values, dtype=object).tolist()), bool, len(values))


def _text(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _demographic_disparity(d: np.ndarray, pos: np.ndarray) -> float:
    """DD_d: facet d's share of the rejected minus its share of the accepted."""
    return _div(np.count_nonzero(d & ~pos), np.count_nonzero(~pos)) - _div(np.count_nonzero(d & pos), np.count_nonzero(pos))


def _conditional_disparity(d: np.ndarray, pos: np.ndarray, groups: np.ndarray | None) -> float:
    """CDD: the demographic disparity per group, weighted by the group's size."""
    if groups is None:
        return float("nan")
    keys = np.asarray(groups, dtype=object).astype(str)
    total, n = 0.0, 0
    for g in np.unique(keys):
        in_g = keys == g
        dd = _demographic_disparity(d[in_g], pos[in_g])
        if math.isfinite(dd):
            total += dd * int(in_g.sum())
            n += int(in_g.sum())
    return total / n if n else float("nan")


def pre_training_metrics(d: np.ndarray, label_pos: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """The pre-training metrics of facet ``d`` (mask) for the positive labels ``label_pos``."""
    a = ~d
    n_a, n_d = int(a.sum()), int(d.sum())
    q_a, q_d = _div(np.count_nonzero(label_pos & a), n_a), _div(np.count_nonzero(label_pos & d), n_d)
    p_a, p_d = np.array([1 - q_a, q_a]), np.array([1 - q_d, q_d])  # label distributions (negative, positive)

    def kl(p, q):
        nz = p > 0
        return float(np.sum(p[nz] * np.log(p[nz] / q[nz]))) if np.all(q[nz] > 0) else float("inf")

    m = (p_a + p_d) / 2
    return {
        "CI": _div(n_a - n_d, n_a + n_d),
        "DPL": q_a - q_d,
        "KL": kl(p_a, p_d),
        "JS": 0.5 * (kl(p_a, m) + kl(p_d, m)),
        "LP": float(np.sqrt(np.sum((p_a - p_d) ** 2))),
        "TVD": 0.5 * float(np.sum(np.abs(p_a - p_d))),
        "KS": float(np.max(np.abs(p_a - p_d))),
        "CDDL": _conditional_disparity(d, label_pos, groups),
    }


def post_training_metrics(d: np.ndarray, label_pos: np.ndarray, pred_pos: np.ndarray,
                          groups: np.ndarray | None = None) -> dict[str, float]:
    """The post-training metrics of facet ``d`` from observed (``label_pos``) and predicted (``pred_pos``) outcomes."""
    y, yh = label_pos, pred_pos

    def confusion(g):
        return (int(np.count_nonzero(g & y & yh)), int(np.count_nonzero(g & ~y & yh)),
                int(np.count_nonzero(g & y & ~yh)), int(np.count_nonzero(g & ~y & ~yh)))

    a = ~d
    tp_a, fp_a, fn_a, tn_a = confusion(a)
    tp_d, fp_d, fn_d, tn_d = confusion(d)
    n_a, n_d = tp_a + fp_a + fn_a + tn_a, tp_d + fp_d + fn_d + tn_d
    qh_a, qh_d = _div(tp_a + fp_a, n_a), _div(tp_d + fp_d, n_d)
    b = yh.astype(np.float64) - y.astype(np.float64) + 1.0  # GE's benefit per row
    mu = b.mean() if b.size else float("nan")
    return {
        "DPPL": qh_a - qh_d,
        "DI": _div(qh_d, qh_a),
        "DCAcc": _div(tp_a + fn_a, tp_a + fp_a) - _div(tp_d + fn_d, tp_d + fp_d),
        "DCR": _div(tn_a + fp_a, tn_a + fn_a) - _div(tn_d + fp_d, tn_d + fn_d),
        "RD": _div(tp_a, tp_a + fn_a) - _div(tp_d, tp_d + fn_d),
        "SD": _div(tn_d, tn_d + fp_d) - _div(tn_a, tn_a + fp_a),
        "DAR": _div(tp_a, tp_a + fp_a) - _div(tp_d, tp_d + fp_d),
        "DRR": _div(tn_d, tn_d + fn_d) - _div(tn_a, tn_a + fn_a),
        "AD": _div(tp_a + tn_a, n_a) - _div(tp_d + tn_d, n_d),
        "TE": _div(fn_d, fp_d) - _div(fn_a, fp_a),
        "CDDPL": _conditional_disparity(d, yh, groups),
        "GE": float(np.mean((b / mu) ** 2 - 1) / 2) if b.size and mu else float("nan"),
    }


def _section(metrics: dict[str, float], names: list[str], descriptions: dict[str, str], *, label: str,
             label_value: str, facet: str, facet_value: str) -> dict:
    return {"label": label, "label_value_or_threshold": label_value,
            "facets": {facet: [{"value_or_threshold": facet_value,
                                "metrics": [{"name": n, "description": descriptions[n], "value": _finite(metrics[n])}
                                            for n in names if n in descriptions]}]}}


def analysis(config, *, facet_values: np.ndarray, labels: np.ndarray, predicted_positive: np.ndarray | None,
             label_name: str, groups: np.ndarray | None = None) -> dict:
    """Clarify's bias ``analysis.json``: ``pre_training_bias_metrics`` and (with predictions)
    ``post_training_bias_metrics``, for the spec's ``drift.bias`` (``config``) over the given rows."""
    d = facet_mask(facet_values, config.facet_values, config.facet_threshold)
    label_values = config.label_values if config.label_values or config.label_threshold is not None else [1]
    y = positive(labels, label_values, config.label_threshold)
    facet_value = (",".join(str(v) for v in config.facet_values) if config.facet_threshold is None
                   else str(config.facet_threshold))
    label_value = (",".join(str(v) for v in label_values) if config.label_threshold is None
                   else str(config.label_threshold))
    common = {"label": label_name, "label_value": label_value, "facet": config.facet, "facet_value": facet_value}
    out = {"version": "1.0"}
    pre = [m for m in config.metrics if m in PRE_TRAINING]
    post = [m for m in config.metrics if m in POST_TRAINING]
    if pre:
        out["pre_training_bias_metrics"] = _section(pre_training_metrics(d, y, groups), pre, PRE_TRAINING, **common)
    if post and predicted_positive is not None:
        out["post_training_bias_metrics"] = _section(
            post_training_metrics(d, y, np.asarray(predicted_positive, bool), groups), post, POST_TRAINING, **common)
    return out


def metric_values(doc: dict) -> dict[tuple[str, str, str], float | None]:
    """``(facet, facet value, metric) -> value`` of a bias ``analysis.json``."""
    out = {}
    for section in ("pre_training_bias_metrics", "post_training_bias_metrics"):
        for facet, entries in ((doc or {}).get(section) or {}).get("facets", {}).items():
            for entry in entries:
                for metric in entry["metrics"]:
                    out[(facet, str(entry["value_or_threshold"]), metric["name"])] = metric.get("value")
    return out


def violations(window: dict, baseline: dict, *, tolerance: float = 0.0,
               thresholds: dict[str, float] | None = None) -> list[dict]:
    """Model Monitor's bias drift violations (``bias_drift_check``) of a window's analysis vs the baseline's."""
    base = metric_values(baseline)
    out = []
    for (facet, facet_value, name), value in sorted(metric_values(window).items()):
        if value is None:
            continue
        ideal = IDEAL.get(name, 0.0)
        if thresholds and name in thresholds:
            bound, why = float(thresholds[name]), f"the bound {thresholds[name]:.6g} (drift.bias.thresholds.{name})"
        else:
            ref = base.get((facet, facet_value, name))
            if ref is None:
                continue
            bound = abs(ref - ideal) + tolerance
            why = f"the baseline's {ref:.6g}" + (f" (+ tolerance {tolerance:g})" if tolerance else "")
        if abs(value - ideal) > bound:
            out.append({"facet": facet, "facet_value": facet_value, "metric_name": name,
                        "constraint_check_type": "bias_drift_check",
                        "description": f"Value {value:.6g} does not meet the constraint requirement: farther from "
                                       f"{ideal:g} than {why}"})
    return out
