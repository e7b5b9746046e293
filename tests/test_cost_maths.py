"""Cost maths on known inputs: attribution, spot saving, budget and anomaly rules at their edges,
and the parsing of Cost Explorer answers. Pure functions: no server needed."""

from __future__ import annotations

import pytest

from hybrid_mlops.cost import explorer
from hybrid_mlops.cost.maths import anomaly_rule, budget_rule, serving_by_version, training_job_cost
from hybrid_mlops.cost.pricing import pinned_price

JOB = {"job_name": "fraud-detection-train-x", "model": "fraud-detection", "instance_type": "ml.g5.2xlarge",
       "instance_count": 2}


def test_training_job_cost_and_spot_saving_on_known_inputs():
    job = training_job_cost({**JOB, "training_seconds": 10800, "billable_seconds": 3600}, 1.515)
    assert job["status"] == "ok"
    assert job["cost_usd"] == pytest.approx(3600 * 2 * 1.515 / 3600)  # 3.03
    assert job["on_demand_usd"] == pytest.approx(10800 * 2 * 1.515 / 3600)  # 9.09
    assert job["spot_savings_usd"] == pytest.approx(6.06)
    assert job["spot_saving_fraction"] == pytest.approx(1 - 3600 / 10800)


def test_training_job_cost_edges():
    on_demand = training_job_cost({**JOB, "training_seconds": 3600, "billable_seconds": 3600}, 2.0)
    assert on_demand["spot_saving_fraction"] == 0 and on_demand["spot_savings_usd"] == 0
    assert on_demand["cost_usd"] == pytest.approx(4.0)
    zero = training_job_cost({**JOB, "training_seconds": 0, "billable_seconds": 0}, 2.0)
    assert zero["cost_usd"] == 0 and zero["spot_saving_fraction"] == 0
    missing = training_job_cost({**JOB, "training_seconds": None, "billable_seconds": None}, 2.0)
    assert missing["status"] == "timings_unavailable" and missing["cost_usd"] is None
    wrong = training_job_cost({**JOB, "training_seconds": 100, "billable_seconds": 200}, 2.0)
    assert wrong["status"] == "timings_inconsistent" and wrong["cost_usd"] is None
    unpriced = training_job_cost({**JOB, "training_seconds": 400, "billable_seconds": 100}, None)
    assert unpriced["status"] == "price_unknown" and unpriced["cost_usd"] is None
    assert unpriced["spot_saving_fraction"] == pytest.approx(0.75)


def test_pinned_price_table():
    assert pinned_price("us-west-2", "ml.g5.2xlarge") == 1.515
    assert pinned_price("us-west-2", "ml.nope.large") is None
    assert pinned_price("mars-east-1", "ml.g5.2xlarge") is None


def test_serving_cost_per_version_and_per_1000_predictions():
    lines = serving_by_version(100.0, {"3": {"requests": 10, "predictions": 300},
                                       "4": {"requests": 5, "predictions": 100}})
    assert [v["version"] for v in lines] == ["3", "4"]
    assert lines[0]["serving_usd"] == pytest.approx(75.0) and lines[1]["serving_usd"] == pytest.approx(25.0)
    assert lines[0]["cost_per_1k_predictions_usd"] == pytest.approx(250.0)
    assert lines[1]["cost_per_1k_predictions_usd"] == pytest.approx(250.0)
    assert sum(v["serving_usd"] for v in lines) == pytest.approx(100.0)
    idle = serving_by_version(12.0, {})
    assert idle == [{"version": "(idle)", "requests": 0, "predictions": 0, "share": 1.0, "serving_usd": 12.0,
                     "cost_per_1k_predictions_usd": None}]
    assert serving_by_version(0.0, {}) == []


def test_budget_rule_edges():
    assert budget_rule(250.0, 250.0)["breach"] is False  # at the budget is within it
    assert budget_rule(250.01, 250.0)["breach"] is True
    assert budget_rule(125.0, 250.0)["utilisation"] == pytest.approx(0.5)


