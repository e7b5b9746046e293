"""Lifecycle stages in the registry's own field (ModelLifeCycle), on the moto server.

dev at registration; staging or prod on approval (the rules or a person, ``approval.stage_on_approval``);
prod when a deploy records the version as served; archived once another version replaced it in prod.
moto drops ModelLifeCycle, so on the local target the hook mirrors it (see ModelRegistryHook's
docstring); these tests read it back through the hook in DescribeModelPackage's shape. Every request
is also checked against botocore's model by tests/strict_aws.py.
"""

from __future__ import annotations

import collections
import datetime
import json
import types

import boto3
import botocore.session
import pytest

from hybrid_mlops.hooks.registry import (
    LIFECYCLE_MIRROR_PREFIX,
    ModelRegistryHook,
    model_life_cycle,
)
from hybrid_mlops.operators.registry import RegisterModelVersionOperator, RegistryApprovalOperator
from strict_aws import request_violations

GROUP = "fraud-detection-models"


def _register(job: str) -> dict:
    op = RegisterModelVersionOperator(
        task_id="register", model_package_group=GROUP, group_description="d", group_tags={"team": "risk-ml"},
        model_data_url=f"s3://hybrid-mlops-test/models/fraud-detection/{job}/output/model.tar.gz",
        inference_image="img:1", customer_metadata={"training_job": job, "roc_auc": "0.95"},
    )
    op._persist_link = lambda context: None  # links persist through the task runner, absent here
    return op.execute({})


def _stage(arn: str) -> tuple[str, str]:
    lifecycle = ModelRegistryHook(aws_conn_id=None).describe_package(arn)["ModelLifeCycle"]
    return lifecycle["Stage"], lifecycle["StageStatus"]


def _assert_real_shape(lifecycle: dict) -> None:
    """The block has DescribeModelPackage's ModelLifeCycle members, required ones present, within limits."""
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("ModelLifeCycle")
    assert set(lifecycle) <= set(shape.members) and set(shape.required_members) <= set(lifecycle)
    assert not request_violations("sagemaker", "UpdateModelPackage",
                                  {"ModelPackageArn": "arn:aws:sagemaker:us-west-2:123456789012:model-package/g/1",
                                   "ModelLifeCycle": lifecycle})


def test_a_new_version_is_in_dev_and_the_local_mirror_keeps_it_in_the_real_shape(aws):
    arn = _register("job-a")["ModelPackageArn"]
    described = ModelRegistryHook(aws_conn_id=None).describe_package(arn)
    lifecycle = described["ModelLifeCycle"]
    assert (lifecycle["Stage"], lifecycle["StageStatus"]) == ("dev", "PendingApproval")
    assert "job-a" in lifecycle["StageDescription"]
    _assert_real_shape(lifecycle)
    # moto accepted the field in CreateModelPackage and kept nothing of it: the mirror is what describe read.
    assert "ModelLifeCycle" not in boto3.client("sagemaker").describe_model_package(ModelPackageName=arn)
    bucket, key = ModelRegistryHook.lifecycle_mirror_location(arn)
    assert key == f"{LIFECYCLE_MIRROR_PREFIX}us-west-2/123456789012/{GROUP}/1.json"
    body = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert body == {"ModelPackageArn": arn, "ModelLifeCycle": lifecycle}
    # Not mirrored (the aws target): the hook reads only what the registry returns.
    real = ModelRegistryHook(aws_conn_id=None)
    real.mirror_lifecycle = False
    assert "ModelLifeCycle" not in real.describe_package(arn)


def test_lifecycle_block_is_checked_against_the_model():
    with pytest.raises(ValueError, match=r"ModelLifeCycle\.Stage='pre prod'"):
        model_life_cycle("pre prod", "Approved")
    with pytest.raises(ValueError, match=r"ModelLifeCycle\.StageStatus=''"):
        model_life_cycle("staging", "")
    block = model_life_cycle("staging", "Approved", "line one\nline two " + "x" * 2000)
    assert block["StageDescription"].startswith("line one line two x") and len(block["StageDescription"]) == 1024
    assert model_life_cycle("dev", "PendingApproval") == {"Stage": "dev", "StageStatus": "PendingApproval"}
    _assert_real_shape(block)


