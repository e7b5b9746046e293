"""Least privilege, proven on a moto server that enforces IAM: the DAGs run as roles holding only
the project's policies (``hybrid_mlops.iam.policies``, the documents ``infra/`` deploys), and every
statement of those policies is needed by something the run did.

How moto 5.2.5 enforces (``moto/core/authorization.py``, ``moto/iam/access_control.py``): once
``INITIAL_NO_AUTH_ACTION_COUNT`` requests have been served (switched here through the server's
``/moto-api/reset-auth``, which sets that same setting), every request's signature is checked and its
action is evaluated against the caller's policies. S3 evaluates bucket and object ARNs; every other
service evaluates the action against the resource ``"*"`` only, and statement conditions never
match. moto also names HEAD on a bucket ``s3:HeadBucket`` (IAM: ``s3:ListBucket``). So the roles on
moto hold :func:`moto_view` of the policies: S3 statements as they are, other statements' actions on
``"*"``, that alias added. What moto cannot check (resource ARNs outside S3, conditions, EKS and
CloudWatch requests, whose signatures it cannot verify, ``iam:PassRole``, the ``sagemaker:AddTags`` / ``sns:TagResource`` a create with tags needs,
what Athena does as the caller in Glue and S3) is checked against the recorded requests with the real
ARNs: every action a recorded request needs is allowed by the real policy, and every action of every
statement is needed by one.

The runs: ``retrain_fraud_detection`` with deploy and ``batch_score_fraud_detection`` on the ``local``
target (the stand-ins of the training, Processing and Batch Transform jobs run as the SageMaker execution
role, as the jobs do on AWS), ``monitor_fraud_detection`` and
``cost_report`` on the ``aws`` target (Athena and Cost Explorer answer with queued results, as in
test_monitor_athena.py and test_cost_split.py), and the deploy's ``DescribeCluster`` of every serving
region's cluster. moto cannot verify the signatures of EKS and CloudWatch requests (``UNVERIFIABLE_ON_MOTO``):
those go out with the checks off and are proven against the recorded requests only. Then each statement is removed in turn and the recorded requests it covers are
replayed, signed with the reduced policy: at least one is denied. The newer kinds (promotion, watch, the
SageMaker endpoint, backup and restore) are proven the same way in test_least_privilege_kinds.py, with the
helpers here.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.parse
import urllib.request
from collections import defaultdict
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import boto3
import botocore.client
import botocore.exceptions
import pytest

from hybrid_mlops.iam.policies import Deployment, ModelScope, mwaa_execution_policy, sagemaker_execution_policy
from hybrid_mlops.local.moto import MotoServer

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT, REGION, BUCKET = "123456789012", "us-west-2", os.environ["HYBRID_MLOPS_BUCKET"]
MONITOR_WORKGROUP, COST_WORKGROUP = "hybrid-mlops-monitor", "hybrid-mlops-cost"
ATHENA_DATABASE, CUR_DATABASE, CUR_TABLE, CUR_BUCKET = "hybrid_mlops", "billing", "cur2_hourly", "acme-cur-export"
MIRROR = "local-registry-mirror/"  # the local target's ModelLifeCycle mirror: no such object on aws
#: Services whose signed requests moto 5.2.5 cannot verify when enforcing (SignatureDoesNotMatch on every EKS
#: request, and on CloudWatch's CBOR bodies): sent with the checks off, recorded, proven against the policy
#: with their real ARNs only, never replayed.
UNVERIFIABLE_ON_MOTO = {"eks", "cloudwatch"}
#: moto's names for IAM actions (see the module docstring).
MOTO_ALIASES = {"s3:ListBucket": ["s3:HeadBucket"]}
TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}


def deployment() -> Deployment:
    from hybrid_mlops.specs import load_spec

    specs = [load_spec(p) for p in sorted((ROOT / "include" / "models").glob("*.yaml"))]
    clusters = sorted({(r, s.serving.cluster_name.format(region=r)) for s in specs for r in s.serving.regions})
    return Deployment(
        account=ACCOUNT, region=REGION, bucket=BUCKET, sagemaker_role_name="hybrid-mlops-sagemaker-execution",
        models=tuple(ModelScope(s.name, s.registry.model_package_group) for s in specs), clusters=tuple(clusters),
        athena_workgroups=(MONITOR_WORKGROUP, COST_WORKGROUP), athena_database=ATHENA_DATABASE,
        cur_database=CUR_DATABASE, cur_table=CUR_TABLE, cur_bucket=CUR_BUCKET)


def moto_view(policy: dict) -> dict:
    """The statements as moto can evaluate them: S3 as is; other actions on "*", no conditions; moto's aliases."""
    out = []
    for st in policy["Statement"]:
        actions = [a for action in st["Action"] for a in [action, *MOTO_ALIASES.get(action, [])]]
        s3 = all(a.startswith("s3:") for a in actions)
        out.append({"Sid": st["Sid"], "Effect": "Allow", "Action": actions,
                    "Resource": st["Resource"] if s3 else "*"})
    return {"Version": "2012-10-17", "Statement": out}


