"""promote_<model> on the moto server with two accounts: dev (the test's credentials) and prod.

moto maps credentials to accounts: the test's keys are account 123456789012, and the keys
``sts:AssumeRole`` returns for ``arn:aws:iam::210987654321:role/...`` act in 210987654321 (moto's
``get_account_id_from``), so the prod registry, bucket and KMS key below are another account's, reached
the way the DAG reaches them. The human-in-the-loop approval is answered from a helper thread with the
REST API's writes (``run_dag``). moto 5.2.5 has no PutModelPackageGroupPolicy (it answers 500) and drops
ModelLifeCycle: both are kept in the local mirror (hooks/promotion.py, hooks/registry.py) and read back
here; the policy request kept there is checked against botocore's model. Every request sent is checked
by tests/strict_aws.py.
"""

from __future__ import annotations

import json

import boto3
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

from hybrid_mlops.hooks.promotion import POLICY_MIRROR_PREFIX
from hybrid_mlops.hooks.registry import ModelRegistryHook, model_life_cycle
from hybrid_mlops.local.dag_runner import run_dag
from hybrid_mlops.operators.registry import RegisterModelVersionOperator
from hybrid_mlops.specs.model import load_spec
from conftest import ROOT
from strict_aws import request_violations

PROD_ACCOUNT = "210987654321"
PROD_REGION = "eu-west-1"
PROD_ROLE = f"arn:aws:iam::{PROD_ACCOUNT}:role/hybrid-mlops-promotion"
PROD_BUCKET = "hybrid-mlops-prod-models"
DEV_BUCKET = "hybrid-mlops-test"
PREFIX = "models/fraud-detection/job-a/output/"
FILES = {"model.tar.gz": b"\x1f\x8b" + b"model bytes" * 500, "evaluation.json": b'{"roc_auc": 0.97}',
         "statistics.json": b'{"version": 0.0}', "constraints.json": b'{"version": 0.0}',
         "smoke_sample.json": b'{"rows": []}'}


def _prod_session() -> boto3.Session:
    """The prod account, as the role (what moto maps the assumed role's keys to)."""
    creds = boto3.client("sts").assume_role(RoleArn=PROD_ROLE, RoleSessionName="test-setup")["Credentials"]
    return boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                         aws_session_token=creds["SessionToken"], region_name=PROD_REGION)


@pytest.fixture
def accounts(aws, spec, tmp_path, monkeypatch):
    """An Approved dev version (with its files) and the prod account's bucket and KMS key; yields the spec
    (with its promotion section), written to a specs folder of the test's own: the DAG files that
    dag.test() parses build from it."""
    s3 = boto3.client("s3")
    for name, body in FILES.items():
        s3.put_object(Bucket=DEV_BUCKET, Key=PREFIX + name, Body=body)
    # one file without an SDK checksum: the copy is verified against its SHA-256, read once
    boto3.client("s3", config=Config(request_checksum_calculation="when_required")).put_object(
        Bucket=DEV_BUCKET, Key=PREFIX + "input_schema.json", Body=b'{"task": "binary"}')
    uri = f"s3://{DEV_BUCKET}/{PREFIX}"
    op = RegisterModelVersionOperator(
        task_id="register", model_package_group=spec.registry.model_package_group, group_tags={"team": "risk-ml"},
        model_data_url=uri + "model.tar.gz", inference_image="ghcr.io/hybrid-mlops/predictor:1",
        customer_metadata={"training_job": "job-a", "roc_auc": "0.970000", "accuracy": "0.981000"},
        model_metrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": uri + "evaluation.json"}},
                       "ModelDataQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": uri + "statistics.json"},
                                            "Constraints": {"ContentType": "application/json", "S3Uri": uri + "constraints.json"}}},
    )
    op._persist_link = lambda context: None  # links persist through the task runner, absent here
    arn = op.execute({})["ModelPackageArn"]
    ModelRegistryHook(aws_conn_id=None).update_package(
        arn, status="Approved", reason="Approved by the rules", lifecycle=model_life_cycle("staging", "Approved", "ok"),
        properties={"deployed_regions": "us-west-2"})  # served in dev: not a fact about prod

    prod = _prod_session()
    prod.client("s3").create_bucket(Bucket=PROD_BUCKET, CreateBucketConfiguration={"LocationConstraint": PROD_REGION})
    key_arn = prod.client("kms").create_key(Description="prod models")["KeyMetadata"]["Arn"]
    document = yaml.safe_load((ROOT / "include" / "models" / "fraud-detection.yaml").read_text())
    document["promotion"] = {"account_id": PROD_ACCOUNT, "region": PROD_REGION, "role_arn": PROD_ROLE,
                             "bucket": PROD_BUCKET, "kms_key_arn": key_arn}
    models = tmp_path / "models"
    models.mkdir()
    (models / "fraud-detection.yaml").write_text(yaml.safe_dump(document))
    monkeypatch.setenv("HYBRID_MLOPS_MODELS_DIR", str(models))
    yield load_spec(models / "fraud-detection.yaml")


