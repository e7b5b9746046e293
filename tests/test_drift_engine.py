"""Drift maths without servers: KS against scipy, verdicts on known shifts, formats, cooldown."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import scipy.stats

from hybrid_mlops.data.generator import CATEGORICAL_FEATURES, NUMERIC_FEATURES, DriftKnobs, generate
from hybrid_mlops.drift import engine, monitor_format, quality
from hybrid_mlops.drift.cooldown import lineage_metadata, should_retrain, triggering_drift_report
from hybrid_mlops.drift.report import build_report

NUM, CAT = list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES)


@pytest.mark.parametrize(
    "n1,n2,shift,rounding",
    [(50, 50, 0.3, None), (100, 80, 0.2, 1), (997, 1013, 0.1, None), (3000, 5000, 0.05, None),
     (10000, 10000, 0.02, None), (30, 7, 0.5, None), (20000, 5000, 0.03, 0), (200000, 3000, 0.0, None),
     (1_000_000, 1_000_000, 0.001, None), (4000, 4000, 0.0, 2)],
)
def test_ks_matches_scipy(n1, n2, shift, rounding):
    rng = np.random.default_rng(n1 + n2)
    a, b = rng.normal(size=n1), rng.normal(shift, size=n2)
    if rounding is not None:  # ties
        a, b = np.round(a, rounding), np.round(b, rounding)
    d = engine.ks_statistic_sorted(np.sort(a), np.sort(b))
    p = engine.ks_pvalue(d, n1, n2)
    ref = scipy.stats.ks_2samp(a, b)
    assert abs(d - ref.statistic) <= 1e-9
    assert abs(p - ref.pvalue) <= 1e-9


def test_ks_ignores_nans_like_scipy_omit():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=500), rng.normal(0.2, size=400)
    a[::7] = np.nan
    r = engine.numeric_drift("x", a, b)
    ref = scipy.stats.ks_2samp(a, b, nan_policy="omit")
    assert abs(r.ks_statistic - ref.statistic) <= 1e-9 and abs(r.ks_pvalue - ref.pvalue) <= 1e-9
    assert r.baseline_count == 500 - len(a[::7])


@pytest.fixture(scope="module")
def baseline():
    return generate(100_000, seed=7)


def _window(knobs: DriftKnobs, n=4000, seed=21):
    c = generate(n, seed=seed, drift=knobs)
    present = [k for k in NUM + CAT if k in c]
    return {"files": 1, "lines": n // 50, "malformed": 0, "present_features": present,
            "columns": {k: c[k] for k in present}, "invalid": {}, "rows": n}


CASES = {
    "no shift": (DriftKnobs(), {}),
    "mean shift": (DriftKnobs(shift={"amount": 0.5}), {"amount": {"baseline_drift_check"}}),
    "variance shift": (DriftKnobs(scale={"account_age_days": 1.6}), {"account_age_days": {"baseline_drift_check"}}),
    "new category": (DriftKnobs(new_category={"channel": ("crypto", 0.1)}),
                     {"channel": {"categorical_values_check", "baseline_drift_check"}}),
    "missing column": (DriftKnobs(drop=("distance_km",)), {"distance_km": {"missing_column_check"}}),
    "nulls": (DriftKnobs(nulls={"avg_amount_30d": 0.1, "country": 0.05}),
              {"avg_amount_30d": {"completeness_check"}, "country": {"completeness_check"}}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [21, 22])
def test_verdicts_flag_exactly_the_shifted_features(case, seed, baseline, spec):
    knobs, expected = CASES[case]
    docs = build_report(window=_window(knobs, seed=seed), baseline_columns=baseline, drift_spec=spec.drift,
                        numeric=NUM, categorical=CAT, model="m", window_start="s", window_end="e")
    got: dict[str, set] = {}
    for v in docs["constraint_violations"]["violations"]:
        got.setdefault(v["feature_name"], set()).add(v["constraint_check_type"])
    assert got == expected
    assert docs["report"]["status"] == ("violations" if expected else "ok")


def test_per_feature_override(baseline, spec):
    from hybrid_mlops.specs.model import DriftSpec, FeatureDrift

    loose = DriftSpec(**{**spec.drift.model_dump(), "features": {
        "amount": FeatureDrift(psi=50, js=1.0, ks_pvalue=1e-300)}})
    docs = build_report(window=_window(DriftKnobs(shift={"amount": 0.5})), baseline_columns=baseline,
                        drift_spec=loose, numeric=NUM, categorical=CAT, model="m", window_start="s", window_end="e")
    (v,) = docs["constraint_violations"]["violations"]  # only KS is left to trip (p underflows to 0)
    assert v["feature_name"] == "amount" and "KS" in v["description"]
    assert "PSI" not in v["description"] and "Jensen" not in v["description"]


def test_monitor_format_shapes(baseline):
    stats = monitor_format.dataset_statistics(baseline, NUM, CAT)
    assert stats["dataset"]["item_count"] == 100_000
    f = {x["name"]: x for x in stats["features"]}
    assert f["hour"]["inferred_type"] == "Integral" and f["amount"]["inferred_type"] == "Fractional"
    ns = f["amount"]["numerical_statistics"]
    assert set(ns) == {"common", "mean", "sum", "std_dev", "min", "max", "distribution"}
    assert sum(b["count"] for b in ns["distribution"]["kll"]["buckets"]) == 100_000
    vals, weights = monitor_format.sketch_quantile_sample(ns["distribution"]["kll"]["sketch"])
    assert abs(weights.sum() - 100_000) / 100_000 < 0.05
    assert f["channel"]["string_statistics"]["distinct_count"] == 4
    cons = monitor_format.suggest_constraints(stats)
    c = {x["name"]: x for x in cons["features"]}
    assert c["amount"]["num_constraints"]["is_non_negative"] is True
    assert c["channel"]["string_constraints"]["domains"] == sorted(CATEGORICAL_FEATURES["channel"])
    assert cons["monitoring_config"]["distribution_constraints"]["categorical_drift_method"] == "LInfinity"
    json.dumps(stats), json.dumps(cons)
    # numpy + stdlib only: the training bundle copies this file
    src = open(monitor_format.__file__).read()
    imports = {line.split()[1].split(".")[0] for line in src.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "math", "typing", "numpy", "json", "collections"}


def test_model_quality_shape_and_violation():
    c = generate(5000, seed=3)
    good = quality.binary_classification_statistics(c["label"], c["true_probability"])
    m = good["binary_classification_metrics"]
    assert m["auc"]["value"] > 0.8 and set(m["confusion_matrix"]) == {"0", "1"}
    cons = quality.quality_constraints(quality.baseline_metrics({"metrics": {"roc_auc": 0.9}}))
    assert quality.quality_violations(good, cons) == []
    noise = quality.binary_classification_statistics(c["label"], np.random.default_rng(0).random(5000))
    (v,) = quality.quality_violations(noise, cons)
    assert v["metric_name"] == "auc" and v["constraint_check_type"] == "LessThanThreshold"


T0 = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)


def test_cooldown():
    assert should_retrain(T0, None, 12)[0]
    ok, why = should_retrain(T0, T0 - timedelta(hours=3), 12)
    assert not ok and "until" in why
    assert should_retrain(T0, T0 - timedelta(hours=12), 12)[0]
    assert should_retrain(T0, T0 - timedelta(minutes=1), 0)[0]
    with pytest.raises(ValueError):
        should_retrain(T0, None, -1)


class _Asset:
    def __init__(self, uri):
        self.uri = uri


class _Event:
    def __init__(self, uri, extra, ts):
        self.asset, self.extra, self.timestamp = _Asset(uri), extra, ts


def test_triggering_drift_report():
    uri = "hybrid-mlops://fraud-detection/drift"
    early = _Event(uri, {"report_uri": "s3://b/monitoring/a/constraint_violations.json",
                         "violated_features": ["amount"], "window_start": "w1", "window_end": "w2"}, T0)
    late = _Event(uri, {"report_uri": "s3://b/monitoring/b/constraint_violations.json",
                        "violated_features": ["channel", "amount"], "window_start": "w3", "window_end": "w4"},
                  T0 + timedelta(hours=1))
    other = _Event("hybrid-mlops://other/drift", {"report_uri": "x"}, T0 + timedelta(hours=2))
    accessor = {_Asset(uri): [late, early], _Asset("hybrid-mlops://other/drift"): [other]}
    report = triggering_drift_report(accessor, "fraud-detection")
    assert report["report_uri"].endswith("b/constraint_violations.json")
    assert report["violated_features"] == ["channel", "amount"] and report["events"] == 2
    assert lineage_metadata(report)["drift_violated_features"] == "channel,amount"
    assert triggering_drift_report({}, "fraud-detection") is None
    assert triggering_drift_report([other], "fraud-detection") is None