# -- the IAM actions and ARNs a recorded request needs (Service Authorization Reference) ---------------------

def _s3_arn(bucket: str, key: str | None = None) -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")


S3_ACTIONS = {"HeadBucket": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket",
              "HeadObject": "s3:GetObject", "GetObject": "s3:GetObject", "PutObject": "s3:PutObject",
              "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
              "CompleteMultipartUpload": "s3:PutObject", "DeleteObject": "s3:DeleteObject"}


def needed(call: dict, workgroup_of: dict) -> list[tuple[str, str]]:
    """``(action, resource ARN)`` pairs AWS authorizes for one recorded request."""
    service, op, p, region = call["service"], call["op"], call["params"], call["region"]

    def arn(svc, res):
        return f"arn:aws:{svc}:{region}:{call.get('account', ACCOUNT)}:{res}"

    if service == "s3":
        if op in S3_BUCKET_ACTIONS:
            return [(f"s3:{S3_BUCKET_ACTIONS[op]}", _s3_arn(p["Bucket"]))]
        if op == "CopyObject":  # the target written, the source (its pinned version) read
            source, _, version = p["CopySource"].partition("?versionId=")
            src_bucket, _, src_key = urllib.parse.unquote(source).partition("/")
            out = [("s3:PutObject", _s3_arn(p["Bucket"], p["Key"])),
                   ("s3:GetObjectVersion" if version else "s3:GetObject", _s3_arn(src_bucket, src_key))]
            if p.get("SSEKMSKeyId"):  # SSE-KMS with that key: S3 asks KMS for a data key as the caller
                out.append(("kms:GenerateDataKey", p["SSEKMSKeyId"]))
            return out + kms_via_s3(call, src_bucket)
        if S3_ACTIONS[op] == "s3:ListBucket":
            return [("s3:ListBucket", _s3_arn(p["Bucket"]))]
        action = "s3:GetObjectVersion" if p.get("VersionId") and S3_ACTIONS[op] == "s3:GetObject" else S3_ACTIONS[op]
        # S3 answers a missing key 404 only to a caller allowed s3:ListBucket (else 403, which no caller reads as
        # "not there")
        missing = [("s3:ListBucket", _s3_arn(p["Bucket"]))] if call.get("error") in ("404", "NoSuchKey") else []
        return [(action, _s3_arn(p["Bucket"], p["Key"]))] + missing + (
            kms_via_s3(call, p["Bucket"]) if action != "s3:PutObject" else [])
    if service == "sts":
        return [(f"sts:{op}", p["RoleArn"])]
    if service == "sagemaker-runtime":
        return [(f"sagemaker:{op}", arn("sagemaker", f"endpoint/{p['EndpointName'].lower()}"))]
    if service == "application-autoscaling":
        if op.startswith("Describe"):  # no resource types
            return [(f"application-autoscaling:{op}", "*")]
        # a scalable target's ARN ends in an id AWS generates
        out = [(f"application-autoscaling:{op}", arn("application-autoscaling", "scalable-target/0123456789abcdef"))]
        if op == "RegisterScalableTarget":  # its first call creates the service-linked role as the caller
            out.append(("iam:CreateServiceLinkedRole", f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/"
                        "sagemaker.application-autoscaling.amazonaws.com/"
                        "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"))
        return out
    if service == "sagemaker":
        if op == "ListTags":
            return [(f"sagemaker:{op}", p["ResourceArn"].lower())]
        if op.startswith("List"):  # no resource types
            return [(f"sagemaker:{op}", "*")]
        if op in ("CreateEndpoint", "UpdateEndpoint"):  # the endpoint and the config it is given
            res = arn("sagemaker", f"endpoint/{p['EndpointName'].lower()}")
            return ([(f"sagemaker:{op}", res),
                     (f"sagemaker:{op}", arn("sagemaker", f"endpoint-config/{p['EndpointConfigName'].lower()}"))]
                    + ([("sagemaker:AddTags", res)] if p.get("Tags") else []))
        if "TrainingJobName" in p:
            res = arn("sagemaker", f"training-job/{p['TrainingJobName'].lower()}")
        elif "ProcessingJobName" in p:
            res = arn("sagemaker", f"processing-job/{p['ProcessingJobName'].lower()}")
        elif "TransformJobName" in p:
            res = arn("sagemaker", f"transform-job/{p['TransformJobName'].lower()}")
        elif "EndpointConfigName" in p:
            res = arn("sagemaker", f"endpoint-config/{p['EndpointConfigName'].lower()}")
        elif "EndpointName" in p:
            res = arn("sagemaker", f"endpoint/{p['EndpointName'].lower()}")
        elif "ModelName" in p:
            res = arn("sagemaker", f"model/{p['ModelName'].lower()}")
        elif op == "CreateModelPackage":
            res = arn("sagemaker", f"model-package/{p['ModelPackageGroupName'].lower()}/*")
        elif "ModelPackageName" in p or "ModelPackageArn" in p:
            res = (p.get("ModelPackageName") or p["ModelPackageArn"]).lower()
        else:
            res = arn("sagemaker", f"model-package-group/{p['ModelPackageGroupName'].lower()}")
        out = [(f"sagemaker:{op}", res)]
        if p.get("Tags"):
            out.append(("sagemaker:AddTags", res))
        if "RoleArn" in p or "ExecutionRoleArn" in p:  # CreateTrainingJob, CreateProcessingJob, CreateModel
            out.append(("iam:PassRole", p.get("RoleArn") or p["ExecutionRoleArn"]))
        return out
    if service == "sns":
        topic = p.get("TopicArn") or p.get("TargetArn") or arn("sns", p["Name"])
        return [(f"sns:{op}", topic)] + ([("sns:TagResource", topic)] if p.get("Tags") else [])
    if service == "eks":
        return [(f"eks:{op}", arn("eks", f"cluster/{p['name']}"))]
    if service == "athena":
        workgroup = p.get("WorkGroup") or workgroup_of[p["QueryExecutionId"]]
        out = [(f"athena:{op}", arn("athena", f"workgroup/{workgroup}"))]
        if op == "StartQueryExecution":  # Athena reads the catalog, the data and writes results as the caller
            database = p.get("QueryExecutionContext", {}).get("Database")  # else the query names it
            out += [("glue:GetDatabase", arn("glue", "catalog"))]
            for name in set(re.findall(r"(?:FROM|TABLE(?: IF NOT EXISTS)?)\s+([`\"\w.]+)", p["QueryString"], re.I)):
                *qualifier, table = name.replace("`", "").replace('"', "").split(".")
                db = qualifier[-1] if qualifier else database
                out += [("glue:GetDatabase", arn("glue", f"database/{db}")),
                        ("glue:GetTable", arn("glue", f"table/{db}/{table}"))]
                if p["QueryString"].lstrip().upper().startswith("CREATE"):
                    out += [("glue:CreateTable", arn("glue", f"table/{db}/{table}"))]
            for bucket, prefix in re.findall(r"s3://([^/'\s]+)/([^'\s]*)", p["QueryString"]):
                out += [("s3:ListBucket", _s3_arn(bucket)), ("s3:GetObject", _s3_arn(bucket, prefix + "x"))]
            if table_is_cur(p["QueryString"]):
                out += [("s3:ListBucket", _s3_arn(CUR_BUCKET)), ("s3:GetObject", _s3_arn(CUR_BUCKET, "data/x"))]
            location = (p.get("ResultConfiguration") or {}).get("OutputLocation") or workgroup_of.get(("out", workgroup))
            if location:
                bucket, _, prefix = location[5:].partition("/")
                out += [("s3:GetBucketLocation", _s3_arn(bucket)), ("s3:PutObject", _s3_arn(bucket, prefix + "x"))]
        if op == "GetQueryResults":  # results are read from the output location as the caller
            bucket, _, key = workgroup_of[("result", p["QueryExecutionId"])][5:].partition("/")
            out += [("s3:GetObject", _s3_arn(bucket, key))]
        return out
    if service == "ce":
        return [(f"ce:{op}", "*")]
    if service == "cloudwatch":
        if op == "PutMetricAlarm":  # an alarm created with tags needs cloudwatch:TagResource
            alarm = arn("cloudwatch", f"alarm:{p['AlarmName']}")
            return [(f"cloudwatch:{op}", alarm)] + ([("cloudwatch:TagResource", alarm)] if p.get("Tags") else [])
        return [(f"cloudwatch:{op}", "*")]
    raise AssertionError(f"no IAM mapping for {service}.{op}: add it to needed()")