def _dag(spec):
    from hybrid_mlops.factory import build_dags

    return build_dags("promote")[f"promote_{spec.dag_suffix}"]


def _states(run) -> dict:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _question(run):
    """The approval request as the UI shows it (subject, body) and the answer."""
    from sqlalchemy import select

    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session

    with create_session() as session:
        detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == run.get_task_instance("approve_promotion").id))
        session.expunge(detail)
        return detail


def _prod_objects(prod) -> dict:
    listed = prod.client("s3").list_objects_v2(Bucket=PROD_BUCKET).get("Contents", [])
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listed}


def test_promote_copies_registers_in_prod_and_a_rerun_writes_nothing(accounts, airflow_db):
    from hybrid_mlops.hooks.promotion import PromotionRegistryHook
    from hybrid_mlops.promotion import prod_registry

    spec, group = accounts, accounts.registry.model_package_group
    run = run_dag(_dag(spec), conf={"stage": "prod"}, hitl_choice="Approve", responder="release-manager")
    assert run.state == "success", _states(run)
    assert _states(run)["record_promotion"] == "success"
    question = _question(run)  # what the person saw before anything was written in prod
    assert question.subject == f"Promote {group} version 1 to account {PROD_ACCOUNT} ({PROD_REGION})?"
    for shown in ("roc_auc 0.970000", "accuracy 0.981000", "staging / Approved", "lifecycle stage **prod**",
                  "model.tar.gz", spec.promotion.kms_key_arn):
        assert shown in question.body, question.body

    prod = _prod_session()
    sm = prod.client("sagemaker")
    group_arn = sm.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupArn"]
    assert group_arn.split(":")[3:5] == [PROD_REGION, PROD_ACCOUNT]
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=group_arn)["Tags"]}
    assert tags["environment"] == "prod" and tags["model"] == "fraud-detection" and tags["source-account"] == "123456789012"
    versions = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert len(versions) == 1
    described = prod_registry(spec).describe_package(versions[0]["ModelPackageArn"])
    dev_arn = f"arn:aws:sagemaker:us-west-2:123456789012:model-package/{group}/1"
    assert described["ModelApprovalStatus"] == "Approved"
    assert (described["ModelLifeCycle"]["Stage"], described["ModelLifeCycle"]["StageStatus"]) == ("prod", "Approved")
    assert "release-manager" in described["ModelLifeCycle"]["StageDescription"]
    meta = described["CustomerMetadataProperties"]
    assert meta["source_package_arn"] == dev_arn and meta["source_account"] == "123456789012"
    assert meta["promoted_by"] == "release-manager" and meta["roc_auc"] == "0.970000"
    assert meta["training_job"] == "job-a" and "deployed_regions" not in meta
    container = described["InferenceSpecification"]["Containers"][0]
    assert container["ModelDataUrl"] == f"s3://{PROD_BUCKET}/{PREFIX}model.tar.gz"
    assert container["Image"] == "ghcr.io/hybrid-mlops/predictor:1"
    assert described["ModelMetrics"]["ModelDataQuality"]["Constraints"]["S3Uri"] == \
        f"s3://{PROD_BUCKET}/{PREFIX}constraints.json"

    # every file beside model.tar.gz, same bytes, SSE-KMS with the prod key
    s3 = prod.client("s3")
    for name in [*FILES, "input_schema.json"]:
        head = s3.head_object(Bucket=PROD_BUCKET, Key=PREFIX + name)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", spec.promotion.kms_key_arn), name
        dev_body = boto3.client("s3").get_object(Bucket=DEV_BUCKET, Key=PREFIX + name)["Body"].read()
        assert s3.get_object(Bucket=PROD_BUCKET, Key=PREFIX + name)["Body"].read() == dev_body
    copies = {c["target"].rsplit("/", 1)[1]: c for c in run.get_task_instance("copy_artifacts").xcom_pull(task_ids="copy_artifacts")}
    assert copies["model.tar.gz"]["checksum"].startswith("CRC32:")  # the SDK's checksum, compared unread
    assert copies["input_schema.json"]["checksum"].startswith("SHA256:")  # none at the source: read once

    # the dev group lets the prod account read it; the request kept in the mirror is valid on AWS
    dev = PromotionRegistryHook(aws_conn_id=None)
    policy = dev.group_policy(group)
    principals = {s["Sid"]: (s["Principal"]["AWS"], tuple(s["Action"]), s["Resource"]) for s in policy["Statement"]}
    assert principals[f"ReadModelPackageGroup{PROD_ACCOUNT}"] == (
        f"arn:aws:iam::{PROD_ACCOUNT}:root", ("sagemaker:DescribeModelPackageGroup",), dev.group_arn(group))
    assert principals[f"ReadModelPackages{PROD_ACCOUNT}"] == (
        f"arn:aws:iam::{PROD_ACCOUNT}:root", ("sagemaker:DescribeModelPackage", "sagemaker:ListModelPackages"),
        f"arn:aws:sagemaker:us-west-2:123456789012:model-package/{group}/*")
    key = f"{POLICY_MIRROR_PREFIX}us-west-2/123456789012/{group}.json"
    request = json.loads(boto3.client("s3").get_object(Bucket=DEV_BUCKET, Key=key)["Body"].read())
    assert request_violations("sagemaker", "PutModelPackageGroupPolicy", request) == []

    # the dev version says where it went; its stage is unchanged
    source = dev.describe_package(dev_arn)
    assert source["CustomerMetadataProperties"]["promoted_to"] == described["ModelPackageArn"]
    assert (source["ModelLifeCycle"]["Stage"], source["ModelLifeCycle"]["StageStatus"]) == ("staging", "Promoted")
    assert source["ModelApprovalStatus"] == "Approved"

    # a rerun finds the prod version: no question asked, nothing written in either account
    before = (_prod_objects(prod), sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"],
              dev.describe_package(dev_arn))
    again = run_dag(_dag(spec), conf={"stage": "prod"}, hitl_choice="Approve", responder="someone-else")
    states = _states(again)
    assert again.state == "success", states
    assert states["not_yet_promoted"] == "success" and states["approve_promotion"] == "skipped", states
    assert states["register_in_prod"] == "skipped" and states["record_promotion"] == "skipped", states
    after = (_prod_objects(prod), sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"],
             dev.describe_package(dev_arn))
    assert after == before


