"""Feature attribution drift as Model Monitor computes it: nDCG of a window's SHAP ranking vs the baseline's.

The SHAP values themselves come from ``include/monitoring/attributions.py``, run where the model runs
(Clarify's ``analysis.json`` shape: ``explanations.kernel_shap.<label>.global_shap_values``). Here, with
no model and numpy only: for each label, the baseline's global SHAP values are the relevances and the
window's values the scores; ``nDCG = DCG(window ranking) / DCG(baseline ranking)`` with the discount
``1 / log2(rank + 1)`` and tied scores sharing their positions' discounts (scikit-learn's ``ndcg_score``
with ``ignore_ties=False``). Below ``drift.feature_attribution.ndcg_threshold`` (0.9 in Model Monitor)
the label is a ``feature_attribution_drift_check`` violation.

.. seealso::
    https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-model-monitor-feature-attribution-drift.html
    https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-model-monitor-model-attribution-drift-violations.html
"""

from __future__ import annotations

import numpy as np


def _dcg(relevance: np.ndarray, score: np.ndarray) -> float:
    """DCG of ``relevance`` ranked by ``score`` (descending); a group of tied scores gets its mean relevance
    at each of its positions."""
    discount = 1.0 / np.log2(np.arange(relevance.size) + 2)
    _, inverse, counts = np.unique(-score, return_inverse=True, return_counts=True)
    gains = np.zeros(counts.size)
    np.add.at(gains, inverse, relevance)
    gains /= counts
    ends = np.cumsum(counts)
    cum = np.concatenate(([0.0], np.cumsum(discount)))
    return float(np.sum(gains * (cum[ends] - cum[ends - counts])))


def ndcg(baseline: dict[str, float], window: dict[str, float]) -> float:
    """nDCG of the window's ranking of the baseline's features (a feature the window lacks scores 0).
    1.0 when the window ranks them as the baseline does; 1.0 too when the baseline gives no relevance."""
    names = list(baseline)
    relevance = np.array([abs(float(baseline[n])) for n in names])
    score = np.array([abs(float(window.get(n, 0.0) or 0.0)) for n in names])
    ideal = _dcg(relevance, relevance)
    return _dcg(relevance, score) / ideal if ideal > 0 else 1.0


def global_shap(analysis: dict) -> dict[str, dict[str, float]]:
    """``label -> {feature: global SHAP value}`` of a Clarify explainability ``analysis.json``."""
    methods = ((analysis or {}).get("explanations") or {}).get("kernel_shap") or {}
    return {label: dict(body.get("global_shap_values") or {}) for label, body in methods.items()}


def compare(window: dict, baseline: dict, threshold: float = 0.9) -> tuple[dict[str, float], list[dict]]:
    """``({label: nDCG}, violations)``: Model Monitor's feature attribution drift check of a window's
    ``analysis.json`` against the baseline's."""
    base, cur = global_shap(baseline), global_shap(window)
    scores, violations = {}, []
    for label, values in sorted(base.items()):
        if label not in cur:
            continue
        score = ndcg(values, cur[label])
        scores[label] = score
        if score < threshold:
            top = sorted(values, key=lambda f: -abs(values[f]))[:3]
            now = sorted(cur[label], key=lambda f: -abs(cur[label][f]))[:3]
            violations.append({
                "label": label, "metric_name": "shap", "constraint_check_type": "feature_attribution_drift_check",
                "description": f"Feature attribution drift {score:.4f} exceeds threshold {threshold:g} (nDCG of the "
                               f"window's ranking below it; top features were {top}, now {now})",
            })
    return scores, violations
