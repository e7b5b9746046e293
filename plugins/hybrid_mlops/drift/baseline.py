"""A SageMaker Model Monitor baseline, read and honoured: ``statistics.json`` + ``constraints.json``.

A team moving off Model Monitor points the monitor at its existing baseline files. Everything here
works from those two documents and the window alone (no raw training data):

* numeric ``baseline_drift_check``: the approximate CDF rebuilt from the baseline's KLL sketch
  (items of level ``i`` weigh ``2**i``; the histogram buckets when the sketch is absent) against
  the window's empirical CDF; the distance is L-infinity between the two CDFs, and with
  ``comparison_method: Robust`` (the default) it is corrected for sample size as Model Monitor's
  ``linf_robust``: ``max(0, linf_simple - 1.8 * sqrt((n + m) / (n * m)))``, the two-sample
  Kolmogorov-Smirnov critical term (Deequ's ``Distance.numericalDistance``);
* categorical ``baseline_drift_check``: L-infinity between category shares (same correction) or,
  with ``categorical_drift_method: ChiSquared``, the chi-square p-value below the threshold;
* ``data_type_check`` (``datatype_check_threshold``), ``completeness_check`` (per-feature
  ``completeness``), ``categorical_values_check`` (``domain_content_threshold`` over the string
  ``domains``), ``missing_column_check``, ``extra_column_check`` and ``is_non_negative``;
* ``monitoring_config`` per feature: the global one with the feature's overrides merged in
  (``monitoringConfigOverrides`` or ``monitoring_config_overrides``, on the feature or inside its
  ``num_constraints`` / ``string_constraints``); ``evaluate_constraints: Disabled`` silences it.

Descriptions are worded as Model Monitor words them. numpy and the standard library only.

.. seealso::
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-byoc-constraints.html
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-violations.html
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from hybrid_mlops.drift.monitor_format import DEFAULT_MONITORING_CONFIG, violation

#: The two-sample KS critical coefficient of ``linf_robust``.
ROBUST_COEFFICIENT = 1.8
NUMERIC_TYPES = ("Integral", "Fractional")
_OVERRIDE_KEYS = ("monitoringConfigOverrides", "monitoring_config_overrides")


class BaselineError(ValueError):
    """A baseline document that cannot be read; the message names the field."""


# ---------------------------------------------------------------------------------------- config
def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _enabled(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("disabled", "false", "0", "no")


def _float(config: dict, key: str, where: str) -> float:
    try:
        value = float(config[key])
    except (TypeError, ValueError):
        raise BaselineError(f"constraints.json: {where}.{key}={config[key]!r} must be a number") from None
    if not math.isfinite(value) or value < 0:
        raise BaselineError(f"constraints.json: {where}.{key}={value!r} must be a finite number >= 0")
    return value


def feature_constraints(constraints: dict | None) -> dict[str, dict]:
    """``constraints.json`` ``features[]`` by name."""
    out = {}
    for i, f in enumerate((constraints or {}).get("features") or []):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise BaselineError(f"constraints.json: features[{i}].name is missing or not a string")
        out[f["name"]] = f
    return out


def _normalise(config: dict) -> dict:
    """The older spelling ``enable_comparisons`` (true/false) as ``perform_comparison``."""
    dist = config.get("distribution_constraints")
    if isinstance(dist, dict) and "enable_comparisons" in dist and "perform_comparison" not in dist:
        dist = {**dist, "perform_comparison": "Enabled" if _enabled(dist["enable_comparisons"]) else "Disabled"}
        config = {**config, "distribution_constraints": dist}
    return config


def monitoring_config(constraints: dict | None, feature: str | dict | None = None) -> dict:
    """The ``monitoring_config`` that applies to one feature: defaults < global < the feature's overrides."""
    config = _merge(DEFAULT_MONITORING_CONFIG, _normalise((constraints or {}).get("monitoring_config") or {}))
    entry = feature_constraints(constraints).get(feature) if isinstance(feature, str) else feature
    if entry:
        for holder in (entry, entry.get("num_constraints") or {}, entry.get("string_constraints") or {}):
            for key in _OVERRIDE_KEYS:
                if isinstance(holder.get(key), dict):
                    config = _merge(config, _normalise(holder[key]))
    return config


