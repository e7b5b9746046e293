"""Model Registry against the moto server: idempotent registration, metadata kept, human decisions."""

from __future__ import annotations

import boto3

from hybrid_mlops.hooks.registry import ModelRegistryHook
from hybrid_mlops.local.dag_runner import run_dag
from hybrid_mlops.operators.registry import RegisterModelVersionOperator

GROUP = "fraud-detection-models"


def register_op(job: str) -> RegisterModelVersionOperator:
    return RegisterModelVersionOperator(
        task_id="register", model_package_group=GROUP, group_description="d",
        group_tags={"team": "risk-ml", "environment": "dev"},
        model_data_url=f"s3://hybrid-mlops-test/models/fraud-detection/{job}/output/model.tar.gz",
        inference_image="img:1", customer_metadata={"training_job": job, "roc_auc": "0.95"},
        model_metrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": "s3://b/e.json"}}},
        metadata_properties={"GeneratedBy": job, "CommitId": "abc"},
    )


def test_retried_register_creates_no_second_package(aws):
    first = register_op("job-a").execute({})
    again = register_op("job-a").execute({})
    other = register_op("job-b").execute({})
    assert first["reused"] is False and again["reused"] is True
    assert again["ModelPackageArn"] == first["ModelPackageArn"]
    assert other["ModelPackageVersion"] == first["ModelPackageVersion"] + 1
    sm = boto3.client("sagemaker")
    assert len(sm.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]) == 2
    group_arn = sm.describe_model_package_group(ModelPackageGroupName=GROUP)["ModelPackageGroupArn"]
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=group_arn)["Tags"]}
    assert tags == {"team": "risk-ml", "environment": "dev"}


def test_updates_keep_lineage_and_decision(aws):
    arn = register_op("job-a").execute({})["ModelPackageArn"]
    hook = ModelRegistryHook(aws_conn_id=None)
    hook.update_package(arn, status="Approved", reason="auto-approved: roc_auc=0.95 >= 0.9")
    after = hook.update_metadata(arn, {"deployed_regions": "us-west-2"})
    assert after["ModelApprovalStatus"] == "Approved"
    assert after["ApprovalDescription"] == "auto-approved: roc_auc=0.95 >= 0.9"
    assert after["CustomerMetadataProperties"] == {"training_job": "job-a", "roc_auc": "0.95",
                                                    "deployed_regions": "us-west-2"}
    assert hook.latest_package(GROUP)["ModelPackageArn"] == arn
    assert hook.latest_package(GROUP, status="Rejected") is None


def test_borderline_model_goes_to_a_person_who_rejects_it(aws, airflow_db, spec):
    """Rules that cannot decide hand the version to a person (answered like the UI would)."""
    from hybrid_mlops.dags.retrain import build_retrain_dag
    from hybrid_mlops.specs.model import ApprovalSpec, MetricRule

    undecided = spec.model_copy(update={"approval": ApprovalSpec(
        rules={"roc_auc": MetricRule(approve_at=0.999, reject_below=0.5)}, human_timeout_hours=1)})
    dag = build_retrain_dag(undecided)
    run = run_dag(dag, conf={"epochs": 1, "rows": 20000, "deploy": False}, hitl_choice="Reject",
                  responder="risk-lead")
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["human_review"] == "success" and states["approved"] == "skipped", states
    sm = boto3.client("sagemaker")
    arn = sm.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"][0]["ModelPackageArn"]
    package = sm.describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert package["ApprovalDescription"] == "Rejected by risk-lead in Airflow (human-in-the-loop)"
    assert package["CustomerMetadataProperties"]["decided_by"] == "risk-lead"
    from sqlalchemy import select

    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session

    with create_session() as session:  # what the person saw: the review's markdown
        detail = session.scalars(select(HITLDetail).where(HITLDetail.ti_id == run.get_task_instance("human_review").id)).one()
        assert detail.options == ["Approve to staging", "Approve to prod", "Reject"]
        assert "| metric | candidate v1 | production (none) |" in detail.body and "oracle_roc_auc" in detail.body