#: S3 requests on a bucket (not an object) and the IAM action each needs.
S3_BUCKET_ACTIONS = {"CreateBucket": "CreateBucket", "GetBucketLocation": "GetBucketLocation",
                     "GetBucketVersioning": "GetBucketVersioning", "PutBucketVersioning": "PutBucketVersioning",
                     "GetBucketTagging": "GetBucketTagging", "PutBucketTagging": "PutBucketTagging"}
#: Buckets whose objects are SSE-KMS with a key another account's principal must be allowed to decrypt
#: through S3 (bucket -> key ARN); set by the tests that read across accounts.
SSE_KMS_BUCKETS: dict[str, str] = {}


def kms_via_s3(call: dict, bucket: str) -> list[tuple[str, str]]:
    """Reading an SSE-KMS object of another account's bucket: ``kms:Decrypt`` on its key, as the caller
    (in the key's own account the key policy grants it to the project's roles)."""
    key = SSE_KMS_BUCKETS.get(bucket)
    return [("kms:Decrypt", key)] if key and key.split(":")[4] != call.get("account", ACCOUNT) else []


def table_is_cur(query: str) -> bool:
    return re.search(rf"\b{CUR_TABLE}\b", query) is not None


def _match(pattern: str, value: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), value) is not None


def allowing(policy: dict, action: str, resource: str) -> list[str]:
    """Sids of the statements allowing ``action`` on ``resource`` (``"*"`` resource: only a ``"*"`` statement)."""
    return [st["Sid"] for st in policy["Statement"]
            if any(_match(a, action) for a in st["Action"])
            and any(r == "*" or (resource != "*" and _match(r, resource)) for r in st["Resource"])]


