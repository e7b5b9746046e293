"""The trigger forms of every DAG a person triggers: typed Params with descriptions, and a bad value refused
before the run starts with an error naming the field (what Airflow does with a trigger's conf)."""

from __future__ import annotations

import copy

import pytest
from airflow.sdk.exceptions import ParamValidationError

KINDS = ("retrain", "deploy", "monitor", "cost_report", "watch")


@pytest.fixture(scope="module")
def dags(spec):
    from hybrid_mlops.dags import cost_report, deploy, monitor, retrain, watch

    watched = spec.model_copy(update={"drift": spec.drift.model_copy(
        update={"external_report_prefix": "s3://acme-monitoring/fraud/"})})
    return {"retrain": retrain.build([spec])[0], "deploy": deploy.build([spec])[0], "monitor": monitor.build([spec])[0],
            "cost_report": cost_report.build([spec])[0], "watch": watch.build([watched])[0]}


def _validate(dag, conf: dict) -> dict:
    params = copy.deepcopy(dag.params)
    params.update(conf)
    return params.validate()


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_is_typed_and_described(dags, kind):
    params = dags[kind].params
    assert params, f"{kind} has no form"
    for name in params:
        schema = params.get_param(name).schema
        assert schema.get("type"), f"{kind}.{name} has no type"
        assert params.get_param(name).description or schema.get("description"), f"{kind}.{name} has no description"
    _validate(dags[kind], {})  # the defaults pass


@pytest.mark.parametrize("kind, conf, field", [
    ("retrain", {"epochs": 0}, "epochs"),
    ("retrain", {"learning_rate": 2.0}, "learning_rate"),
    ("retrain", {"instance_type": "ml.t2.nano"}, "instance_type"),
    ("retrain", {"spot": "yes"}, "spot"),
    ("retrain", {"data_window_days": 0}, "data_window_days"),
    ("deploy", {"version": "v7"}, "version"),
    ("deploy", {"regions": ["mars-north-1"]}, "regions"),
    ("deploy", {"regions": []}, "regions"),
    ("monitor", {"hour": "2026-11-30 14:00"}, "hour"),
    ("monitor", {"hour": "2026-13-01T10"}, "hour"),
    ("monitor", {"signal_drift": "no"}, "signal_drift"),
    ("cost_report", {"day": "30/11/2026"}, "day"),
    ("cost_report", {"max_pages_per_query": 101}, "max_pages_per_query"),
    ("watch", {"since": "yesterday"}, "since"),
])
def test_a_bad_value_is_refused_naming_the_field(dags, kind, conf, field):
    with pytest.raises(ParamValidationError, match=rf"\b{field}\b"):
        _validate(dags[kind], conf)


def test_good_values_pass(dags):
    assert _validate(dags["retrain"], {"epochs": 5, "learning_rate": 0.01, "instance_type": "ml.g5.xlarge"})["epochs"] == 5
    assert _validate(dags["deploy"], {"version": "7", "regions": ["us-west-2"]})["version"] == "7"
    assert _validate(dags["monitor"], {"hour": "2026-11-30T14"})["hour"] == "2026-11-30T14"
    assert _validate(dags["watch"], {"since": "2026-11-30T14:00:00+00:00"})["since"]


def test_dag_test_refuses_a_bad_trigger_before_any_task_runs(airflow_db, dags):
    """``dag.test(run_conf=...)`` validates the conf as a trigger does: no run is created."""
    from airflow.models.dagrun import DagRun

    dag = dags["retrain"]
    with pytest.raises(ParamValidationError, match=r"\bbatch_size\b"):
        dag.test(run_conf={"batch_size": -1})
    assert not DagRun.find(dag_id=dag.dag_id)