def test_a_rejection_writes_nothing_in_prod(accounts, airflow_db):
    from hybrid_mlops.hooks.promotion import PromotionRegistryHook

    spec, group = accounts, accounts.registry.model_package_group
    run = run_dag(_dag(spec), hitl_choice="Reject", responder="release-manager")
    states = _states(run)
    assert states["approve_promotion"] == "success", states
    assert {states[t] for t in ("grant_prod_read", "copy_artifacts", "register_in_prod", "record_promotion")} == \
        {"skipped"}, states
    prod = _prod_session()
    with pytest.raises(ClientError):
        prod.client("sagemaker").describe_model_package_group(ModelPackageGroupName=group)
    assert _prod_objects(prod) == {}
    dev = PromotionRegistryHook(aws_conn_id=None)
    assert dev.group_policy(group) is None
    source = dev.describe_package(f"arn:aws:sagemaker:us-west-2:123456789012:model-package/{group}/1")
    assert source["ModelLifeCycle"]["StageStatus"] == "Approved" and "promoted_to" not in source["CustomerMetadataProperties"]


def test_the_form_and_the_spec_are_checked_naming_the_field(accounts):
    from airflow.sdk.exceptions import AirflowFailException

    from hybrid_mlops.promotion import plan
    from hybrid_mlops.specs.model import SpecError, parse_spec

    spec = accounts
    with pytest.raises(AirflowFailException, match=r"version='v1' must be 'latest-approved' or a version number"):
        plan(spec, "v1", "prod")
    with pytest.raises(AirflowFailException, match=r"stage='qa' must be one of"):
        plan(spec, "latest-approved", "qa")
    with pytest.raises(AirflowFailException, match=r"version=7: .* has no version 7"):
        plan(spec, "7", "prod")
    same = spec.model_copy(update={"promotion": spec.promotion.model_copy(update={"account_id": "123456789012"})})
    with pytest.raises(AirflowFailException, match=r"promotion.account_id='123456789012' is the account"):
        plan(same, "1", "prod")
    planned = plan(spec, "1", "staging")
    assert planned["version"] == 1 and planned["prod_package_arn"] is None
    assert planned["metrics"] == {"accuracy": "0.981000", "roc_auc": "0.970000"}
    assert "roc_auc 0.970000" in planned["summary"] and "staging / Approved" in planned["summary"]

    base = spec.model_dump(mode="json", by_alias=True)
    good = spec.promotion.model_dump(mode="json")
    cases = {
        "role_arn": ({"role_arn": "arn:aws:iam::111111111111:role/x"}, "is a role of account 111111111111"),
        "kms_key_arn": ({"kms_key_arn": f"arn:aws:kms:us-east-1:{PROD_ACCOUNT}:key/abc"}, "is in region us-east-1"),
        "account_id": ({"account_id": "12345"}, "should match pattern"),
        "stage": ({"stage": "qa"}, "Input should be 'staging' or 'prod'"),
    }
    for field, (change, message) in cases.items():
        with pytest.raises(SpecError, match=rf"promotion\.?.*{message}") as err:
            parse_spec({**base, "promotion": {**good, **change}}, "m.yaml")
        assert f"promotion.{field}" in str(err.value) or f"promotion: {field}" in str(err.value), str(err.value)