# -- the enforcing server and the principals --------------------------------------------------------------

def _post(url: str, body: bytes | str, content_type: str = "application/json") -> None:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type})
    urllib.request.urlopen(req, timeout=10).read()


def _kept(response: dict) -> dict:
    """What :func:`needed` reads from a response: Athena's query id and result location."""
    kept = {k: v for k, v in response.items() if k == "QueryExecutionId"}
    location = response.get("QueryExecution", {}).get("ResultConfiguration", {}).get("OutputLocation")
    return {**kept, "OutputLocation": location} if location else kept


class Enforcing:
    """A moto server of its own (enforcement would break every other test's server), its roles and credentials."""

    def __init__(self, server: MotoServer, deploy: Deployment):
        self.server, self.deploy = server, deploy
        self.calls: list[dict] = []
        self.principals: dict[str, str] = {}   # access key -> role label
        self.credentials: dict[str, dict] = {}
        self.recording = False
        self.enforcing = False
        self.role_labels: dict[str, str] = {}  # role ARN -> label of the credentials AssumeRole returns
        self.accounts: dict[str, str] = {}     # label -> its account, when not ACCOUNT

    def enforce(self, on: bool) -> None:
        """``INITIAL_NO_AUTH_ACTION_COUNT``: 0 checks every request from now on; infinity checks none."""
        _post(f"{self.server.url}/moto-api/reset-auth", "0" if on else "inf", "text/plain")
        self.enforcing = on

    def admin(self, service: str, region: str = REGION):
        return boto3.client(service, region_name=region, endpoint_url=self.server.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def make_role(self, label: str, name: str, policies: dict[str, dict]) -> None:
        iam = self.admin("iam")
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
        for policy_name, doc in policies.items():
            iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(doc))
        creds = self.admin("sts").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}",
                                              RoleSessionName=label)["Credentials"]
        self.principals[creds["AccessKeyId"]] = label
        self.credentials[label] = {"aws_access_key_id": creds["AccessKeyId"],
                                   "aws_secret_access_key": creds["SecretAccessKey"],
                                   "aws_session_token": creds["SessionToken"]}

    def record(self, env: pytest.MonkeyPatch) -> None:
        """Record every request a principal of :attr:`principals` sends while :attr:`recording` (answered or
        not: a "not found" is an answer too); the credentials ``sts:AssumeRole`` returns for a role of
        :attr:`role_labels` become that label's (the provider's session factory assumes it)."""
        original = botocore.client.BaseClient._make_api_call

        def recording(client, op, params):
            creds = client._request_signer._credentials
            label = self.principals.get(getattr(creds, "access_key", None))
            call = {"principal": label, "service": client.meta.service_model.service_name, "op": op,
                    "region": client.meta.region_name, "params": params, "response": {},
                    "account": self.accounts.get(label, ACCOUNT)}
            if self.recording and label:
                self.calls.append(call)
            unverifiable = self.enforcing and call["service"] in UNVERIFIABLE_ON_MOTO
            if unverifiable:  # recorded, proven against the policy, but not sent to moto's checks
                self.enforce(False)
            try:
                response = original(client, op, params)
            except botocore.exceptions.ClientError as err:
                call["error"] = err.response["Error"]["Code"]
                raise
            finally:
                if unverifiable:
                    self.enforce(True)
            call["response"] = _kept(response)
            if op == "AssumeRole" and params["RoleArn"] in self.role_labels:
                assumed = self.role_labels[params["RoleArn"]]
                self.principals[response["Credentials"]["AccessKeyId"]] = assumed
            return response

        env.setattr(botocore.client.BaseClient, "_make_api_call", recording)

    def client(self, label: str, service: str, region: str = REGION):
        return boto3.client(service, region_name=region, endpoint_url=self.server.url, **self.credentials[label])