def test_anomaly_rule_edges():
    history = [9.0, 10.0, 11.0]  # mean 10, sample sd 1
    at = anomaly_rule(13.0, history, 3.0)
    assert at["mean"] == pytest.approx(10) and at["sd"] == pytest.approx(1) and at["threshold"] == pytest.approx(3)
    assert at["breach"] is False  # exactly at mean + 3 sd
    above = anomaly_rule(13.01, history, 3.0)
    assert above["breach"] is True and above["direction"] == "up" and above["z"] == pytest.approx(3.01)
    below = anomaly_rule(6.99, history, 3.0)
    assert below["breach"] is True and below["direction"] == "down"
    assert anomaly_rule(12.0, history, 3.0)["breach"] is False


def test_anomaly_rule_flat_history_short_history_and_small_amounts():
    flat = [10.0] * 14
    assert anomaly_rule(10.0, flat, 3.0)["breach"] is False
    assert anomaly_rule(10.99, flat, 3.0)["breach"] is False  # under min_abs_usd (1.0)
    jump = anomaly_rule(11.0, flat, 3.0)
    assert jump["breach"] is True and jump["z"] is None  # sd 0: no z-score, still a breach
    short = anomaly_rule(1000.0, [10.0, 10.0], 3.0)
    assert short["status"] == "insufficient_history" and short["breach"] is False
    cents = anomaly_rule(0.9, [0.01, 0.02, 0.01], 3.0)
    assert cents["breach"] is False


def test_plan_sends_tag_filters_and_groups_as_cost_explorer_expects():
    scope = explorer.Scope.from_models([
        {"name": "fraud-detection", "clusters": ["mlops-us-west-2", "mlops-eu-west-1"],
         "tags": {"model": "fraud-detection", "team": "risk-ml", "environment": "dev", "project": "hybrid-mlops"}},
    ])
    plan = {q["name"]: q["request"] for q in explorer.plan_queries(scope, "2026-06-02", "2026-07-02")}
    assert list(plan) == ["sagemaker", "eks", "s3"]
    for request in plan.values():
        assert request["Granularity"] == "DAILY" and request["Metrics"] == ["UnblendedCost", "AmortizedCost"]
        assert request["TimePeriod"] == {"Start": "2026-06-02", "End": "2026-07-02"}
        assert len(request["GroupBy"]) <= 2
    eks = plan["eks"]["Filter"]["And"]
    assert eks[1] == {"Or": [
        {"Tags": {"Key": "kubernetes.io/cluster/mlops-eu-west-1", "Values": ["owned"], "MatchOptions": ["EQUALS"]}},
        {"Tags": {"Key": "kubernetes.io/cluster/mlops-us-west-2", "Values": ["owned"], "MatchOptions": ["EQUALS"]}},
    ]}
    single = explorer.plan_queries(explorer.Scope(("m",), ("c",)), "2026-01-01", "2026-01-02")[1]
    assert single["request"]["Filter"]["And"][1] == {
        "Tags": {"Key": "kubernetes.io/cluster/c", "Values": ["owned"], "MatchOptions": ["EQUALS"]}}


def _group(keys, usd):
    return {"Keys": keys, "Metrics": {"UnblendedCost": {"Amount": str(usd), "Unit": "USD"},
                                      "AmortizedCost": {"Amount": str(usd), "Unit": "USD"}}}


def test_parse_splits_sagemaker_usage_types_and_untagged_cost():
    request = {"GroupBy": [{"Type": "DIMENSION", "Key": "USAGE_TYPE"}, {"Type": "TAG", "Key": "model"}]}
    page = {"ResultsByTime": [{"TimePeriod": {"Start": "2026-07-01", "End": "2026-07-02"}, "Estimated": True,
                               "Groups": [_group(["USW2-Train:ml.g5.2xlarge", "model$m"], 3),
                                          _group(["USW2-Train:VolumeUsage.gp2", "model$m"], 0.5),
                                          _group(["USW2-Host:ml.g5.xlarge", "model$m"], 7),
                                          _group(["USW2-Processing:ml.m5.xlarge", "model$"], 1)]}]}
    rows, days = explorer.parse_pages("sagemaker", request, [page])
    assert [(r["category"], r["model"], r["unblended"]) for r in rows] == [
        ("training", "m", 3.0), ("storage", "m", 0.5), ("serving", "m", 7.0), ("processing", "(unallocated)", 1.0)]
    assert days == [{"day": "2026-07-01", "estimated": True}]