def test_a_retried_copy_keeps_what_is_there_and_replaces_what_differs(accounts):
    from hybrid_mlops.hooks.promotion import CopyFailed
    from hybrid_mlops.promotion import prod_s3

    spec = accounts
    hook, key = prod_s3(spec), spec.promotion.kms_key_arn
    source, target = f"s3://{DEV_BUCKET}/{PREFIX}model.tar.gz", f"s3://{PROD_BUCKET}/{PREFIX}model.tar.gz"
    owners = {"source_owner": "123456789012", "target_owner": PROD_ACCOUNT}
    assert hook.copy_verified(source, target, key, **owners)["copied"] is True
    assert hook.copy_verified(source, target, key, **owners)["copied"] is False  # same bytes, same key: kept
    s3 = _prod_session().client("s3")
    s3.put_object(Bucket=PROD_BUCKET, Key=PREFIX + "model.tar.gz", Body=b"something else")  # not the artifact
    assert hook.copy_verified(source, target, key, **owners)["copied"] is True
    assert s3.get_object(Bucket=PROD_BUCKET, Key=PREFIX + "model.tar.gz")["Body"].read() == FILES["model.tar.gz"]
    with pytest.raises(CopyFailed, match="missing.tar.gz does not exist"):
        hook.copy_verified(f"s3://{DEV_BUCKET}/{PREFIX}missing.tar.gz", target, key, **owners)
