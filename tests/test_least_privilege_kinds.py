"""Least privilege of the DAG kinds test_least_privilege.py does not run, on an IAM-enforcing moto server of
this module's own (the same :class:`Enforcing` machinery, the same checks): each recorded request's actions
are allowed by the real policy with its real ARNs, every action of the new statements serves a request,
and removing each new statement makes a replayed request fail (or, where moto evaluates nothing, leaves a
recorded request that only it allows).

The runs, as roles holding only ``hybrid_mlops.iam.policies``' documents:
- ``watch_fraud_detection`` reading an external Model Monitor schedule's output (another bucket);
- the SageMaker endpoint deploy on ``aws`` (create, the provider's trigger answered, the smoke test's
  InvokeEndpoint from moto's queue, autoscaling deregistered and registered again) and the blue/green
  ``UpdateEndpoint`` the operator sends (moto 5.2.5 has no UpdateEndpoint: it is sent once, authorized,
  and answered with moto's error);
- ``promote_fraud_detection``: the execution role assumes the prod account's promotion role (its own
  policy, :func:`prod_promotion_policy`, in that account) and copies with SSE-KMS under the prod key. moto
  has no Get/PutModelPackageGroupPolicy: the local mirror's requests are the ones the hook sends on
  ``aws``, so they are recorded as those;
- SageMaker's side of the monitor's SHAP Processing job and of the endpoint's capture: what SageMaker
  reads and writes as the execution role (the job's ``S3Input`` / ``S3Output``, the capture files),
  done here signed as that role (no SageMaker runs here);
- ``backup_ml_assets``: the backup bucket in another region, versioned, copies pinned to source versions;
  then ``restore_ml_assets`` of that snapshot into the backup's region as the execution role (the form's
  default bucket ``<bucket>-<region>``, the groups registered there). Not exercised: the delete of a
  restored copy whose checksum differs from the manifest's (``NOT_EXERCISED``).
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import boto3
import botocore.config
import botocore.exceptions
import pytest
import yaml

from hybrid_mlops.iam.policies import (Promotion, dev_grants_to_prod, mwaa_execution_policy, prod_promotion_policy,
                                       sagemaker_execution_policy)
from hybrid_mlops.local.moto import MotoServer
from test_least_privilege import (ACCOUNT, BUCKET, MIRROR, REGION, ROOT, SSE_KMS_BUCKETS, TRUST,
                                  UNVERIFIABLE_ON_MOTO, Enforcing, _needs, _post, allowed_and_used,
                                  allowing, assert_denied_without, deployment, moto_view)

PROD_ACCOUNT, PROD_REGION = "210987654321", "eu-west-1"
PROD_ROLE_NAME = "hybrid-mlops-promotion"
PROD_ROLE = f"arn:aws:iam::{PROD_ACCOUNT}:role/{PROD_ROLE_NAME}"
PROD_BUCKET = "hybrid-mlops-prod-models"
EXTERNAL = "s3://acme-model-monitor-output/fraud-endpoint/hourly-schedule/"
BACKUP_BUCKET, BACKUP_REGION = "hybrid-mlops-test-backup", "eu-central-1"
MODEL = "fraud-detection"
#: Actions no run here needs: the restore deletes a copy only when its checksum differs from the manifest's
#: (a corrupt backup), which these runs do not make.
NOT_EXERCISED = {("RestoreObjects", "s3:DeleteObject")}
#: moto authorizes a versioned read as s3:GetObject: a statement of only s3:GetObjectVersion is proven by the
#: recorded requests (they pin a version), not by a replay.
MOTO_EVALUATES_OTHERWISE = {"s3:GetObjectVersion"}
#: The statements each run here proves (the others are test_least_privilege.py's).
NEW_SIDS = {
    "mwaa": {"SageMakerEndpoints", "EndpointAlarms", "EndpointScaling", "EndpointScalingRead",
             "ScalingServiceLinkedRole", "ExternalReportsList", "ExternalReportsRead", "PromotionRole",
             "PromotionGroupPolicy", "BackupBucket", "BackupObjects", "BackupSourceVersions", "RegistryTags",
             "RestoreSource", "RestoreBuckets", "RestoreObjects", "RestoreRegistry"},
    "sagemaker": {"WindowAttributions", "EndpointCapture"},
    "prod": None,  # all of them
}


def _scoped(deploy, prod_key_arn: str):
    (fraud,) = [m for m in deploy.models if m.name == MODEL]
    fraud = dataclasses.replace(
        fraud, endpoint_regions=(REGION,), window_attributions=True, external_report_prefix=EXTERNAL,
        promotion=Promotion(PROD_ACCOUNT, PROD_REGION, PROD_ROLE, PROD_BUCKET, prod_key_arn, fraud.model_package_group))
    return dataclasses.replace(deploy, models=tuple(fraud if m.name == MODEL else m for m in deploy.models),
                               backup_bucket=BACKUP_BUCKET, backup_region=BACKUP_REGION)


POLICIES = {"mwaa": ("dags", mwaa_execution_policy), "sagemaker": ("training", sagemaker_execution_policy),
            "prod": ("promotion", prod_promotion_policy)}


@pytest.fixture(scope="module")
def proof(tmp_path_factory, airflow_db):
    server = MotoServer(log_path=tmp_path_factory.mktemp("moto-iam-kinds") / "moto.log").start()
    env = pytest.MonkeyPatch()
    for name, value in server.environ(REGION).items():
        env.setenv(name, value)
    enf = Enforcing(server, deployment())
    enf.record(env)
    try:
        _setup(enf, env, tmp_path_factory.mktemp("lp-kinds-models"))
        _run(enf, env)
        yield enf
    finally:
        SSE_KMS_BUCKETS.clear()
        env.undo()
        server.stop()


def _setup(enf: Enforcing, env: pytest.MonkeyPatch, models) -> None:
    """As the admin: the buckets, an Approved version with its files, the prod account's role, bucket and
    key, the external report; then the roles with the policies, and the DAGs' credentials."""
    from test_drift_watch import _sdk_violations
    from test_promote import FILES, PREFIX

    from hybrid_mlops.hooks.registry import ModelRegistryHook, model_life_cycle
    from hybrid_mlops.operators.registry import RegisterModelVersionOperator

    s3 = enf.admin("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})  # as infra deploys it
    ext_bucket, ext_prefix = EXTERNAL[5:].split("/", 1)
    s3.create_bucket(Bucket=ext_bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=ext_bucket, Key=f"{ext_prefix}2026/05/01/11/constraint_violations.json",
                  Body=json.dumps(_sdk_violations()))
    for name, body in FILES.items():
        s3.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=body)
    spec_doc = yaml.safe_load((ROOT / "include" / "models" / f"{MODEL}.yaml").read_text())
    group = spec_doc["registry"]["model_package_group"]
    uri = f"s3://{BUCKET}/{PREFIX}"
    op = RegisterModelVersionOperator(
        task_id="register", model_package_group=group, group_tags={"team": "risk-ml"}, description="job-a",
        model_data_url=uri + "model.tar.gz", inference_image="ghcr.io/hybrid-mlops/predictor:1",
        customer_metadata={"training_job": "job-a", "roc_auc": "0.970000"},
        model_metrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": uri + "evaluation.json"}}})
    op._persist_link = lambda context: None  # links persist through the task runner, absent here
    with env.context() as admin:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            admin.setenv(name, "testing")
        arn = op.execute({})["ModelPackageArn"]
        ModelRegistryHook(aws_conn_id=None).update_package(
            arn, status="Approved", reason="Approved by the rules", lifecycle=model_life_cycle("staging", "Approved", "ok"))

    # the prod account: its admin is the role itself before its policy is attached (moto maps the keys to it)
    creds = enf.admin("sts").assume_role(RoleArn=PROD_ROLE, RoleSessionName="prod-admin")["Credentials"]
    prod = boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                         aws_session_token=creds["SessionToken"], region_name=PROD_REGION)
    kw = {"endpoint_url": enf.server.url}
    prod.client("s3", **kw).create_bucket(Bucket=PROD_BUCKET, CreateBucketConfiguration={"LocationConstraint": PROD_REGION})
    key_arn = prod.client("kms", **kw).create_key(Description="prod models")["KeyMetadata"]["Arn"]
    # the dev artifacts bucket is SSE-KMS with its key (infra): reading it from prod needs kms:Decrypt on it
    SSE_KMS_BUCKETS[BUCKET] = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0a1b2c3d-0000-4000-8000-000000000001"
    enf.deploy = d = _scoped(enf.deploy, key_arn)

    spec_doc["promotion"] = {"account_id": PROD_ACCOUNT, "region": PROD_REGION, "role_arn": PROD_ROLE,
                             "bucket": PROD_BUCKET, "kms_key_arn": key_arn}
    spec_doc["drift"]["external_report_prefix"] = EXTERNAL
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(spec_doc))
    env.setenv("HYBRID_MLOPS_MODELS_DIR", str(models))

    enf.make_role("mwaa", "hybrid-mlops-mwaa-execution", {
        "dags": moto_view(mwaa_execution_policy(d)),
        "local-target": {"Version": "2012-10-17", "Statement": [{  # the local target's mirror (see the other file)
            "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": f"arn:aws:s3:::{BUCKET}/{MIRROR}*"}]}})
    enf.make_role("sagemaker", d.sagemaker_role_name, {"training": moto_view(sagemaker_execution_policy(d))})
    prod_iam = prod.client("iam", **kw)
    prod_iam.create_role(RoleName=PROD_ROLE_NAME, AssumeRolePolicyDocument=json.dumps(TRUST))
    prod_iam.put_role_policy(RoleName=PROD_ROLE_NAME, PolicyName="promotion",
                             PolicyDocument=json.dumps(moto_view(prod_promotion_policy(d))))
    enf.role_labels[PROD_ROLE] = "prod"
    enf.accounts["prod"] = PROD_ACCOUNT
    creds = enf.admin("sts").assume_role(RoleArn=PROD_ROLE, RoleSessionName="replays")["Credentials"]
    enf.principals[creds["AccessKeyId"]] = "prod"
    enf.credentials["prod"] = {"aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"],
                               "aws_session_token": creds["SessionToken"]}
    mwaa = enf.credentials["mwaa"]
    for name, value in {"AWS_ACCESS_KEY_ID": mwaa["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": mwaa["aws_secret_access_key"],
                        "AWS_SESSION_TOKEN": mwaa["aws_session_token"],
                        "HYBRID_MLOPS_SAGEMAKER_ROLE_ARN": d.sagemaker_role_arn,
                        "HYBRID_MLOPS_BACKUP_BUCKET": BACKUP_BUCKET, "HYBRID_MLOPS_BACKUP_REGION": BACKUP_REGION}.items():
        env.setenv(name, value)


def _run(enf: Enforcing, env: pytest.MonkeyPatch) -> None:
    from hybrid_mlops.factory import build_dags
    from hybrid_mlops.local.dag_runner import run_dag

    enf.enforce(True)
    enf.recording = True

    # watch_fraud_detection: the external schedule's report
    from test_drift_watch import HOUR, _serialize

    (watch,) = build_dags("watch").values()
    _serialize(watch)
    run = watch.test(logical_date=HOUR + timedelta(hours=1), run_after=HOUR + timedelta(hours=1))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and states["signal_drift"] == "success", states

    # promote_fraud_detection: approved, copied into prod as its role, registered there
    run = run_dag(build_dags("promote")[f"promote_{MODEL.replace('-', '_')}"], conf={"stage": "staging"},
                  hitl_choice="Approve", responder="release-manager")
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and states["record_promotion"] == "success", states

    _serve_on_sagemaker(enf, env)
    _sagemaker_side(enf)

    # backup_ml_assets: the backup bucket created in its region, versioned; the registry and the artifacts
    run = build_dags("backup_ml_assets")["backup_ml_assets"].test(
        logical_date=datetime(2026, 5, 2, 3, tzinfo=timezone.utc))
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    # the next run's first step finds the bucket and checks it is still versioned
    from hybrid_mlops.backup import _stores

    assert _stores(BACKUP_REGION).ensure_versioned_bucket(BACKUP_BUCKET, BACKUP_REGION) == "verified"
    # restore_ml_assets: the snapshot rebuilt in the backup's region (the artifacts' region "lost"); a rerun's
    # plan finds the bucket it tagged (and continues there)
    run = run_dag(build_dags("restore_ml_assets")["restore_ml_assets"],
                  conf={"snapshot_id": "latest", "target_region": BACKUP_REGION, "dry_run": False})
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    from hybrid_mlops.backup import RESTORE_TAG

    assert RESTORE_TAG in _stores(BACKUP_REGION).bucket_tags(f"{BUCKET}-{BACKUP_REGION}")
    enf.recording = False
    enf.enforce(False)
    _as_requests_sent_on_aws(enf)


def _serve_on_sagemaker(enf: Enforcing, env: pytest.MonkeyPatch) -> None:
    """The endpoint deploy on ``aws``, as test_sagemaker_serving.py drives it, then its blue/green update."""
    from serving_helpers import fraud_smoke_sample
    from test_sagemaker_serving import IMAGE

    from hybrid_mlops.operators.sagemaker_endpoint import DeploySageMakerEndpointOperator
    from hybrid_mlops.serving import sagemaker as s
    from hybrid_mlops.specs.model import ServingSpec

    d = enf.deploy
    group = next(m.model_package_group for m in d.models if m.name == MODEL)
    with env.context() as aws:
        aws.setenv("HYBRID_MLOPS_TARGET", "aws")
        serving = ServingSpec(target="sagemaker", regions=[REGION], sagemaker={"image": IMAGE}).model_dump(mode="json")
        package = {"version": 1, "package_arn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{group}/1",
                   "storage_uri": f"s3://{BUCKET}/models/{MODEL}/job-a/output/model.tar.gz",
                   "smoke_sample": fraud_smoke_sample(4)}
        op = DeploySageMakerEndpointOperator(task_id="deploy_sagemaker", model_name=MODEL, serving=serving,
                                             package=package, region=REGION, id_column="transaction_id",
                                             extra_tags={"model": MODEL, "project": "hybrid-mlops"})
        from airflow.sdk.exceptions import TaskDeferred

        with pytest.raises(TaskDeferred) as deferred:
            op.execute({})
        enf.enforce(False)
        _post(f"{enf.server.url}/moto-api/static/sagemaker/endpoint-results", json.dumps({"region": REGION, "results": [
            {"Body": json.dumps({"outputs": [{"name": "probability", "shape": [4], "datatype": "FP32",
                                              "data": [0.1, 0.2, 0.3, 0.4]}]}), "ContentType": "application/json"}]}))
        enf.enforce(True)
        result = op.execute_complete({}, {"status": "success"}, **deferred.value.kwargs)
        assert result["outcome"] == "deployed", result
        live = enf.client("mwaa", "sagemaker").describe_endpoint(EndpointName=MODEL)["EndpointConfigName"]
        bigger = ServingSpec(target="sagemaker", regions=[REGION],
                             sagemaker={"image": IMAGE, "instance_type": "ml.c5.2xlarge"}).sagemaker
        config = s.endpoint_config_request(MODEL, 2, f"{MODEL}-v1", bigger, bucket=BUCKET, instance_count=2, cost_tags={})
        op._prepare_scaling_for(live, config)  # an instance type change deregisters autoscaling first
        op._ensure_scaling()
        # the update itself: the request the operator sends on aws (moto 5.2.5 answers it with an error)
        enf.client("mwaa", "sagemaker").create_endpoint_config(**config)
        update = {"EndpointName": MODEL, "EndpointConfigName": config["EndpointConfigName"],
                  "RetainAllVariantProperties": False,
                  "DeploymentConfig": s.deployment_config(MODEL, bigger, canary_percent=10, instance_count=2, canary=True)}
        sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=enf.server.url,
                          config=botocore.config.Config(retries={"total_max_attempts": 1}), **enf.credentials["mwaa"])
        with pytest.raises(botocore.exceptions.ClientError) as answered:
            sm.update_endpoint(**update)
        assert answered.value.response["Error"]["Code"] not in ("AccessDenied", "AccessDeniedException"), answered.value