def test_parse_refuses_what_it_cannot_read():
    request = {"GroupBy": [{"Type": "TAG", "Key": "model"}, {"Type": "DIMENSION", "Key": "REGION"}]}
    bad_keys = {"ResultsByTime": [{"TimePeriod": {"Start": "2026-07-01"}, "Groups": [_group(["model$m"], 1)]}]}
    with pytest.raises(explorer.CostExplorerResultError, match="do not match GroupBy"):
        explorer.parse_pages("eks", request, [bad_keys])
    eur = {"ResultsByTime": [{"TimePeriod": {"Start": "2026-07-01"}, "Groups": [
        {"Keys": ["model$m", "us-west-2"], "Metrics": {"UnblendedCost": {"Amount": "1", "Unit": "EUR"},
                                                        "AmortizedCost": {"Amount": "1", "Unit": "EUR"}}}]}]}
    with pytest.raises(explorer.CostExplorerResultError, match="USD only"):
        explorer.parse_pages("eks", request, [eur])
    nan = {"ResultsByTime": [{"TimePeriod": {"Start": "2026-07-01"}, "Groups": [
        {"Keys": ["model$m", "us-west-2"], "Metrics": {"UnblendedCost": {"Amount": "1", "Unit": "USD"}}}]}]}
    with pytest.raises(explorer.CostExplorerResultError, match="AmortizedCost missing"):
        explorer.parse_pages("eks", request, [nan])


MODEL_SETTINGS = {"name": "m", "budget_usd": 100.0, "anomaly_sigma": 3.0, "trailing_days": 14, "restate_days": 3,
                  "tags": {"model": "m", "team": "t"}, "clusters": ["c"]}


def _doc(days: list[dict], rows: list[dict], day: str = "2026-07-03"):
    from hybrid_mlops.cost.report import build_document

    ce = {"window": {"start": "2026-07-01", "end": "2026-07-04"}, "rows": rows, "days": days, "requests": 3,
          "max_requests": 30, "queries": []}
    return build_document(day=day, models=[MODEL_SETTINGS], ce=ce, jobs=[], predictions={},
                          generated_at="2026-07-04T07:00:00+00:00", target="local")


def test_report_states_an_empty_window_and_a_missing_day_honestly():
    days = [{"day": f"2026-07-0{i}", "estimated": i == 3} for i in (1, 2, 3)]
    empty = _doc(days, [])
    assert empty["status"] == "empty" and empty["totals"]["total_usd"] == 0 and empty["alerts"] == []
    assert empty["models"][0]["signals"]["evaluated"] is True  # zero is a measured zero here
    assert empty["final"] is False
    incomplete = _doc(days[:2], [])
    assert incomplete["status"] == "incomplete" and incomplete["final"] is False
    assert incomplete["models"][0]["signals"] == {"evaluated": False}
    assert any("missing, not zero" in w for w in incomplete["warnings"])
    assert any("did not answer 1 day(s)" in w for w in incomplete["warnings"])
    row = {"day": "2026-07-02", "source": "eks", "model": "m", "usage_type": "", "region": "us-west-2",
           "category": "serving", "unblended": 5.0, "amortized": 4.0, "estimated": False}
    final = _doc(days[:2], [row], day="2026-07-02")
    assert final["status"] == "ok" and final["final"] is True and final["totals"]["serving_usd"] == 5.0
    assert [r["day"] for r in final["restated"]] == ["2026-07-01", "2026-07-02"]
