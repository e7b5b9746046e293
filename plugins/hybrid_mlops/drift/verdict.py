"""Verdicts: per-feature thresholds from the spec, and Model Monitor violations from drift figures.

A feature violates the baseline when any of its checks crosses its threshold:

==========================  =====================================================================
check                       violated when
==========================  =====================================================================
baseline_drift_check        numeric: PSI > ``psi``, Jensen-Shannon > ``js`` or KS p < ``ks_pvalue``;
                            categorical: L-infinity > ``linf`` or chi-square p < ``chi2_pvalue``
categorical_values_check    a categorical feature has values outside the baseline's domain
completeness_check          present share < ``completeness`` (or below the baseline's own share)
data_type_check             numeric feature with values that are not numbers
missing_column_check        a baseline feature is absent from every record of the window
extra_column_check          the window has a feature the baseline does not know
==========================  =====================================================================

Descriptions are worded as Model Monitor words them. A Model Monitor baseline's own constraints
(``datatype_check_threshold`` against the inferred type, ``domain_content_threshold``,
``is_non_negative``, per-feature overrides, drift from the KLL sketch) are checked by
:func:`hybrid_mlops.drift.baseline.data_quality_violations`.

Drift checks need at least ``min_window_rows`` present values; below that the window is reported
as too small rather than judged.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid_mlops.drift.baseline import percent
from hybrid_mlops.drift.engine import CategoricalDrift, NumericDrift
from hybrid_mlops.drift.monitor_format import violation

#: Columns of a capture record that are identifiers, not features.
@dataclass(frozen=True)
class Thresholds:
    """Thresholds of one feature (spec defaults merged with ``drift.features.<name>``)."""

    psi: float
    ks_pvalue: float
    js: float
    linf: float
    chi2_pvalue: float
    completeness: float
    min_window_rows: int


def thresholds_for(drift_spec, feature: str) -> Thresholds:
    """Merge :class:`DriftSpec` defaults with its per-feature overrides."""
    override = drift_spec.features.get(feature)

    def pick(name: str):
        value = getattr(override, name, None) if override is not None else None
        return getattr(drift_spec, name) if value is None else value

    return Thresholds(
        psi=pick("psi"),
        ks_pvalue=pick("ks_pvalue"),
        js=pick("js"),
        linf=pick("linf"),
        chi2_pvalue=drift_spec.chi2_pvalue,
        completeness=pick("completeness"),
        min_window_rows=drift_spec.min_window_rows,
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.6g}"


def _completeness(feature: str, present: int, missing: int, total: int, t: Thresholds,
                  baseline_completeness: float) -> list[dict]:
    """A completeness_check violation when the window's share of present values is below the bar."""
    if not total:
        return []
    completeness = present / total
    required = min(t.completeness, baseline_completeness)
    if completeness >= required:
        return []
    return [violation(feature, "completeness_check",
                      f"Data completeness requirement is not met. Expected: {percent(required)}%. "
                      f"Observed: Only {percent(completeness)}% of data is present.")]


def _baseline_drift(feature: str, crossed: list[str]) -> list[dict]:
    """A baseline_drift_check violation naming every threshold the feature crossed (none: no violation)."""
    if not crossed:
        return []
    return [violation(feature, "baseline_drift_check",
                      "Baseline drift distance exceeds the threshold: " + "; ".join(crossed) + ".")]


def numeric_violations(d: NumericDrift, t: Thresholds, baseline_completeness: float = 1.0,
                       inferred_type: str = "Fractional") -> list[dict]:
    out = []
    total = d.window_count + d.window_missing + d.window_invalid
    if d.window_invalid:
        share = d.window_count / (d.window_count + d.window_invalid)
        out.append(violation(d.feature, "data_type_check",
                             f"Data type match requirement is not met. Expected data type: {inferred_type}, "
                             f"Expected match: 100.0%. Observed: Only {percent(share)}% of data is {inferred_type}."))
    out += _completeness(d.feature, d.window_count, d.window_missing, total, t, baseline_completeness)
    if d.window_count >= t.min_window_rows and d.ks_statistic is not None:
        crossed = []
        if d.psi is not None and d.psi > t.psi:
            crossed.append(f"PSI {_fmt(d.psi)} > {t.psi:g}")
        if d.js is not None and d.js > t.js:
            crossed.append(f"Jensen-Shannon {_fmt(d.js)} > {t.js:g}")
        if d.ks_pvalue is not None and d.ks_pvalue < t.ks_pvalue:
            crossed.append(f"KS statistic {_fmt(d.ks_statistic)} with p-value {_fmt(d.ks_pvalue)} < {t.ks_pvalue:g}")
        out += _baseline_drift(d.feature, crossed)
    return out


def categorical_violations(d: CategoricalDrift, t: Thresholds, baseline_completeness: float = 1.0) -> list[dict]:
    out = []
    total = d.window_count + d.window_missing
    out += _completeness(d.feature, d.window_count, d.window_missing, total, t, baseline_completeness)
    if d.unknown_share > 0:
        out.append(violation(d.feature, "categorical_values_check",
                             f"Data domain content requirement is not met. Expected: 100.0% of data in the baseline "
                             f"domain. Observed: Only {percent(1 - d.unknown_share)}% of data is in the baseline domain "
                             f"(e.g. {d.unknown_values[:5]})."))
    if d.window_count >= t.min_window_rows and d.linf is not None:
        crossed = []
        if d.linf > t.linf:
            crossed.append(f"L-infinity {_fmt(d.linf)} > {t.linf:g}")
        if d.chi2_pvalue is not None and d.chi2_pvalue < t.chi2_pvalue:
            crossed.append(f"chi-square {_fmt(d.chi2_statistic)} with p-value {_fmt(d.chi2_pvalue)} < {t.chi2_pvalue:g}")
        out += _baseline_drift(d.feature, crossed)
    return out


def schema_violations(baseline_features: list[str], window_features: set[str],
                      identifiers: frozenset[str] = frozenset()) -> list[dict]:
    """``missing_column_check`` / ``extra_column_check``; ``identifiers`` (the schema's id) are not features."""
    counts = (f"Number of columns in current dataset: {len(set(window_features) - identifiers)}, "
              f"Number of columns in baseline constraints: {len(baseline_features)}")
    out = [
        violation(name, "missing_column_check", f"There are missing columns in current dataset. {counts}")
        for name in baseline_features
        if name not in window_features
    ]
    out += [
        violation(name, "extra_column_check", f"There are extra columns in current dataset. {counts}")
        for name in sorted(window_features - set(baseline_features) - identifiers)
    ]
    return out


def violated_features(violations: list[dict]) -> list[str]:
    return sorted({v["feature_name"] for v in violations})
