"""SageMaker Model Monitor file formats: ``statistics.json``, ``constraints.json``, violations.

numpy and the standard library only: this module is copied into the training source bundle, where
the training entry writes the baseline (``statistics.json`` and ``constraints.json``) into
``model.tar.gz``; the monitor DAG writes the same shapes for every window it checks.

.. seealso::
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-statistics.html
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-byoc-constraints.html
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-violations.html
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FORMAT_VERSION = 0.0
KLL_K = 2048
KLL_C = 0.64
HISTOGRAM_BUCKETS = 10
MAX_CATEGORICAL_BUCKETS = 1000

#: ``constraint_check_type`` values of ``constraint_violations.json`` (data quality).
CHECK_TYPES = (
    "data_type_check",
    "completeness_check",
    "baseline_drift_check",
    "missing_column_check",
    "extra_column_check",
    "categorical_values_check",
)


def _float(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _numeric_values(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype == object:
        out = np.full(values.shape, np.nan)
        for i, v in enumerate(values.tolist()):
            try:
                out[i] = float(v) if v is not None else np.nan
            except (TypeError, ValueError):
                out[i] = np.nan
        return out
    return values.astype(np.float64, copy=False)


def _is_missing_string(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=object)
    return np.fromiter((v is None or (isinstance(v, float) and v != v) for v in values.tolist()), bool, values.size)


def kll_sketch(sorted_present: np.ndarray, k: int = KLL_K) -> dict:
    """A deterministic KLL-shaped summary of sorted values: ``{"parameters", "data"}``.

    ``data[level]`` holds items of weight ``2**level``. Up to ``k`` evenly spaced order statistics are
    kept at the level whose weight best matches ``n / k``, so a reader that weights items by
    ``2**level`` recovers the quantiles (exact when ``n <= k``).
    """
    n = sorted_present.size
    if n == 0:
        return {"parameters": {"c": KLL_C, "k": float(k)}, "data": [[]]}
    if n <= k:
        items = sorted_present
        level = 0
    else:
        level = max(int(round(math.log2(n / k))), 0)
        count = max(int(round(n / 2**level)), 1)
        idx = np.minimum(((np.arange(count) + 0.5) * n / count).astype(np.int64), n - 1)
        items = sorted_present[idx]
    data: list[list[float]] = [[] for _ in range(level)] + [[float(v) for v in items]]
    return {"parameters": {"c": KLL_C, "k": float(k)}, "data": data}


def sketch_quantile_sample(kll: dict) -> tuple[np.ndarray, np.ndarray]:
    """Items and weights of a KLL sketch (as written by :func:`kll_sketch` or Model Monitor)."""
    values, weights = [], []
    for level, items in enumerate(kll.get("data") or []):
        values.extend(items)
        weights.extend([2.0**level] * len(items))
    return np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)


def histogram_buckets(present: np.ndarray, lo: float, hi: float, bins: int = HISTOGRAM_BUCKETS) -> list[dict]:
    """Equal-width buckets between min and max, as in ``distribution.kll.buckets``."""
    if present.size == 0:
        return []
    if hi <= lo:
        return [{"lower_bound": float(lo), "upper_bound": float(hi), "count": float(present.size)}]
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.bincount(np.clip(np.searchsorted(edges, present, side="right") - 1, 0, bins - 1), minlength=bins)
    return [
        {"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]), "count": float(counts[i])}
        for i in range(bins)
    ]


def numeric_feature_statistics(name: str, values: np.ndarray) -> dict:
    """One numeric entry of ``statistics.json`` ``features[]``."""
    x = _numeric_values(values)
    present = np.sort(x[~np.isnan(x)])
    n_present = int(present.size)
    integral = bool(n_present) and bool(np.all(present == np.round(present)))
    if n_present:
        total, mean = float(present.sum()), float(present.mean())
        std = float(present.std())
        lo, hi = float(present[0]), float(present[-1])
    else:
        total = mean = std = lo = hi = 0.0
    return {
        "name": name,
        "inferred_type": "Integral" if integral else "Fractional",
        "numerical_statistics": {
            "common": {"num_present": n_present, "num_missing": int(x.size - n_present)},
            "mean": _float(mean),
            "sum": _float(total),
            "std_dev": _float(std),
            "min": _float(lo),
            "max": _float(hi),
            "distribution": {"kll": {"buckets": histogram_buckets(present, lo, hi), "sketch": kll_sketch(present)}},
        },
    }


def string_feature_statistics(name: str, values: np.ndarray) -> dict:
    """One string entry of ``statistics.json`` ``features[]``."""
    v = np.asarray(values, dtype=object)
    missing = _is_missing_string(v)
    present = v[~missing].astype(str)
    uniq, counts = np.unique(present, return_counts=True) if present.size else (np.array([]), np.array([]))
    order = np.argsort(-counts, kind="stable")[:MAX_CATEGORICAL_BUCKETS]
    return {
        "name": name,
        "inferred_type": "String",
        "string_statistics": {
            "common": {"num_present": int(present.size), "num_missing": int(missing.sum())},
            "distinct_count": float(uniq.size),
            "distribution": {
                "categorical": {"buckets": [{"value": str(uniq[i]), "count": int(counts[i])} for i in order]}
            },
        },
    }


def dataset_statistics(columns: dict[str, np.ndarray], numeric: list[str], categorical: list[str]) -> dict:
    """Model Monitor ``statistics.json`` of a dataset given as columns.

    :param columns: feature name -> values (float arrays with NaN for missing numerics; object arrays
        of str/None for categoricals).
    :param numeric: numeric feature names (``Fractional`` or ``Integral``).
    :param categorical: categorical feature names (``String``).
    """
    unknown = [n for n in (*numeric, *categorical) if n not in columns]
    if unknown:
        raise ValueError(f"dataset_statistics: column(s) {unknown} not in the data; columns are {sorted(columns)}")
    sizes = {len(columns[n]) for n in (*numeric, *categorical)}
    if len(sizes) > 1:
        raise ValueError(f"dataset_statistics: columns have different lengths {sorted(sizes)}")
    features = [numeric_feature_statistics(n, columns[n]) for n in numeric]
    features += [string_feature_statistics(n, columns[n]) for n in categorical]
    return {"version": FORMAT_VERSION, "dataset": {"item_count": int(sizes.pop()) if sizes else 0}, "features": features}


#: Model Monitor's defaults when ``monitoring_config`` leaves a key out.
DEFAULT_MONITORING_CONFIG: dict[str, Any] = {
    "evaluate_constraints": "Enabled",
    "emit_metrics": "Enabled",
    "datatype_check_threshold": 1.0,
    "domain_content_threshold": 1.0,
    "distribution_constraints": {
        "perform_comparison": "Enabled",
        "comparison_threshold": 0.1,
        "comparison_method": "Robust",
        "categorical_comparison_threshold": 0.1,
        "categorical_drift_method": "LInfinity",
    },
}


def suggest_constraints(
    statistics: dict,
    *,
    comparison_threshold: float = 0.1,
    categorical_comparison_threshold: float = 0.1,
) -> dict:
    """Model Monitor ``constraints.json`` suggested from a baseline ``statistics.json``.

    Completeness is the baseline's present fraction, ``is_non_negative`` holds when the baseline
    minimum is >= 0, and a string feature's domain is the set of values seen in the baseline.
    """
    out = []
    for feature in statistics.get("features", []):
        entry: dict[str, Any] = {"name": feature["name"], "inferred_type": feature["inferred_type"]}
        if "numerical_statistics" in feature:
            stats = feature["numerical_statistics"]
            common = stats["common"]
            total = common["num_present"] + common["num_missing"]
            entry["completeness"] = common["num_present"] / total if total else 1.0
            entry["num_constraints"] = {"is_non_negative": bool(common["num_present"] and stats["min"] >= 0)}
        else:
            stats = feature["string_statistics"]
            common = stats["common"]
            total = common["num_present"] + common["num_missing"]
            entry["completeness"] = common["num_present"] / total if total else 1.0
            buckets = stats["distribution"]["categorical"]["buckets"]
            entry["string_constraints"] = {"domains": sorted(b["value"] for b in buckets)}
        out.append(entry)
    return {
        "version": FORMAT_VERSION,
        "features": out,
        "monitoring_config": {
            **DEFAULT_MONITORING_CONFIG,
            "distribution_constraints": {
                **DEFAULT_MONITORING_CONFIG["distribution_constraints"],
                "comparison_threshold": float(comparison_threshold),
                "categorical_comparison_threshold": float(categorical_comparison_threshold),
            },
        },
    }


def violation(feature_name: str, check_type: str, description: str) -> dict:
    """One entry of ``constraint_violations.json`` ``violations[]``."""
    if check_type not in CHECK_TYPES:
        raise ValueError(f"constraint_check_type={check_type!r} must be one of {CHECK_TYPES}")
    return {"feature_name": feature_name, "constraint_check_type": check_type, "description": description}


def constraint_violations(violations: list[dict]) -> dict:
    """Model Monitor ``constraint_violations.json``."""
    return {"violations": list(violations)}
