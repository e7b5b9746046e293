"""The human review with context: the options match the lifecycle, the body sets the candidate beside the
production version (registry on the moto server), and the person's answer lands in the registry."""

from __future__ import annotations

import datetime
import types

import pytest

from hybrid_mlops.approval import REVIEW_OPTIONS, review_markdown, review_option
from hybrid_mlops.hooks.registry import ModelRegistryHook, model_life_cycle
from hybrid_mlops.operators.registry import RegistryApprovalOperator
from hybrid_mlops.specs.model import MetricRule

RULES = {"accuracy": MetricRule(approve_at=0.95, reject_below=0.85),
         "roc_auc": MetricRule(approve_at=0.90, reject_below=0.80)}


def test_options_and_defaults_follow_the_lifecycle():
    assert review_option("Approve", "staging") == "Approve to staging"
    assert review_option("Approve", "prod") == "Approve to prod"
    assert review_option("Reject", "prod") == "Reject"
    op = RegistryApprovalOperator(task_id="r", package_arn="arn", subject="?", defaults="Approve", stage_on_approval="prod")
    assert op.options == list(REVIEW_OPTIONS) and op.defaults == ["Approve to prod"]
    with pytest.raises(ValueError, match="stage_on_approval='archived'"):
        RegistryApprovalOperator(task_id="r", package_arn="arn", subject="?", stage_on_approval="archived")


def test_review_markdown_sets_the_candidate_beside_production():
    body = review_markdown(
        model="fraud-detection", candidate={"version": 7, "metrics": {"accuracy": 0.97, "roc_auc": 0.87}},
        production={"version": 5, "metrics": {"accuracy": 0.96, "roc_auc": 0.91}}, rules=RULES,
        reason="needs a person: roc_auc=0.8700 in [0.8, 0.9)",
        metrics={"accuracy": 0.97, "roc_auc": 0.87, "f1": 0.6, "oracle_roc_auc": 0.89, "training_rows": 4000},
        links={"evaluation.json": "https://console.aws.amazon.com/s3/object/b?prefix=e.json", "none": None},
        drift={"window_start": "2026-11-30T10:00:00+00:00", "violated_features": ["amount", "channel"],
               "report_uri": "s3://b/monitoring/fraud-detection/2026/11/30/10/constraint_violations.json"},
        metric_names=["accuracy", "roc_auc", "f1"],
    )
    assert "| metric | candidate v7 | production v5 | approve at | reject past |" in body
    assert "| roc_auc | 0.8700 | 0.9100 | >= 0.9 | < 0.8 |" in body
    assert "| f1 | 0.6000 | – | | |" in body and "| training_rows" not in body
    assert "oracle_roc_auc **0.8900** (the best any model can reach on this data)" in body
    assert "violated features: amount, channel" in body
    assert "[evaluation.json](https://console.aws.amazon.com/s3/object/b?prefix=e.json)" in body and "[none]" not in body


def _register(hook: ModelRegistryHook, group: str, job: str, metadata: dict, lifecycle: dict, status: str) -> dict:
    hook.ensure_group(group, "", {})
    arn = hook.create_package({
        "ModelPackageGroupName": group, "ModelApprovalStatus": status,
        "InferenceSpecification": {"Containers": [{"Image": "img:1", "ModelDataUrl": f"s3://b/models/{job}/model.tar.gz"}],
                                   "SupportedContentTypes": ["application/json"],
                                   "SupportedResponseMIMETypes": ["application/json"]},
        "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                          "S3Uri": f"s3://b/models/{job}/evaluation.json"}}},
        "CustomerMetadataProperties": {"training_job": job, **metadata}, "ModelLifeCycle": lifecycle,
    })
    return hook.describe_package(arn)


def test_the_gate_writes_the_review_and_the_person_decides(aws, spec, monkeypatch):
    import airflow.sdk

    from hybrid_mlops.retrain_steps import apply_approval_rules

    pushed = {}
    ti = types.SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: {"ti": ti})  # the gate's task instance
    hook = ModelRegistryHook(aws_conn_id="aws_default")
    group = spec.registry.model_package_group
    _register(hook, group, "job-prod", {"accuracy": "0.962000", "roc_auc": "0.915000"},
              model_life_cycle("prod", "Deployed", "served"), "Approved")
    candidate = _register(hook, group, "job-new", {
        "train_data_uri": "s3://b/data/fraud-detection/run/train/",
        "drift_report_uri": "s3://b/monitoring/fraud-detection/2026/11/30/10/constraint_violations.json",
        "drift_violated_features": "amount channel", "drift_window_start": "2026-11-30T10:00:00+00:00",
    }, model_life_cycle("dev", "PendingApproval", "new"), "PendingManualApproval")
    metrics = {"accuracy": 0.97, "roc_auc": 0.87, "oracle_roc_auc": 0.89}
    assert apply_approval_rules(spec, candidate, metrics) == "human_review"
    body = pushed["review"]
    assert f"candidate v{candidate['ModelPackageVersion']} | production v1" in body
    assert "| roc_auc | 0.8700 | 0.9150 |" in body and "oracle_roc_auc **0.8900**" in body
    assert "violated features: amount, channel" in body
    assert "[drift report](/hybrid-mlops/reports/monitoring/fraud-detection/2026/11/30/10/report.json)" in body
    assert "[training data](https://console.aws.amazon.com/s3/buckets/b?region=us-west-2&prefix=data/fraud-detection/run/train/)" in body

    op = RegistryApprovalOperator(task_id="human_review", package_arn=candidate["ModelPackageArn"],
                                  aws_conn_id="aws_default", subject="?", body=body)
    event = {"chosen_options": ["Approve to staging"], "params_input": {},
             "responded_by_user": {"id": "7", "name": "risk-lead"},
             "responded_at": datetime.datetime.now(datetime.timezone.utc)}
    op.execute_complete({}, event)
    after = hook.describe_package(candidate["ModelPackageArn"])
    assert after["ModelApprovalStatus"] == "Approved"
    assert after["ApprovalDescription"] == "Approved to staging by risk-lead in Airflow (human-in-the-loop)"
    assert after["ModelLifeCycle"]["Stage"] == "staging"
    assert after["ModelLifeCycle"]["StageDescription"] == after["ApprovalDescription"]
    props = after["CustomerMetadataProperties"]
    assert (props["decided_by"], props["decided_stage"], props["decision"]) == ("risk-lead", "staging", "human")