# -------------------------------------------------------------------------------------- sketches
def _numeric_stats(feature_stats: dict) -> dict:
    stats = feature_stats.get("numerical_statistics")
    if not isinstance(stats, dict):
        raise BaselineError(f"statistics.json: feature {feature_stats.get('name')!r} has no numerical_statistics")
    return stats


def sketch_cdf(feature_stats: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """``(x, cdf, n)``: the baseline's approximate CDF at its sketch items (sorted, distinct) and its count.

    From ``distribution.kll.sketch.data`` (level ``i`` items weigh ``2**i``), else from
    ``distribution.kll.buckets`` (the CDF at each bucket's upper bound). ``n`` is the sketch's total
    weight (the baseline's present count when only buckets exist).
    """
    name = feature_stats.get("name")
    kll = (_numeric_stats(feature_stats).get("distribution") or {}).get("kll") or {}
    levels = (kll.get("sketch") or {}).get("data") or []
    values, weights = [], []
    for level, items in enumerate(levels):
        if not isinstance(items, list):
            raise BaselineError(f"statistics.json: {name}: distribution.kll.sketch.data[{level}] must be a list")
        values.extend(items)
        weights.extend([2.0**level] * len(items))
    if values:
        x = np.asarray(values, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
    else:
        buckets = kll.get("buckets") or []
        if not buckets:
            raise BaselineError(f"statistics.json: {name}: distribution.kll has neither sketch data nor buckets")
        try:
            x = np.asarray([float(b["upper_bound"]) for b in buckets])
            w = np.asarray([float(b["count"]) for b in buckets])
        except (KeyError, TypeError, ValueError):
            raise BaselineError(f"statistics.json: {name}: distribution.kll.buckets need upper_bound and count") from None
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cum = np.cumsum(w)
    n = float(cum[-1]) if cum.size else 0.0
    if n <= 0:
        raise BaselineError(f"statistics.json: {name}: the sketch holds no values")
    last = np.r_[x[1:] != x[:-1], True]  # the CDF at a repeated item is the rank after its last copy
    return x[last], cum[last] / n, n


def linf_distance(linf_simple: float, n: float, m: float, method: str = "Robust") -> float:
    """Model Monitor's distance: ``linf_simple``, or ``linf_robust`` (corrected for the sample sizes)."""
    if str(method).lower() == "simple":
        return linf_simple
    if str(method).lower() != "robust":
        raise BaselineError(f"constraints.json: comparison_method={method!r} must be Simple or Robust")
    return max(0.0, linf_simple - ROBUST_COEFFICIENT * math.sqrt((n + m) / (n * m)))


def numeric_drift_from_sketch(feature_stats: dict, window_values, constraints: dict | None = None) -> dict:
    """Drift figures of one numeric feature, baseline sketch vs window values (NaN = missing).

    :return: ``{"feature", "kind": "numeric", "method", "linf_simple", "distance", "threshold",
        "baseline_count", "window_count", "perform_comparison", "drifted"}``; ``distance`` is None
        (and ``drifted`` False) when the window has no present value.
    """
    name = feature_stats.get("name")
    config = monitoring_config(constraints, name)["distribution_constraints"]
    threshold = _float(config, "comparison_threshold", "monitoring_config.distribution_constraints")
    method = str(config.get("comparison_method", "Robust"))
    x, cdf, n = sketch_cdf(feature_stats)
    cur = np.asarray(window_values, dtype=np.float64)
    cur = np.sort(cur[~np.isnan(cur)])
    m = cur.size
    out = {"feature": name, "kind": "numeric", "method": method, "linf_simple": None, "distance": None,
           "threshold": threshold, "baseline_count": n, "window_count": int(m),
           "perform_comparison": _enabled(config.get("perform_comparison", "Enabled")), "drifted": False}
    if not m:
        return out
    # sup |F_base - F_win| over every jump point of either step function
    points = np.concatenate([x, cur])
    base_at = np.concatenate([cdf, np.r_[0.0, cdf][np.searchsorted(x, cur, side="right")]])
    win_at = np.searchsorted(cur, points, side="right") / m
    linf = float(np.max(np.abs(base_at - win_at)))
    out["linf_simple"] = linf
    out["distance"] = linf_distance(linf, n, m, method)
    out["drifted"] = out["perform_comparison"] and out["distance"] > threshold
    return out


def _category_counts(values) -> tuple[dict[str, int], int]:
    counts: dict[str, int] = {}
    missing = 0
    for v in np.asarray(values, dtype=object).tolist():
        if v is None or (isinstance(v, float) and v != v):
            missing += 1
            continue
        key = str(v)
        counts[key] = counts.get(key, 0) + 1
    return counts, missing


def _chi2_sf(stat: float, dof: int) -> float:
    """Upper tail of chi-square (regularized upper incomplete gamma, series / continued fraction)."""
    if dof <= 0:
        return 1.0
    a, x = dof / 2.0, stat / 2.0
    if x <= 0:
        return 1.0
    if x < a + 1:  # series for P(a, x)
        term = total = 1.0 / a
        k = a
        for _ in range(10_000):
            k += 1
            term *= x / k
            total += term
            if term < total * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a)))
    b, c, d = x + 1 - a, 1e300, 1 / (x + 1 - a)  # Lentz continued fraction for Q(a, x)
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - math.lgamma(a)) * h)