def _sagemaker_side(enf: Enforcing) -> None:
    """What SageMaker does as the execution role: the SHAP Processing job's I/O (its ``S3Input`` rows
    downloaded, its ``S3Output`` analysis uploaded) and the endpoint's capture files."""
    from test_promote import PREFIX

    from hybrid_mlops import layout

    hour = "2026/05/01/10"
    base = layout.monitoring_prefix(MODEL, datetime(2026, 5, 1, 10, tzinfo=timezone.utc)) + "feature-attribution/"
    enf.enforce(False)
    enf.admin("s3").put_object(Bucket=BUCKET, Key=base + "input/rows.json", Body=b'{"rows": []}')  # attribution_inputs
    enf.enforce(True)
    s3 = enf.client("sagemaker", "s3")
    for key in (PREFIX + "model.tar.gz", base + "input/rows.json"):  # the job's S3Inputs: the model, the rows
        s3.get_object(Bucket=BUCKET, Key=key)
    s3.put_object(Bucket=BUCKET, Key=base + "output/analysis.json", Body=b"{}")  # its S3Output
    s3.put_object(Bucket=BUCKET, Key=f"capture-sagemaker/{MODEL}/{MODEL}/AllTraffic/{hour}/00-00-000-0.jsonl", Body=b"{}")
    s3.put_object(Bucket=BUCKET, Key=f"capture/{MODEL}/{hour}/00-00-000-0.jsonl", Body=b"{}")