@pytest.fixture(scope="module")
def proof(tmp_path_factory, airflow_db):
    """Runs the DAGs as the roles on the enforcing server; yields it with the recorded requests."""
    from hybrid_mlops.local.serving import LocalServing

    deploy = deployment()
    server = MotoServer(log_path=tmp_path_factory.mktemp("moto-iam") / "moto.log").start()
    env = pytest.MonkeyPatch()
    for name, value in server.environ(REGION).items():
        env.setenv(name, value)
    enf = Enforcing(server, deploy)
    enf.record(env)
    try:
        _setup_and_run(enf, env, LocalServing)
        yield enf
    finally:
        LocalServing("fraud-detection").stop()
        env.undo()
        server.stop()


def _setup_and_run(enf: Enforcing, env: pytest.MonkeyPatch, LocalServing) -> None:  # noqa: N803
    from hybrid_mlops.factory import build_dags
    from hybrid_mlops.local.dag_runner import run_dag

    d = enf.deploy
    enf.admin("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    from test_sagemaker_serving import _jsonl, _rows

    enf.admin("s3").put_object(Bucket=BUCKET, Key="batch-input/fraud-detection/part-0.jsonl",  # what batch_score scores
                               Body=_jsonl(_rows(200, seed=5), 0, 200))
    for workgroup in (MONITOR_WORKGROUP, COST_WORKGROUP):
        enf.admin("athena").create_work_group(Name=workgroup, Configuration={
            "ResultConfiguration": {"OutputLocation": f"s3://{BUCKET}/athena-results/"}})
    for region, cluster in d.clusters:
        enf.admin("eks", region).create_cluster(name=cluster, roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks-cluster",
                                                resourcesVpcConfig={"subnetIds": ["subnet-0123456789abcdef0"]})
    enf.make_role("mwaa", "hybrid-mlops-mwaa-execution", {
        "dags": moto_view(mwaa_execution_policy(d)),
        # the local target's own stand-ins (no such calls on aws): its ModelLifeCycle mirror
        "local-target": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": f"arn:aws:s3:::{BUCKET}/{MIRROR}*"}]}})
    enf.make_role("sagemaker", d.sagemaker_role_name, {"training": moto_view(sagemaker_execution_policy(d))})
    mwaa = enf.credentials["mwaa"]
    for name, value in {"AWS_ACCESS_KEY_ID": mwaa["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": mwaa["aws_secret_access_key"],
                        "AWS_SESSION_TOKEN": mwaa["aws_session_token"], "HYBRID_MLOPS_CAPTURE_FLUSH_SECONDS": "3600",
                        "HYBRID_MLOPS_SAGEMAKER_ROLE_ARN": d.sagemaker_role_arn}.items():
        env.setenv(name, value)
    # No SageMaker here runs the jobs: the local stand-ins do their S3 work as the jobs' role, as on AWS.
    env.setattr("hybrid_mlops.operators.sagemaker._s3_client", lambda operator: enf.client("sagemaker", "s3"))
    import importlib.util

    if importlib.util.find_spec("hybrid_mlops.local.processing"):  # the Processing job's stand-in
        from hybrid_mlops.local import processing

        run_processing_job = processing.run_processing_job
        env.setattr(processing, "run_processing_job",
                    lambda config, s3_client, **kw: run_processing_job(config, enf.client("sagemaker", "s3"), **kw))

    enf.enforce(True)
    enf.recording = True
    run = run_dag(build_dags("retrain")["retrain_fraud_detection"],
                  conf={"epochs": 3, "rows": 30000, "deploy": True}, hitl_choice="Approve to staging")
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and states["serve_locally"] == "success", f"nothing was deployed: {states}"
    # batch_score_fraud_detection: Batch Transform of a prefix with the approved version (the stand-in scores
    # with the project's predictor, reading and writing as the job's role).
    from hybrid_mlops.local import batch

    def sagemaker_fetch(uri: str, path) -> None:
        bucket, _, key = uri[5:].partition("/")
        enf.client("sagemaker", "s3").download_file(bucket, key, str(path))

    run_transform_job = batch.run_transform_job
    env.setattr(batch, "run_transform_job", lambda model, transform, s3, *, fetch, **kw: run_transform_job(
        model, transform, enf.client("sagemaker", "s3"), fetch=sagemaker_fetch, **kw))
    run = build_dags("batch_score")["batch_score_fraud_detection"].test(run_conf={
        "input_uri": f"s3://{BUCKET}/batch-input/fraud-detection/", "content_type": "application/jsonlines"})
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}

    # The deploy on aws describes each serving region's cluster for its kube config.
    from hybrid_mlops.hooks.kserve import eks_kube_config

    for region, cluster in d.clusters:
        eks_kube_config(cluster, region, "aws_default")

    # monitor_fraud_detection on aws: the hour's capture (put by the logger service) and Athena's answers
    from test_monitor_athena import _athena_rows, _queue_results, _result
    from test_monitor_dag import HOUR, _put_capture

    from hybrid_mlops.data.generator import DriftKnobs, generate
    from hybrid_mlops.data.sources import schema_document
    from hybrid_mlops.specs import load_spec

    enf.enforce(False)
    spec = load_spec(ROOT / "include" / "models" / "fraud-detection.yaml")
    schema = schema_document(spec)
    numeric, categorical, id_column = schema["numeric"], schema["categorical"], schema["id"]
    window = generate(2000, seed=31, drift=DriftKnobs(shift={"amount": 0.6}))
    enf.recording = False
    with env.context() as admin_env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            admin_env.setenv(name, "testing")
        _put_capture(window)
    features = [*numeric, *categorical, id_column]
    # The spec without drift.feature_attribution: on aws its SHAP is a Processing job, which moto completes
    # without running (no analysis.json to read). Its Processing job's calls are the retrain's baseline job's.
    import yaml

    models = Path(tempfile.mkdtemp(prefix="lp-models-"))
    for path in (ROOT / "include" / "models").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        doc.get("drift", {}).pop("feature_attribution", None)
        (models / path.name).write_text(yaml.safe_dump(doc))
    env.setenv("HYBRID_MLOPS_MODELS_DIR", str(models))
    (monitor,) = [dag for dag in build_dags("monitor").values() if dag.dag_id == "monitor_fraud_detection"]
    readers = [t for t in monitor.tasks if hasattr(t, "_read_window")]  # each reads the hour through Athena
    _queue_results(enf.server, [
        {"rows": [], "column_info": []},
        _result(["files", "lines", "malformed", *(f"present_{i}" for i in range(len(features)))],
                [["1", "40", "0", *(["40"] * len(features))]]),
        _athena_rows(window, numeric, categorical, id_column)] * len(readers))
    for name, value in {"HYBRID_MLOPS_TARGET": "aws", "HYBRID_MLOPS_ATHENA_DATABASE": ATHENA_DATABASE,
                        "HYBRID_MLOPS_ATHENA_WORKGROUP": MONITOR_WORKGROUP, "HYBRID_MLOPS_CUR_DATABASE": CUR_DATABASE,
                        "HYBRID_MLOPS_CUR_TABLE": CUR_TABLE,
                        "HYBRID_MLOPS_ATHENA_OUTPUT": f"s3://{BUCKET}/athena-results/"}.items():
        env.setenv(name, value)
    enf.enforce(True)
    enf.recording = True
    run = monitor.test(logical_date=HOUR + timedelta(hours=1), run_after=HOUR + timedelta(hours=1))
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}

    # cost_report on aws: Cost Explorer's pages and the split cost query's rows queued
    from test_cost_split import DAY, SPLIT_ROWS, _athena_result, _ce_pages

    from hybrid_mlops.cost import split

    enf.enforce(False)
    for page in _ce_pages(DAY - timedelta(days=29), 30, eks_usd=50.0):
        _post(f"{enf.server.url}/moto-api/static/ce/cost-and-usage-results", json.dumps({"results": [page]}))
    _post(f"{enf.server.url}/moto-api/static/athena/query-results",
          json.dumps({"region": REGION, "results": [_athena_result(list(split.COLUMNS), SPLIT_ROWS)]}))
    env.setenv("HYBRID_MLOPS_ATHENA_WORKGROUP", COST_WORKGROUP)
    enf.enforce(True)
    run = build_dags("cost_report")["cost_report"].test(
        logical_date=datetime.combine(DAY + timedelta(days=1), time(7), tzinfo=timezone.utc))
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    enf.recording = False



POLICIES = {"mwaa": ("dags", mwaa_execution_policy), "sagemaker": ("training", sagemaker_execution_policy)}


def _athena_index(calls: list[dict]) -> dict:
    index: dict = {}
    for c in calls:
        if c["op"] == "StartQueryExecution":
            index[c["response"]["QueryExecutionId"]] = c["params"].get("WorkGroup")
        if c["op"] == "GetQueryExecution" and c["response"].get("OutputLocation"):
            index[("result", c["params"]["QueryExecutionId"])] = c["response"]["OutputLocation"]
    return index


def allowed_and_used(policy: dict, needs, label: str) -> set[tuple[str, str]]:
    """Asserts every needed (action, resource) is allowed; returns the (statement, action) pairs that serve one."""
    denied = sorted({(c["service"], c["op"], a, r) for c, a, r, _ in needs if not allowing(policy, a, r)})
    assert not denied, f"requests the {label} policy does not allow: {denied}"
    return {(sid, a) for _, a, r, _ in needs for sid in allowing(policy, a, r)
            for st in policy["Statement"] if st["Sid"] == sid for pattern in st["Action"] if _match(pattern, a)}


def _needs(proof) -> dict[str, list[tuple[dict, str, str, bool]]]:
    """Per principal: (request, action, resource, direct) for every recorded request outside the local
    stand-ins; ``direct``: the request's own action, the one moto evaluates (the others: what AWS also
    authorizes for it, e.g. iam:PassRole for CreateTrainingJob, Glue and S3 for an Athena query)."""
    index, out = _athena_index(proof.calls), defaultdict(list)
    for c in proof.calls:
        if c["service"] == "s3" and c["params"].get("Key", "").startswith(MIRROR):
            continue
        out[c["principal"]] += [(c, a, r, i == 0) for i, (a, r) in enumerate(needed(c, index))]
    return out


def test_the_dags_ran_as_the_roles(proof):
    """Retrain (with the deploy), monitor and cost report passed with only the policies (asserted in the fixture)."""
    by = defaultdict(set)
    for c in proof.calls:
        by[c["principal"]].add(f"{c['service']}:{c['op']}")
    assert {"sagemaker:CreateTrainingJob", "sagemaker:CreateModelPackage", "athena:StartQueryExecution",
            "ce:GetCostAndUsage", "eks:DescribeCluster"} <= by["mwaa"]
    assert {"s3:GetObject", "s3:PutObject"} <= by["sagemaker"]


@pytest.mark.parametrize("label", sorted(POLICIES))
def test_every_request_is_allowed_and_every_action_is_needed(proof, label):
    """With the real ARNs: each request's actions are allowed; each action of each statement serves a request."""
    policy = POLICIES[label][1](proof.deploy)
    used = allowed_and_used(policy, _needs(proof)[label], label)
    unused = [(st["Sid"], a) for st in policy["Statement"] for a in st["Action"] if (st["Sid"], a) not in used]
    assert not unused, f"actions no request of the run needs: {unused}"
    for st in policy["Statement"]:
        for resource in st["Resource"]:
            assert resource == "*" or ACCOUNT in resource or resource.startswith("arn:aws:s3:::"), resource


@pytest.mark.parametrize("label", sorted(POLICIES))
def test_removing_any_statement_denies_something_the_run_did(proof, label):
    """Each statement removed in turn: the requests it covers, replayed signed as the role, meet AccessDenied on
    moto; a statement moto never evaluates is shown needed by the recorded requests (some need only it)."""
    policy_name, build = POLICIES[label]
    policy = build(proof.deploy)
    role = "hybrid-mlops-mwaa-execution" if label == "mwaa" else proof.deploy.sagemaker_role_name
    iam, needs = proof.admin("iam"), _needs(proof)[label]
    proof.enforce(False)  # the admin's role edits go through unchecked; the replays are checked
    try:
        for st in policy["Statement"]:
            reduced = {**policy, "Statement": [s for s in policy["Statement"] if s is not st]}
            only_this = [(c, a, r, direct) for c, a, r, direct in needs if st["Sid"] in allowing(policy, a, r)
                         and not allowing(reduced, a, r)]
            assert only_this, f"{label}: nothing the run did needs {st['Sid']} alone"
            replays = {id(c): c for c, _, _, direct in only_this if direct and c["service"] not in UNVERIFIABLE_ON_MOTO}
            if not replays:
                continue  # moto never evaluates these actions (PassRole, Glue, EKS ...): the proof above is all there is
            assert_denied_without(proof, label, iam, role, policy_name, reduced, replays.values(), st["Sid"])
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(moto_view(policy)))


def assert_denied_without(proof, label: str, iam, role: str, policy_name: str, reduced: dict, calls, sid: str):
    """The role holds ``reduced`` (the policy less statement ``sid``): replayed as the role, some call is denied."""
    iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(moto_view(reduced)))
    proof.enforce(True)
    try:
        outcomes = [_replay(proof, label, c) for c in calls]
    finally:
        proof.enforce(False)
    assert "AccessDenied" in outcomes, f"{label}: without {sid} moto still allowed {outcomes}"


def _replay(proof, label: str, call: dict) -> str:
    """Send the recorded request again, signed as ``label``; ``AccessDenied`` or what else happened."""
    params = {k: (b"" if k == "Body" else v) for k, v in call["params"].items()}
    client = proof.client(label, call["service"], call["region"])
    try:
        client._make_api_call(call["op"], params)
    except botocore.exceptions.ClientError as e:
        code = e.response["Error"]["Code"]
        return "AccessDenied" if code in ("AccessDenied", "AccessDeniedException", "403") else code
    return "allowed"
