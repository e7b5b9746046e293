"""Drift-triggered retraining: a drift event starts one retrain, its report lands in the lineage,
and the cooldown holds a second drift-triggered run back."""

from __future__ import annotations

import boto3

from hybrid_mlops.assets import drift_asset_uri
from hybrid_mlops.local.dag_runner import record_asset_event, run_dag

REPORT = "s3://hybrid-mlops-test/monitoring/fraud-detection/2026/11/23/13/constraint_violations.json"


def test_drift_event_starts_one_retrain_and_the_cooldown_holds(aws, airflow_db):
    from hybrid_mlops.factory import build_dags

    # the event monitor_<model>'s signal_drift task emits (that task is covered in test_monitor_dag)
    events = [record_asset_event(drift_asset_uri("fraud-detection"), {
        "report_uri": REPORT, "violated_features": ["amount", "channel"],
        "window_start": "2026-11-23T13:00:00+00:00", "window_end": "2026-11-23T14:00:00+00:00"})]
    retrain = build_dags("retrain")["retrain_fraud_detection"]
    conf = {"epochs": 1, "rows": 20000, "deploy": False}

    first = run_dag(retrain, conf=conf, asset_events=events, hitl_choice="Approve to staging")
    states = {ti.task_id: ti.state for ti in first.get_task_instances()}
    assert first.state == "success" and states["register"] == "success", states
    sm = boto3.client("sagemaker")
    packages = sm.list_model_packages(ModelPackageGroupName="fraud-detection-models")["ModelPackageSummaryList"]
    assert len(packages) == 1
    lineage = sm.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])["CustomerMetadataProperties"]
    assert lineage["trigger"] == "drift"
    assert lineage["drift_report_uri"] == REPORT
    assert lineage["drift_violated_features"] == "amount channel"  # a comma is outside the metadata pattern

    # a drift storm: the next drift-triggered run inside the cooldown does nothing
    second = run_dag(retrain, conf=conf, asset_events=events)
    states = {ti.task_id: ti.state for ti in second.get_task_instances()}
    assert states["check_trigger"] == "success" and states["train"] == "skipped", states
    assert len(sm.list_model_packages(ModelPackageGroupName="fraud-detection-models")["ModelPackageSummaryList"]) == 1

    # time and manual runs are never held back by the cooldown
    third = run_dag(retrain, conf=conf, hitl_choice="Approve to staging")
    assert {ti.task_id: ti.state for ti in third.get_task_instances()}["train"] == "success"