def categorical_drift_from_statistics(feature_stats: dict, window_values, constraints: dict | None = None) -> dict:
    """Drift figures of one string feature: baseline category buckets vs window values.

    :return: ``{"feature", "kind": "categorical", "method", "linf_simple", "distance", "chi2_pvalue",
        "threshold", "baseline_count", "window_count", "perform_comparison", "drifted"}``.
    """
    name = feature_stats.get("name")
    config = monitoring_config(constraints, name)["distribution_constraints"]
    threshold = _float(config, "categorical_comparison_threshold", "monitoring_config.distribution_constraints")
    method = str(config.get("categorical_drift_method", "LInfinity"))
    robust = str(config.get("comparison_method", "Robust"))
    try:
        buckets = feature_stats["string_statistics"]["distribution"]["categorical"]["buckets"]
        base = {str(b["value"]): float(b["count"]) for b in buckets}
    except (KeyError, TypeError):
        raise BaselineError(f"statistics.json: feature {name!r} has no string_statistics.distribution.categorical.buckets") from None
    counts, _ = _category_counts(window_values)
    n, m = sum(base.values()), sum(counts.values())
    out = {"feature": name, "kind": "categorical", "method": method, "linf_simple": None, "distance": None,
           "chi2_pvalue": None, "threshold": threshold, "baseline_count": n, "window_count": int(m),
           "perform_comparison": _enabled(config.get("perform_comparison", "Enabled")), "drifted": False}
    if not m or not n:
        return out
    keys = sorted(set(base) | set(counts))
    p = np.asarray([base.get(k, 0.0) for k in keys]) / n
    q = np.asarray([counts.get(k, 0) for k in keys], dtype=np.float64) / m
    out["linf_simple"] = float(np.max(np.abs(p - q)))
    if method.lower() == "chisquared":
        # goodness of fit of the window's counts to the baseline's shares (categories the baseline
        # never saw get a floor of half an observation so the statistic stays finite)
        expected = np.maximum(p, 0.5 / n) * m
        stat = float(np.sum((q * m - expected) ** 2 / expected))
        out["chi2_pvalue"] = _chi2_sf(stat, len(keys) - 1)
        out["distance"] = out["chi2_pvalue"]
        out["drifted"] = out["perform_comparison"] and out["chi2_pvalue"] < threshold
    elif method.lower() == "linfinity":
        out["distance"] = linf_distance(out["linf_simple"], n, m, robust)
        out["drifted"] = out["perform_comparison"] and out["distance"] > threshold
    else:
        raise BaselineError(f"constraints.json: categorical_drift_method={method!r} must be LInfinity or ChiSquared")
    return out


