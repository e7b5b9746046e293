"""The whole retrain DAG under dag.test() on the local target (moto server + local training)."""

from __future__ import annotations

import json

import boto3
import pytest

from hybrid_mlops.local.dag_runner import run_dag


@pytest.fixture
def retrain_dag():
    from hybrid_mlops.factory import build_dags

    return build_dags("retrain")["retrain_fraud_detection"]


def test_retrain_end_to_end_local(aws, airflow_db, retrain_dag):
    run = run_dag(retrain_dag, conf={"epochs": 3, "rows": 60000, "deploy": False})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    sm = boto3.client("sagemaker")
    packages = sm.list_model_packages(ModelPackageGroupName="fraud-detection-models")["ModelPackageSummaryList"]
    assert len(packages) == 1
    package = sm.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    assert package["ModelApprovalStatus"] in ("Approved", "Rejected")
    assert package["ApprovalDescription"].startswith(("auto-approved", "auto-rejected"))
    meta = package["CustomerMetadataProperties"]
    assert meta["training_job"].startswith("fraud-detection-train-")
    assert meta["trigger"] == "manual" and meta["git_sha"]
    url = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    bucket, key = url[5:].split("/", 1)
    import io
    import tarfile

    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
    for member in ("model.onnx", "input_schema.json", "evaluation.json"):  # what the training contract asks
        assert member in names

    def beside(name):  # what the project writes beside model.tar.gz
        return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key.rsplit("/", 1)[0] + "/" + name)["Body"].read())

    evaluation = beside("evaluation.json")
    stats, constraints, sample = beside("statistics.json"), beside("constraints.json"), beside("smoke_sample.json")
    assert stats["dataset"]["item_count"] == 60000 and {f["name"] for f in stats["features"]} >= {"amount", "channel"}
    assert {f["name"] for f in constraints["features"]} == {f["name"] for f in stats["features"]}
    assert sample["schema"]["task"] == "binary" and len(sample["rows"]["amount"]) == 8
    prepared = beside("prepared-baseline/manifest.json")  # the monitor's O(window) numeric baseline
    assert prepared["train_data_uri"] == meta["train_data_uri"] and prepared["features"]["amount"]["rows"] == 60000
    assert evaluation["onnx_max_abs_diff"] <= 1e-5
    assert evaluation["oracle_roc_auc"] - evaluation["roc_auc"] <= 0.03
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith("evaluation.json")