def test_updates_without_lifecycle_keep_the_stage(aws):
    arn = _register("job-a")["ModelPackageArn"]
    hook = ModelRegistryHook(aws_conn_id=None)
    hook.update_package(arn, status="Approved", reason="ok", lifecycle=model_life_cycle("staging", "Approved", "ok"))
    after = hook.update_metadata(arn, {"deployed_regions": "us-west-2"})
    assert after["ModelLifeCycle"] == {"Stage": "staging", "StageStatus": "Approved", "StageDescription": "ok"}
    assert after["ModelApprovalStatus"] == "Approved"


@pytest.fixture
def gate_context(monkeypatch):
    """apply_approval_rules pushes its reason to XCom: a stand-in task instance."""
    import airflow.sdk

    pushed = {}
    ti = types.SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: {"ti": ti})
    return pushed


@pytest.mark.parametrize("stage_on_approval", [None, "prod"])
def test_rules_approval_moves_the_version_to_the_spec_stage(aws, spec, gate_context, stage_on_approval):
    from hybrid_mlops.retrain_steps import apply_approval_rules

    if stage_on_approval:
        spec = spec.model_copy(update={"approval": spec.approval.model_copy(update={"stage_on_approval": stage_on_approval})})
    registered = _register("job-a")
    metrics = {m: r.approve_at for m, r in spec.approval.rules.items()}  # at the bar: approved
    assert apply_approval_rules(spec, registered, metrics) == "approved"
    lifecycle = ModelRegistryHook(aws_conn_id=None).describe_package(registered["ModelPackageArn"])["ModelLifeCycle"]
    assert (lifecycle["Stage"], lifecycle["StageStatus"]) == (stage_on_approval or "staging", "Approved")
    assert lifecycle["StageDescription"].startswith("Approved by the rules")


def test_rules_rejection_stays_in_dev_and_undecided_records_the_target_stage(aws, spec, gate_context):
    from hybrid_mlops.retrain_steps import apply_approval_rules
    from hybrid_mlops.specs.model import ApprovalSpec, MetricRule

    rejected = _register("job-a")
    bands = spec.model_copy(update={"approval": ApprovalSpec(
        rules={"roc_auc": MetricRule(approve_at=0.9, reject_below=0.6)}, stage_on_approval="prod")})
    assert apply_approval_rules(bands, rejected, {"roc_auc": 0.5}) == "rejected"
    assert _stage(rejected["ModelPackageArn"]) == ("dev", "Rejected")

    undecided = _register("job-b")
    assert apply_approval_rules(bands, undecided, {"roc_auc": 0.8}) == "human_review"
    package = ModelRegistryHook(aws_conn_id=None).describe_package(undecided["ModelPackageArn"])
    assert package["CustomerMetadataProperties"]["stage_on_approval"] == "prod"
    assert (package["ModelLifeCycle"]["Stage"], package["ModelApprovalStatus"]) == ("dev", "PendingManualApproval")


def _answer(op: RegistryApprovalOperator, choice: str, who: str):
    event = {"chosen_options": [choice], "params_input": {}, "responded_by_user": {"id": who, "name": who},
             "responded_at": datetime.datetime.now(datetime.timezone.utc)}
    return op.execute_complete({}, event)