# ---------------------------------------------------------------------------------- data quality
def percent(x: float) -> str:
    """A share as Model Monitor prints it: percent, Java double style (``100.0``, ``99.71751412429379``)."""
    return repr(float(x * 100))


def _value_types(values, invalid: int = 0) -> tuple[int, int, int, int, float | None]:
    """``(present, integral, fractional, other, min)`` of one window column (NaN/None = missing).

    ``invalid`` counts present values the reader could not turn into numbers (not in the column).
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "fiu":
        x = arr.astype(np.float64, copy=False)
        ok = ~np.isnan(x)
        present = x[ok]
        integral = int(np.count_nonzero(present == np.floor(present)))
        lo = float(present.min()) if present.size else None
        return int(present.size) + invalid, integral, int(present.size) - integral, invalid, lo
    n_int = n_frac = other = 0
    lo = None
    for v in arr.tolist():
        if v is None or (isinstance(v, float) and v != v):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            other += 1
            continue
        if float(v).is_integer():
            n_int += 1
        else:
            n_frac += 1
        lo = float(v) if lo is None else min(lo, float(v))
    return n_int + n_frac + other + invalid, n_int, n_frac, other + invalid, lo


def _type_match(expected: str, integral: int, fractional: int, other: int) -> int:
    if expected == "Integral":
        return integral
    if expected == "Fractional":  # an integral number is a valid value of a fractional column
        return integral + fractional
    if expected == "String":
        return integral + fractional + other
    return integral + fractional + other  # Unknown: nothing to hold the column to


def evaluate_window(statistics: dict | None, constraints: dict, window: dict, *,
                    drift_features: Iterable[str] | None = None,
                    identifier_columns: Iterable[str] = ()) -> tuple[list[dict], list[dict]]:
    """Every data-quality check of Model Monitor on one window: ``(violations, drift figures)``.

    :param statistics: the baseline ``statistics.json`` (needed for ``baseline_drift_check``; a
        feature it lacks gets no drift check, and says so in its figures).
    :param constraints: the baseline ``constraints.json``.
    :param window: ``{"columns": {name: values}, "rows": int, "invalid": {name: int},
        "present_features": [names seen in any record]}`` (the shape
        :meth:`DriftHook.read_capture_window` returns; ``present_features`` defaults to the columns).
    :param drift_features: the features whose ``baseline_drift_check`` comes from the sketches here
        (default: all); leave out those the caller compares with raw baseline data.
    :param identifier_columns: window columns that are ids, never an ``extra_column_check``.
    """
    if not isinstance(constraints, dict) or not isinstance(constraints.get("features"), list):
        raise BaselineError("constraints.json: features must be a list of feature constraints")
    columns = window.get("columns") or {}
    invalid = window.get("invalid") or {}
    rows = int(window.get("rows") or 0)
    present_features = set(window.get("present_features") or columns)
    expected = feature_constraints(constraints)
    stats_by_name = {f.get("name"): f for f in (statistics or {}).get("features") or []}
    drift_set = None if drift_features is None else set(drift_features)
    violations: list[dict] = []
    figures: list[dict] = []
    if not rows:
        return violations, figures

    n_window = len(present_features - set(identifier_columns))
    for name, entry in expected.items():
        config = monitoring_config(constraints, entry)
        if not _enabled(config.get("evaluate_constraints", "Enabled")):
            continue
        if name not in present_features:
            violations.append(violation(
                name, "missing_column_check",
                f"There are missing columns in current dataset. Number of columns in current dataset: {n_window}, "
                f"Number of columns in baseline constraints: {len(expected)}"))
            continue
        values = columns.get(name)
        if values is None:
            continue
        inferred = entry.get("inferred_type", "Unknown")
        present, n_int, n_frac, other, lo = _value_types(values, int(invalid.get(name, 0)))
        total = max(rows, present)

        # completeness_check: the share of non-null values against the constraint's completeness
        if "completeness" in entry and total:
            required = float(entry["completeness"])
            observed = present / total
            if observed < required:
                violations.append(violation(
                    name, "completeness_check",
                    f"Data completeness requirement is not met. Expected: {percent(required)}%. "
                    f"Observed: Only {percent(observed)}% of data is present."))

        # data_type_check: the share of values of the baseline's inferred type
        if present and inferred in ("Integral", "Fractional", "String"):
            threshold = _float(config, "datatype_check_threshold", "monitoring_config")
            share = _type_match(inferred, n_int, n_frac, other) / present
            if share < threshold:
                violations.append(violation(
                    name, "data_type_check",
                    f"Data type match requirement is not met. Expected data type: {inferred}, Expected match: "
                    f"{percent(threshold)}%. Observed: Only {percent(share)}% of data is {inferred}."))

        # is_non_negative (num_constraints): Model Monitor reports it as a data type mismatch
        if (entry.get("num_constraints") or {}).get("is_non_negative") and lo is not None and lo < 0:
            arr = np.asarray(values)
            negative = (int(np.count_nonzero(arr.astype(np.float64) < 0)) if arr.dtype.kind in "fiu"
                        else sum(1 for v in arr.tolist() if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0))
            violations.append(violation(
                name, "data_type_check",
                f"Data type match requirement is not met. Expected: non-negative values (is_non_negative). "
                f"Observed: {negative} of {present} values are negative, minimum {lo!r}."))

        # categorical_values_check: the share of values inside the baseline's domain
        domains = (entry.get("string_constraints") or {}).get("domains")
        if domains is not None:
            counts, _ = _category_counts(values)
            n_present = sum(counts.values())
            if n_present:
                threshold = _float(config, "domain_content_threshold", "monitoring_config")
                domain = {str(d) for d in domains}
                inside = sum(c for v, c in counts.items() if v in domain)
                share = inside / n_present
                if share < threshold:
                    unknown = sorted((v for v in counts if v not in domain), key=lambda v: -counts[v])[:5]
                    violations.append(violation(
                        name, "categorical_values_check",
                        f"Data domain content requirement is not met. Expected: {percent(threshold)}% of data in the "
                        f"baseline domain. Observed: Only {percent(share)}% of data is in the baseline domain "
                        f"(e.g. {unknown})."))

        # baseline_drift_check from the baseline's sketch or category buckets
        if drift_set is not None and name not in drift_set:
            continue
        feature_stats = stats_by_name.get(name)
        if feature_stats is None:
            figures.append({"feature": name, "kind": "unknown", "distance": None, "drifted": False,
                            "skipped": "statistics.json has no entry for this feature"})
            continue
        if "numerical_statistics" in feature_stats:
            numeric = np.asarray(values)
            if numeric.dtype.kind not in "fiu":
                numeric = np.asarray([float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                                      for v in numeric.tolist()], dtype=np.float64)
            fig = numeric_drift_from_sketch(feature_stats, numeric, constraints)
        elif "string_statistics" in feature_stats:
            fig = categorical_drift_from_statistics(feature_stats, values, constraints)
        else:
            continue
        figures.append(fig)
        if fig["drifted"]:
            if fig["method"].lower() == "chisquared":
                text = (f"Baseline drift distance: {fig['distance']!r} (chi-squared p-value) is below "
                        f"threshold: {fig['threshold']!r}")
            else:
                text = f"Baseline drift distance: {fig['distance']!r} exceeds threshold: {fig['threshold']!r}"
            violations.append(violation(name, "baseline_drift_check", text))

    extra = sorted(present_features - set(expected) - set(identifier_columns))
    for name in extra:
        violations.append(violation(
            name, "extra_column_check",
            f"There are extra columns in current dataset. Number of columns in current dataset: {n_window}, "
            f"Number of columns in baseline constraints: {len(expected)}"))
    return violations, figures


def data_quality_violations(statistics: dict | None, constraints: dict, window: dict, **kwargs) -> list[dict]:
    """The violations of :func:`evaluate_window` (Model Monitor's ``constraint_violations.json`` entries)."""
    return evaluate_window(statistics, constraints, window, **kwargs)[0]
