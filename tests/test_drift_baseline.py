"""A real Model Monitor baseline read and honoured (hybrid_mlops.drift.baseline).

Inputs are the SageMaker Python SDK's own test files and the AWS docs' constraints example
(tests/data/model_monitor/README.md), plus numeric baselines whose KLL sketch is built here by a
KLL compactor in the documented ``statistics.json`` shape. Each check is exercised at its edge.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hybrid_mlops.drift import baseline
from hybrid_mlops.drift.engine import ks_statistic_sorted

DATA = Path(__file__).parent / "data" / "model_monitor"


def _load(name):
    return json.loads((DATA / name).read_text())


def kll_levels(values, k=200, c=0.64, seed=0):
    """A KLL sketch (Karnin, Lang, Liberty 2016) of a stream: one list per level, level i weighs 2**i."""
    rng = np.random.default_rng(seed)
    levels: list[list[float]] = [[]]

    def capacity(h):
        return max(2, int(math.ceil(k * c ** (len(levels) - h - 1))))

    for v in values:
        levels[0].append(float(v))
        h = 0
        while h < len(levels) and len(levels[h]) >= capacity(h):
            if h + 1 == len(levels):
                levels.append([])
            items = sorted(levels[h])
            keep = items[int(rng.integers(2))::2]
            if len(items) % 2:  # an odd item stays at its level
                levels[h] = [items[-1]]
                keep = items[int(rng.integers(2)):-1:2]
            else:
                levels[h] = []
            levels[h + 1].extend(keep)
            h += 1
    return levels


def numeric_feature(name, values, *, inferred="Fractional", k=200):
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    edges = np.linspace(present.min(), present.max(), 11)
    counts = np.histogram(present, edges)[0]
    return {
        "name": name,
        "inferred_type": inferred,
        "numerical_statistics": {
            "common": {"num_present": int(present.size), "num_missing": int(values.size - present.size)},
            "mean": float(present.mean()), "sum": float(present.sum()), "std_dev": float(present.std()),
            "min": float(present.min()), "max": float(present.max()),
            "distribution": {"kll": {
                "buckets": [{"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]), "count": float(counts[i])}
                            for i in range(10)],
                "sketch": {"parameters": {"c": 0.64, "k": float(k)}, "data": kll_levels(present, k=k)},
            }},
        },
    }


@pytest.fixture(scope="module")
def train():
    rng = np.random.default_rng(7)
    return {"age": rng.integers(18, 90, 50_000).astype(np.float64), "income": rng.lognormal(10, 0.5, 50_000)}


@pytest.fixture(scope="module")
def statistics(train):
    colours = {"red": 500, "green": 300, "blue": 200}
    return {"version": 0.0, "dataset": {"item_count": 50_000}, "features": [
        numeric_feature("age", train["age"], inferred="Integral"),
        numeric_feature("income", train["income"]),
        {"name": "colour", "inferred_type": "String", "string_statistics": {
            "common": {"num_present": 1000, "num_missing": 0}, "distinct_count": 3.0,
            "distribution": {"categorical": {"buckets": [{"value": v, "count": n} for v, n in colours.items()]}}}},
    ]}


def _window(rng, n=2000, *, age_shift=0.0, income_scale=1.0, colours=("red", "green", "blue"), p=(0.5, 0.3, 0.2)):
    return {"rows": n, "invalid": {}, "columns": {
        "age": rng.integers(18, 90, n).astype(np.float64) + age_shift,
        "income": rng.lognormal(10, 0.5, n) * income_scale,
        "colour": np.asarray(rng.choice(list(colours), n, p=list(p)), dtype=object)}}


def test_the_kll_sketch_rebuilds_the_baseline_cdf(train, statistics):
    x, cdf, n = baseline.sketch_cdf(statistics["features"][1])
    assert n == pytest.approx(50_000, rel=0.01) and len(x) < 2000  # a sketch, not the data
    truth = np.searchsorted(np.sort(train["income"]), x, side="right") / train["income"].size
    assert np.max(np.abs(cdf - truth)) < 0.02  # KLL rank error at k=200


def test_drifted_numeric_window_against_a_real_baseline_is_flagged(train, statistics):
    constraints = _load("docs_constraints.json")
    rng = np.random.default_rng(1)
    calm = _window(rng)
    assert baseline.data_quality_violations(statistics, constraints, calm) == []

    drifted = _window(rng, income_scale=1.6)
    violations, figures = baseline.evaluate_window(statistics, constraints, drifted)
    fig = {f["feature"]: f for f in figures}["income"]
    exact = ks_statistic_sorted(np.sort(train["income"]), np.sort(drifted["columns"]["income"]))
    assert fig["linf_simple"] == pytest.approx(exact, abs=0.02)
    assert fig["distance"] == pytest.approx(fig["linf_simple"] - 1.8 * math.sqrt((fig["baseline_count"] + 2000) / (fig["baseline_count"] * 2000)))
    assert fig["threshold"] == 0.3  # the feature's monitoringConfigOverrides
    assert violations == [{"feature_name": "income", "constraint_check_type": "baseline_drift_check",
                           "description": f"Baseline drift distance: {fig['distance']!r} exceeds threshold: 0.3"}]


def test_baseline_drift_check_edge_and_methods(statistics):
    feature = statistics["features"][0]
    rng = np.random.default_rng(2)
    window = rng.integers(18, 90, 300).astype(np.float64) + 6  # a small shifted window
    cons = {"features": [{"name": "age"}], "monitoring_config": {"distribution_constraints": {"comparison_method": "Simple"}}}
    simple = baseline.numeric_drift_from_sketch(feature, window, cons)
    robust = baseline.numeric_drift_from_sketch(feature, window, {"features": [{"name": "age"}]})
    assert simple["distance"] == simple["linf_simple"] > robust["distance"]
    at = copy.deepcopy(cons)
    at["monitoring_config"]["distribution_constraints"]["comparison_threshold"] = simple["distance"]
    assert not baseline.numeric_drift_from_sketch(feature, window, at)["drifted"]  # equal: not above
    at["monitoring_config"]["distribution_constraints"]["comparison_threshold"] = simple["distance"] - 1e-9
    assert baseline.numeric_drift_from_sketch(feature, window, at)["drifted"]
    at["monitoring_config"]["distribution_constraints"]["perform_comparison"] = "Disabled"
    assert not baseline.numeric_drift_from_sketch(feature, window, at)["drifted"]


def test_exact_sketch_distance_by_hand():
    feature = {"name": "x", "numerical_statistics": {"distribution": {"kll": {"sketch": {"data": [[1, 2, 3, 4]]}}}}}
    fig = baseline.numeric_drift_from_sketch(feature, np.array([3.0, 4.0, np.nan]),
                                             {"features": [], "monitoring_config": {"distribution_constraints": {
                                                 "comparison_method": "Simple"}}})
    assert fig["linf_simple"] == 0.5 and fig["window_count"] == 2  # F_base(2)=0.5, F_win(2)=0
    # weights: level 1 items count twice
    two = {"name": "x", "numerical_statistics": {"distribution": {"kll": {"sketch": {"data": [[1], [2]]}}}}}
    x, cdf, n = baseline.sketch_cdf(two)
    assert list(x) == [1, 2] and list(cdf) == [pytest.approx(1 / 3), 1.0] and n == 3
    # buckets only: the CDF at the upper bounds
    buckets = {"name": "x", "numerical_statistics": {"distribution": {"kll": {"buckets": [
        {"lower_bound": 0, "upper_bound": 1, "count": 3}, {"lower_bound": 1, "upper_bound": 2, "count": 1}]}}}}
    assert list(baseline.sketch_cdf(buckets)[1]) == [0.75, 1.0]


def _edge_window(values, name="age", rows=None, **extra):
    return {"rows": rows or len(values), "columns": {name: np.asarray(values), **extra}, "invalid": {}}


def test_data_type_check_at_its_threshold():
    cons = {"features": [{"name": "age", "inferred_type": "Integral"}],
            "monitoring_config": {"datatype_check_threshold": 0.9}}
    at = _edge_window([1.0] * 90 + [1.5] * 10)
    assert baseline.data_quality_violations(None, cons, at) == []
    below = _edge_window([1.0] * 89 + [1.5] * 11)
    assert baseline.data_quality_violations(None, cons, below) == [{
        "feature_name": "age", "constraint_check_type": "data_type_check",
        "description": "Data type match requirement is not met. Expected data type: Integral, Expected match: 90.0%. "
                       "Observed: Only 89.0% of data is Integral."}]
    # values the reader could not read as numbers count against the type; a per-feature override wins
    strings = {"rows": 100, "columns": {"age": np.array([1.0] * 60 + [np.nan] * 40)}, "invalid": {"age": 40}}
    assert "Only 60.0% of data is Integral" in baseline.data_quality_violations(None, cons, strings)[0]["description"]
    cons["features"][0]["monitoringConfigOverrides"] = {"datatype_check_threshold": 0.6}
    assert baseline.data_quality_violations(None, cons, strings) == []


def test_completeness_check_at_its_edge():
    cons = {"features": [{"name": "age", "inferred_type": "Integral", "completeness": 0.8}]}
    assert baseline.data_quality_violations(None, cons, _edge_window([1.0] * 80 + [np.nan] * 20)) == []
    (v,) = baseline.data_quality_violations(None, cons, _edge_window([1.0] * 79 + [np.nan] * 21))
    assert v["constraint_check_type"] == "completeness_check"
    assert v["description"] == "Data completeness requirement is not met. Expected: 80.0%. Observed: Only 79.0% of data is present."


def test_is_non_negative():
    cons = {"features": [{"name": "age", "inferred_type": "Fractional", "num_constraints": {"is_non_negative": True}}]}
    assert baseline.data_quality_violations(None, cons, _edge_window([0.0, 1.0, 2.5])) == []
    (v,) = baseline.data_quality_violations(None, cons, _edge_window([0.0, -0.5, 2.5]))
    assert v["constraint_check_type"] == "data_type_check" and "1 of 3 values are negative, minimum -0.5" in v["description"]


def test_categorical_values_check_at_domain_content_threshold():
    cons = _load("docs_constraints.json")
    cons["features"] = [f for f in cons["features"] if f["name"] == "colour"]
    inside = ["red"] * 95 + ["purple"] * 5
    assert [v for v in baseline.data_quality_violations(None, cons, _edge_window(np.array(inside, object), "colour"))
            if v["constraint_check_type"] == "categorical_values_check"] == []
    below = np.array(["red"] * 94 + ["purple"] * 4 + ["teal"] * 2, object)
    (v,) = [v for v in baseline.data_quality_violations(None, cons, _edge_window(below, "colour"))
            if v["constraint_check_type"] == "categorical_values_check"]
    assert v["description"].startswith("Data domain content requirement is not met. Expected: 95.0% of data in the "
                                       "baseline domain. Observed: Only 94.0% of data is in the baseline domain")
    assert "['purple', 'teal']" in v["description"]


def test_sdk_baseline_missing_extra_columns_domains_and_drift():
    stats, cons = _load("sdk_statistics.json"), _load("sdk_constraints.json")
    domain = "preproc-not-YET-supported-for-csv-json"
    same = {"rows": 10, "columns": {"message": np.array([domain] * 10, object),
                                    "second_message": np.array([domain] * 10, object)}}
    assert baseline.data_quality_violations(stats, cons, same) == []

    window = {"rows": 10, "columns": {"message": np.array(["something else"] * 10, object),
                                      "request_id": np.array(["r"] * 10, object),
                                      "third": np.array(["x"] * 10, object)}}
    got = baseline.data_quality_violations(stats, cons, window, identifier_columns=["request_id"])
    by = {(v["feature_name"], v["constraint_check_type"]): v["description"] for v in got}
    assert by[("second_message", "missing_column_check")] == (
        "There are missing columns in current dataset. Number of columns in current dataset: 2, "
        "Number of columns in baseline constraints: 2")
    assert by[("third", "extra_column_check")].startswith("There are extra columns in current dataset.")
    assert "Only 0.0% of data is in the baseline domain" in by[("message", "categorical_values_check")]
    assert by[("message", "baseline_drift_check")].startswith("Baseline drift distance: ")
    assert ("request_id", "extra_column_check") not in by


def test_overrides_disable_a_feature_and_chi_squared():
    cons = _load("docs_constraints.json")
    colour = next(f for f in cons["features"] if f["name"] == "colour")
    stats = {"features": [{"name": "colour", "inferred_type": "String", "string_statistics": {"distribution": {
        "categorical": {"buckets": [{"value": "red", "count": 500}, {"value": "green", "count": 300},
                                    {"value": "blue", "count": 200}]}}}}]}
    window = _edge_window(np.array(["red"] * 400 + ["green"] * 400 + ["blue"] * 200, object), "colour")
    cons["features"] = [colour]
    fig = baseline.categorical_drift_from_statistics(stats["features"][0], window["columns"]["colour"], cons)
    assert fig["linf_simple"] == pytest.approx(0.1)
    colour["monitoringConfigOverrides"] = {"distribution_constraints": {"categorical_drift_method": "ChiSquared",
                                                                        "categorical_comparison_threshold": 0.001}}
    (v,) = baseline.data_quality_violations(stats, cons, window)
    assert v["constraint_check_type"] == "baseline_drift_check" and "chi-squared p-value" in v["description"]
    colour["monitoringConfigOverrides"] = {"evaluate_constraints": "Disabled"}
    assert baseline.data_quality_violations(stats, cons, window) == []


def test_drift_features_leaves_raw_baseline_features_to_the_caller(statistics):
    constraints = _load("docs_constraints.json")
    drifted = _window(np.random.default_rng(3), income_scale=1.6)
    assert baseline.data_quality_violations(statistics, constraints, drifted, drift_features=["age", "colour"]) == []


def test_bad_documents_name_the_field(statistics):
    with pytest.raises(baseline.BaselineError, match="constraints.json: features must be a list"):
        baseline.data_quality_violations(statistics, {"monitoring_config": {}}, {"rows": 1, "columns": {}})
    bad = {"features": [{"name": "age", "inferred_type": "Integral"}], "monitoring_config": {"datatype_check_threshold": "high"}}
    with pytest.raises(baseline.BaselineError, match="monitoring_config.datatype_check_threshold='high'"):
        baseline.data_quality_violations(None, bad, _edge_window([1.0]))
    with pytest.raises(baseline.BaselineError, match="neither sketch data nor buckets"):
        baseline.sketch_cdf({"name": "x", "numerical_statistics": {"distribution": {"kll": {}}}})