def _as_requests_sent_on_aws(enf: Enforcing) -> None:
    """The local mirror's group-policy requests are the sagemaker requests the hook sends on aws."""
    from hybrid_mlops.hooks.promotion import POLICY_MIRROR_PREFIX

    for c in enf.calls:
        key = c["params"].get("Key", "") if c["service"] == "s3" else ""
        if not key.startswith(POLICY_MIRROR_PREFIX):
            continue
        group = key.rsplit("/", 1)[1].removesuffix(".json")
        c["service"] = "sagemaker"
        if c["op"] == "PutObject":
            body = c["params"]["Body"]  # botocore wraps the bytes it sent
            c["op"], c["params"] = "PutModelPackageGroupPolicy", json.loads(getattr(body, "getvalue", lambda: body)())
        else:
            c["op"], c["params"] = "GetModelPackageGroupPolicy", {"ModelPackageGroupName": group}


def _sids(label: str, policy: dict) -> list[dict]:
    wanted = NEW_SIDS[label]
    return [st for st in policy["Statement"] if wanted is None or st["Sid"] in wanted]


def test_the_kinds_ran_as_the_roles(proof):
    by = defaultdict(set)
    for c in proof.calls:
        by[c["principal"]].add(f"{c['service']}:{c['op']}")
    assert {"sts:AssumeRole", "sagemaker:PutModelPackageGroupPolicy", "sagemaker:CreateEndpoint",
            "sagemaker-runtime:InvokeEndpoint", "application-autoscaling:RegisterScalableTarget",
            "cloudwatch:PutMetricAlarm", "s3:CopyObject", "s3:CreateBucket"} <= by["mwaa"], by["mwaa"]
    assert {"s3:CopyObject", "sagemaker:CreateModelPackage"} <= by["prod"], by["prod"]


