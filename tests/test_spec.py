"""Model spec validation: every error names the file and the field."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import ROOT
from hybrid_mlops.specs import SpecError, load_spec, load_specs, parse_spec

SPEC_FILE = ROOT / "include" / "models" / "fraud-detection.yaml"
RAW = yaml.safe_load(SPEC_FILE.read_text())


def broken(path: str, value):
    data = copy.deepcopy(RAW)
    *parents, leaf = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[leaf]
    else:
        node[leaf] = value
    return data


def test_shipped_specs_load():
    specs = load_specs(ROOT / "include" / "models")
    assert [(s.name, s.task, s.data.source.type) for s in specs] == [
        ("diabetes-progression", "regression", "sql"), ("fraud-detection", "binary", "synthetic"),
        ("wine-cultivar", "multiclass", "feature_store")]
    spec = specs[1]
    assert spec.training.instance_type == "ml.g5.2xlarge" and spec.training.instance_count == 2
    assert spec.approval.rules["accuracy"].approve_at == 0.95
    assert spec.approval.rules["accuracy"].reject_below == 0.85
    assert spec.serving.regions == ["us-west-2", "ap-northeast-2", "eu-west-1"]


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("training.instance_type", "g5.2xlarge", "training.instance_type='g5.2xlarge': String should match"),
        ("training.instance_count", 0, "training.instance_count=0: Input should be greater than or equal to 1"),
        ("training.max_wait_seconds", 60, "training: max_wait_seconds=60 must be >= max_run_seconds=14400"),
        ("training.metric_definitions", [{"name": "x", "regex": "no group"}],
         "training.metric_definitions.0.regex='no group': must have exactly one capture group"),
        ("approval.rules", {"accuracy": {"approve_at": 0.8, "reject_below": 0.85}},
         "approval.rules.accuracy: approve_at=0.8 must be >= reject_below=0.85; raise approve_at or lower reject_below"),
        ("approval.rules", {"auc": {"approve_at": 0.9, "reject_below": 0.8}},
         "approval.rules.auc: unknown metric for task 'binary'"),
        ("approval.rules", {"log_loss": {"approve_at": 0.3, "reject_below": 0.1}},
         "approval.rules.log_loss: lower is better for log_loss; use reject_above instead of reject_below"),
        ("approval.rules", {"accuracy": {"approve_at": 0.9}},
         "approval.rules.accuracy: give exactly one of reject_below (higher is better) or reject_above"),
        ("schedule.retrain", "0 3 * *", "schedule.retrain='0 3 * *': is not a cron expression"),
        ("schedule.monitor", "@every-hour", "schedule.monitor='@every-hour': is not a cron expression"),
        ("task", "ranking", "task='ranking': Input should be 'binary', 'multiclass' or 'regression'"),
        ("schema.label", KeyError, "schema.label: is required"),
        ("data.source", {"type": "s4", "uri": "s3://x/y"}, "data.source: type='s4' is not a source type"),
        ("data.source", {"type": "s3", "uri": "http://x/y"}, "data.source.s3.uri='http://x/y': String should match"),
        ("schema.features", {"amount": "numeric", "label": "numeric"},
         "schema: label='label' is also listed under features"),
        ("drift.features", {"amout": {"psi": 0.3}}, "drift.features: ['amout'] are not features of schema.features"),
        ("serving.min_replicas", 11, "serving: min_replicas=11 must be <= max_replicas=10"),
        ("serving.memory_limit", "16 gigs", "serving.memory_limit='16 gigs'"),
        ("cost.daily_budget_usd", KeyError, "cost.daily_budget_usd: is required"),
        ("registry.model_package_grp", "x", "registry.model_package_grp: is not a known field"),
        ("name", "Fraud_Detection", "name='Fraud_Detection': String should match pattern"),
    ],
)
def test_errors_name_the_field(path, value, message):
    with pytest.raises(SpecError) as err:
        parse_spec(broken(path, value), "include/models/fraud-detection.yaml")
    text = str(err.value)
    assert text.startswith("include/models/fraud-detection.yaml: ")
    assert message in text, text


def test_file_name_must_match(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(SPEC_FILE.read_text())
    with pytest.raises(SpecError, match="name='fraud-detection' must match the file name 'other'"):
        load_spec(other)


def test_bad_yaml_is_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml: not valid YAML"):
        load_spec(bad)


def test_a_second_model_is_a_second_yaml(tmp_path):
    from hybrid_mlops.factory import build_dags

    (tmp_path / "fraud-detection.yaml").write_text(SPEC_FILE.read_text())
    second = copy.deepcopy(RAW)
    second.update(name="chargeback-risk")
    second["registry"]["model_package_group"] = "chargeback-risk-models"
    (tmp_path / "chargeback-risk.yaml").write_text(yaml.safe_dump(second))
    dags = build_dags("retrain", tmp_path)
    assert sorted(dags) == ["retrain_chargeback_risk", "retrain_fraud_detection"]
