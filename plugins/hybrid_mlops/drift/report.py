"""One window's drift report: statistics, per-feature drift figures and Model Monitor violations.

Pure: takes the flattened window (see :meth:`DriftHook.read_capture_window`) and the baseline, and
returns the documents the monitor writes under ``monitoring/<model>/<yyyy>/<mm>/<dd>/<hh>/``:

* ``statistics.json``            Model Monitor statistics of the window
* ``constraint_violations.json`` Model Monitor violations
* ``drift_metrics.json``         per-feature KS / PSI / JS / chi-square / L-infinity and counts
* ``report.json``                summary: window, record counts (malformed lines included), verdict
"""

from __future__ import annotations

import numpy as np

from hybrid_mlops.drift import engine, monitor_format, verdict


def _completeness(constraints: dict | None) -> dict[str, float]:
    return {f["name"]: float(f.get("completeness", 1.0)) for f in (constraints or {}).get("features", [])}


def _baseline_counts(baseline_statistics: dict | None, name: str) -> dict[str, int] | None:
    for f in (baseline_statistics or {}).get("features", []):
        if f["name"] == name and "string_statistics" in f:
            return {b["value"]: int(b["count"]) for b in f["string_statistics"]["distribution"]["categorical"]["buckets"]}
    return None


def build_report(
    *,
    window: dict,
    baseline_columns: dict[str, np.ndarray],
    drift_spec,
    numeric: list[str],
    categorical: list[str],
    baseline_statistics: dict | None = None,
    baseline_constraints: dict | None = None,
    model: str,
    window_start: str,
    window_end: str,
    identifiers: frozenset[str] = frozenset(),
    prepared: dict[str, engine.PreparedColumn] | None = None,
    prepared_moments: dict[str, tuple[float, float]] | None = None,
) -> dict:
    """All documents of one window (see the module docstring).

    Every feature of ``numeric`` / ``categorical`` (the model's schema) is compared, or listed in the
    summary's ``unchecked_features`` with the reason: none is skipped silently. A numeric feature in
    ``prepared`` (the version's prepared baseline) is compared in O(window), with the same KS, p-value,
    PSI and JS as against its raw column (``prepared_moments``: its mean and std, computed at preparation).
    """
    prepared = prepared or {}
    present = set(window["present_features"])
    cols = window["columns"]
    n_rows = int(window["rows"])
    completeness = _completeness(baseline_constraints)
    violations: list[dict] = []
    figures: list[dict] = []
    unchecked: dict[str, str] = {}

    if n_rows:
        violations += verdict.schema_violations([*numeric, *categorical], present, identifiers)
    for name in numeric:
        if name not in cols:
            continue
        invalid = window["invalid"].get(name, 0)
        base = baseline_columns.get(name)
        if name in prepared:
            d = engine.numeric_drift_prepared(name, prepared[name], cols[name], window_invalid=invalid,
                                              ref_moments=(prepared_moments or {}).get(name))
        elif base is None:
            unchecked[name] = "not in the baseline's training data"
            continue
        else:
            d = engine.numeric_drift(name, base, cols[name], window_invalid=invalid)
        figures.append(d.to_dict())
        violations += verdict.numeric_violations(d, verdict.thresholds_for(drift_spec, name), completeness.get(name, 1.0))
    for name in categorical:
        if name not in cols:
            continue
        if name in baseline_columns:
            d = engine.categorical_drift(name, baseline_columns[name], cols[name])
        else:
            counts = _baseline_counts(baseline_statistics, name) or {}
            cur = engine.categorical_drift(name, np.empty(0, object), cols[name])
            d = engine.categorical_drift_from_counts(name, counts, _window_counts(cols[name]), window_missing=cur.window_missing)
        figures.append(d.to_dict())
        violations += verdict.categorical_violations(d, verdict.thresholds_for(drift_spec, name), completeness.get(name, 1.0))

    window_cols = {n: cols[n] for n in [*numeric, *categorical] if n in cols}
    stats = monitor_format.dataset_statistics(window_cols, [n for n in numeric if n in cols],
                                              [n for n in categorical if n in cols]) if window_cols else \
        {"version": monitor_format.FORMAT_VERSION, "dataset": {"item_count": 0}, "features": []}
    stats["dataset"]["item_count"] = n_rows
    if n_rows == 0:
        status = "empty_window"
        message = (f"No valid capture records in the window ({window['files']} files, {window['lines']} lines, "
                   f"{window['malformed']} malformed); nothing to compare.")
    elif n_rows < drift_spec.min_window_rows:
        status = "too_few_rows"
        message = f"{n_rows} rows < drift.min_window_rows={drift_spec.min_window_rows}; distribution checks skipped."
    else:
        status = "violations" if violations else "ok"
        message = (f"{len(violations)} violation(s) on {verdict.violated_features(violations)}" if violations
                   else "No feature violates the baseline.")
        if unchecked:
            message += f" Not compared: {unchecked}."
    summary = {
        "model": model,
        "window_start": window_start,
        "window_end": window_end,
        "status": status,
        "message": message,
        "files": window["files"],
        "lines": window["lines"],
        "malformed_lines": window["malformed"],
        "malformed_sample": window.get("malformed_sample", []),
        "records": window["lines"] - window["malformed"],
        "rows": n_rows,
        "violations": len(violations),
        "violated_features": verdict.violated_features(violations),
        "unchecked_features": unchecked,
    }
    return {
        "statistics": stats,
        "constraint_violations": monitor_format.constraint_violations(violations),
        "drift_metrics": {"model": model, "window_start": window_start, "window_end": window_end, "features": figures},
        "report": summary,
    }


def _window_counts(values: np.ndarray) -> dict[str, int]:
    counts, _ = engine._categorical_counts(values)
    return counts


def cloudwatch_metrics(drift_metrics: dict) -> list[dict]:
    """``[{"feature", "metric", "value"}]`` for PutMetricData (one datum per figure and feature)."""
    out = []
    for f in drift_metrics["features"]:
        keys = ("ks_statistic", "ks_pvalue", "psi", "js") if f["kind"] == "numeric" else ("linf", "chi2_pvalue", "js")
        for k in keys:
            if f.get(k) is not None:
                out.append({"feature": f["feature"], "metric": f"feature_baseline_drift_{k}", "value": f[k]})
        total = f["window_count"] + f["window_missing"] + f.get("window_invalid", 0)
        if total:
            out.append({"feature": f["feature"], "metric": "feature_completeness", "value": f["window_count"] / total})
    return out