@pytest.mark.parametrize("label", sorted(POLICIES))
def test_every_request_is_allowed_and_every_new_action_is_needed(proof, label):
    policy = POLICIES[label][1](proof.deploy)
    used = allowed_and_used(policy, _needs(proof)[label], label)
    unused = [(st["Sid"], a) for st in _sids(label, policy) for a in st["Action"]
              if (st["Sid"], a) not in used | NOT_EXERCISED]
    assert not unused, f"actions no request of the runs needs: {unused}"
    for st in policy["Statement"]:
        for resource in st["Resource"]:
            assert resource == "*" or ACCOUNT in resource or PROD_ACCOUNT in resource \
                or resource.startswith("arn:aws:s3:::"), resource


@pytest.mark.parametrize("label", sorted(POLICIES))
def test_removing_any_new_statement_denies_something_the_runs_did(proof, label):
    policy_name, build = POLICIES[label]
    policy = build(proof.deploy)
    needs = _needs(proof)[label]
    if label == "prod":
        creds = proof.admin("sts").assume_role(RoleArn=PROD_ROLE, RoleSessionName="policy-edits")["Credentials"]
        iam = boto3.client("iam", region_name=REGION, endpoint_url=proof.server.url,
                           aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                           aws_session_token=creds["SessionToken"])
        role = PROD_ROLE_NAME
    else:
        iam = proof.admin("iam")
        role = "hybrid-mlops-mwaa-execution" if label == "mwaa" else proof.deploy.sagemaker_role_name
    try:
        for st in _sids(label, policy):
            reduced = {**policy, "Statement": [s for s in policy["Statement"] if s is not st]}
            only_this = [(c, a, r, direct) for c, a, r, direct in needs if st["Sid"] in allowing(policy, a, r)
                         and not allowing(reduced, a, r)]
            assert only_this, f"{label}: nothing the runs did needs {st['Sid']} alone"
            seen_by_moto = moto_view(reduced)  # moto: non-S3 actions on "*", so another statement's same action allows
            replays = {id(c): c for c, a, _, direct in only_this if direct and c["service"] not in UNVERIFIABLE_ON_MOTO
                       and a not in MOTO_EVALUATES_OTHERWISE
                       and (c["service"] == "s3" or not allowing(seen_by_moto, a, "*"))}
            if not replays:
                continue  # moto cannot tell (PassRole, KMS, versions, the restore region's ARNs ...): the proof above is all
            assert_denied_without(proof, label, iam, role, policy_name, reduced, replays.values(), st["Sid"])
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(moto_view(policy)))


def test_the_dev_grants_name_the_promotion_role_and_the_promoted_models_only(proof):
    """The dev bucket's and key's grants to the prod role match what the prod role's policy reads."""
    grants = dev_grants_to_prod(proof.deploy)
    (bucket,) = grants["bucket_policy"]
    (key,) = grants["key_policy"]
    assert bucket["Principal"] == key["Principal"] == {"AWS": [PROD_ROLE]}
    prod = {st["Sid"]: st for st in prod_promotion_policy(proof.deploy)["Statement"]}
    assert (bucket["Action"], bucket["Resource"]) == (prod["DevModelsRead"]["Action"], prod["DevModelsRead"]["Resource"])
    assert key["Action"] == prod["DevKeyDecrypt"]["Action"] == ["kms:Decrypt"]
    assert key["Condition"] == prod["DevKeyDecrypt"]["Condition"]