def test_a_persons_approval_and_rejection_are_recorded_in_the_stage(aws):
    hook = ModelRegistryHook(aws_conn_id=None)
    to_prod = _register("job-a")["ModelPackageArn"]
    _answer(RegistryApprovalOperator(task_id="human_review", package_arn=to_prod, aws_conn_id=None,
                                     subject="Approve?"), "Approve to prod", "risk-lead")
    described = hook.describe_package(to_prod)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"] == "Approved to prod by risk-lead in Airflow (human-in-the-loop)"
    assert described["ModelLifeCycle"] == {"Stage": "prod", "StageStatus": "Approved",
                                           "StageDescription": "Approved to prod by risk-lead in Airflow (human-in-the-loop)"}
    props = described["CustomerMetadataProperties"]
    assert (props["decision"], props["decided_by"], props["decided_stage"]) == ("human", "risk-lead", "prod")

    staging = _register("job-b")["ModelPackageArn"]
    _answer(RegistryApprovalOperator(task_id="human_review", package_arn=staging, aws_conn_id=None,
                                     subject="Approve?", stage_on_approval="prod"), "Approve to staging", "risk-lead")
    assert _stage(staging) == ("staging", "Approved")

    rejected = _register("job-c")["ModelPackageArn"]
    _answer(RegistryApprovalOperator(task_id="human_review", package_arn=rejected, aws_conn_id=None,
                                     subject="Approve?", stage_on_approval="prod"), "Reject", "risk-lead")
    assert _stage(rejected) == ("dev", "Rejected")
    assert "risk-lead" in hook.describe_package(rejected)["ModelLifeCycle"]["StageDescription"]


def _record(spec, registered: dict, regions: list[str]) -> dict:
    """record_deployment as the deploy runs it, after a deploy of ``registered`` to ``regions``."""
    from hybrid_mlops.dags.deploy import _record_task

    package = {"version": registered["ModelPackageVersion"], "package_arn": registered["ModelPackageArn"],
               "storage_uri": registered["ModelDataUrl"]}
    results = [{"region": r, "outcome": "deployed", "url": f"http://{r}.example"} for r in regions]
    context = {"outlet_events": collections.defaultdict(types.SimpleNamespace)}
    return _record_task(spec).function(package, results, regions, **context)


def test_deploy_moves_the_version_to_prod_and_archives_the_one_it_replaced_everywhere(aws, spec):
    hook = ModelRegistryHook(aws_conn_id=None)
    v1, v2, v3 = (_register(job) for job in ("job-a", "job-b", "job-c"))
    for v in (v1, v2):
        hook.update_package(v["ModelPackageArn"], status="Approved", reason="ok",
                            lifecycle=model_life_cycle("staging", "Approved"))

    _record(spec, v1, ["us-west-2", "eu-west-1"])
    assert _stage(v1["ModelPackageArn"]) == ("prod", "Deployed")
    assert "eu-west-1 us-west-2" in hook.describe_package(v1["ModelPackageArn"])["ModelLifeCycle"]["StageDescription"]

    _record(spec, v2, ["us-west-2"])  # v1 still serves eu-west-1: both in prod
    assert _stage(v2["ModelPackageArn"]) == ("prod", "Deployed")
    assert _stage(v1["ModelPackageArn"]) == ("prod", "Deployed")
    assert [p["ModelPackageVersion"] for p in hook.packages_in_stage(GROUP, "prod")] == [2, 1]

    _record(spec, v2, ["eu-west-1"])  # v2 now serves every region v1 served
    archived = hook.describe_package(v1["ModelPackageArn"])["ModelLifeCycle"]
    assert (archived["Stage"], archived["StageStatus"]) == ("archived", "Retired")
    assert archived["StageDescription"].startswith("Replaced in prod by version 2 in eu-west-1")
    _assert_real_shape(archived)
    assert _stage(v3["ModelPackageArn"]) == ("dev", "PendingApproval")  # untouched

    _record(spec, v1, ["us-west-2", "eu-west-1"])  # a rollback: the replaced version is archived too
    assert _stage(v1["ModelPackageArn"]) == ("prod", "Deployed")
    assert _stage(v2["ModelPackageArn"]) == ("archived", "Retired")
    assert [p["ModelPackageVersion"] for p in hook.packages_in_stage(GROUP, "archived")] == [2]
