"""SageMaker serving on the local target: the control plane on the moto server (every request checked
against botocore's model), the project's real predictor standing in for the endpoint's fleet and for
Batch Transform's instances.

Endpoint: first deploy (model, config with data capture, alarms, autoscaling), a blue/green canary
update, a failed update rolled back with the old version still serving. Batch: a prefix scored with
the ids joined and the same scores as the online predictor, in JSON lines and CSV; a rerun reuses the job.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml

from serving_helpers import build_standin_model, fraud_smoke_sample, make_tarball
from strict_aws import request_violations

ROOT = Path(__file__).resolve().parents[1]
GROUP = "fraud-detection-models"
IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/hybrid-mlops-predictor:1.0"
REAL = (ROOT / ".venv-serve" / "bin" / "python").exists()
needs_predictor = pytest.mark.skipif(not REAL, reason=".venv-serve is not installed (bin/setup)")


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    """fraud-detection served on a SageMaker endpoint in one region (specs in a temp folder)."""
    spec = yaml.safe_load((ROOT / "include/models/fraud-detection.yaml").read_text())
    spec["serving"].update(target="sagemaker", regions=["us-west-2"], gpu=0,
                           sagemaker={"image": IMAGE, "min_instances": 2, "max_instances": 6})
    spec["batch"] = {"content_type": "application/jsonlines", "max_payload_mb": 1}
    models = tmp_path / "models"
    models.mkdir()
    (models / "fraud-detection.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("HYBRID_MLOPS_MODELS_DIR", str(models))
    return models


@pytest.fixture
def sagemaker_spec(tmp_path, monkeypatch, artifacts_dir, models_dir):
    """The spec above on the local target, and the stand-in model's tarball."""
    from hybrid_mlops.local.serving import free_port

    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "local")
    monkeypatch.setenv("HYBRID_MLOPS_SERVING_PORT", str(free_port()))
    monkeypatch.setenv("HYBRID_MLOPS_LOCAL_DIR", str(tmp_path / "local"))
    tarball = make_tarball(build_standin_model(artifacts_dir / "standin-model"), tmp_path / "model.tar.gz")
    return tarball.read_bytes()


def register(model_tar: bytes, sample: dict | None = None) -> dict:
    """An Approved package version on moto with its model.tar.gz and smoke sample."""
    bucket = os.environ["HYBRID_MLOPS_BUCKET"]
    sm, s3 = boto3.client("sagemaker"), boto3.client("s3")
    if not sm.list_model_package_groups(NameContains=GROUP)["ModelPackageGroupSummaryList"]:
        sm.create_model_package_group(ModelPackageGroupName=GROUP)
    n = len(sm.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]) + 1
    key = f"models/fraud-detection/job-{n}/output/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=model_tar)
    s3.put_object(Bucket=bucket, Key=key.replace("model.tar.gz", "smoke_sample.json"),
                  Body=json.dumps(sample or fraud_smoke_sample(4)).encode())
    arn = sm.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/{key}"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]
    return sm.describe_model_package(ModelPackageName=arn)


def deploy(version: str):
    from hybrid_mlops.factory import build_dags

    dag = build_dags("deploy")["deploy_fraud_detection"]
    run = dag.test(run_conf={"version": version, "regions": ["us-west-2"], "canary": True})
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def result_of(run, task_id: str):
    ti = next(t for t in run.get_task_instances() if t.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id, map_indexes=ti.map_index)


def invoke(url: str, body: bytes, content_type: str) -> tuple[int, bytes, str]:
    req = urllib.request.Request(f"{url}/invocations", data=body, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read(), resp.headers["X-Model-Version"]


@needs_predictor
def test_endpoint_create_blue_green_update_and_failed_update_rolled_back(aws, airflow_db, sagemaker_spec):
    from hybrid_mlops.local.serving import LocalServing
    from hybrid_mlops.serving import smoke

    sm, aas = boto3.client("sagemaker"), boto3.client("application-autoscaling")
    good = fraud_smoke_sample(4)
    broken = {**good, "schema": {**good["schema"], "numeric": [*good["schema"]["numeric"], "not_a_feature"]},
              "rows": {**good["rows"], "not_a_feature": [1.0] * 4}}
    v1, v2, v3 = register(sagemaker_spec), register(sagemaker_spec), register(sagemaker_spec, broken)
    serving = LocalServing("fraud-detection")
    body = json.dumps(smoke.v2_request(good)).encode()
    try:
        run, states = deploy("1")
        assert run.state == "success", states
        endpoint = sm.describe_endpoint(EndpointName="fraud-detection")
        config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        assert endpoint["EndpointConfigName"].startswith("fraud-detection-v1-")
        variant = config["ProductionVariants"][0]
        assert (variant["ModelName"], variant["InitialInstanceCount"]) == ("fraud-detection-v1", 2)
        assert config["DataCaptureConfig"]["DestinationS3Uri"] == "s3://hybrid-mlops-test/capture-sagemaker/fraud-detection"
        container = sm.describe_model(ModelName="fraud-detection-v1")["PrimaryContainer"]
        assert container["Image"] == IMAGE
        assert container["ModelDataUrl"] == v1["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
        assert container["Environment"]["HYBRID_MLOPS_CAPTURE_BUCKET"] == "hybrid-mlops-test"
        alarms = boto3.client("cloudwatch").describe_alarms(AlarmNamePrefix="fraud-detection-")["MetricAlarms"]
        assert sorted(a["MetricName"] for a in alarms) == ["Invocation5XXErrors", "ModelLatency"]
        target = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
        assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == \
            ("endpoint/fraud-detection/variant/AllTraffic", 2, 6)
        policy = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
        assert policy["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"] == \
            {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
        status, answer, served = invoke(serving.url, body, "application/json")
        assert (status, served) == (200, "1") and smoke.response_problem(json.loads(answer), good) is None
        props = sm.describe_model_package(ModelPackageName=v1["ModelPackageArn"])["CustomerMetadataProperties"]
        assert (props["deployed_regions"], props["deployed_target"]) == ("us-west-2", "local")

        run, states = deploy("2")  # blue/green: a canary of 1 of the 2 instances, baked under the alarms
        assert run.state == "success", states
        update = result_of(run, "deploy_sagemaker")["update"]
        assert request_violations("sagemaker", "UpdateEndpoint", update) == []
        policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
        assert policy["TrafficRoutingConfiguration"]["Type"] == "CANARY"
        assert policy["TrafficRoutingConfiguration"]["CanarySize"] == {"Type": "INSTANCE_COUNT", "Value": 1}
        assert [a["AlarmName"] for a in update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]] == \
            sorted(a["AlarmName"] for a in alarms)
        served_config = sm.describe_endpoint(EndpointName="fraud-detection")["EndpointConfigName"]
        assert served_config.startswith("fraud-detection-v2-") and invoke(serving.url, body, "application/json")[2] == "2"

        run, states = deploy("3")  # its smoke test fails: rolled back, version 2 keeps serving
        assert run.state == "failed" and states["deploy_sagemaker"] == "failed", states
        assert sm.describe_endpoint(EndpointName="fraud-detection")["EndpointConfigName"] == served_config
        assert serving.current()["version"] == 2 and invoke(serving.url, body, "application/json")[2] == "2"
        props = sm.describe_model_package(ModelPackageName=v3["ModelPackageArn"]).get("CustomerMetadataProperties") or {}
        assert "deployed_regions" not in props
        assert sm.describe_model_package(ModelPackageName=v2["ModelPackageArn"])["CustomerMetadataProperties"][
            "deployed_regions"] == "us-west-2"
    finally:
        serving.stop()


def _rows(n: int, seed: int) -> dict:
    from hybrid_mlops.data.generator import generate

    return generate(n, seed=seed)


FEATURES = ("amount", "avg_amount_30d", "hour", "distance_km", "txn_count_24h", "account_age_days", "card_present",
            "merchant_category", "channel", "country")


def _jsonl(cols: dict, lo: int, hi: int) -> bytes:
    lines = []
    for i in range(lo, hi):
        row = {"transaction_id": str(cols["transaction_id"][i])}
        row.update({f: (cols[f][i].item() if hasattr(cols[f][i], "item") else cols[f][i]) for f in FEATURES})
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


def _csv(cols: dict, lo: int, hi: int) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for i in range(lo, hi):
        writer.writerow([str(cols["transaction_id"][i]), *(cols[f][i] for f in FEATURES)])
    return buf.getvalue().encode()


def _online_scores(cols: dict, url: str) -> dict[str, float]:
    from hybrid_mlops.hooks.kserve import KServeHook
    from hybrid_mlops.serving import smoke

    sample = {"schema": fraud_smoke_sample(1)["schema"], "rows": {f: list(cols[f]) for f in FEATURES}}
    answer = KServeHook.infer_v2(url, "fraud-detection", smoke.v2_request(sample))
    probability = next(o for o in answer["outputs"] if o["name"] == "probability")["data"]
    return dict(zip((str(x) for x in cols["transaction_id"]), probability))


@needs_predictor
def test_batch_score_joins_ids_and_matches_the_online_predictor(aws, airflow_db, sagemaker_spec):
    from hybrid_mlops.factory import build_dags
    from hybrid_mlops.local.serving import LocalServing, s3_fetch
    from hybrid_mlops.operators.batch_transform import BatchTransformOperator

    package = register(sagemaker_spec)
    s3, bucket = boto3.client("s3"), os.environ["HYBRID_MLOPS_BUCKET"]
    cols = _rows(3000, seed=5)
    for name, body in (("part-0.jsonl", _jsonl(cols, 0, 1800)), ("day=2/part-1.jsonl", _jsonl(cols, 1800, 3000))):
        s3.put_object(Bucket=bucket, Key=f"to-score/json/{name}", Body=body)
    s3.put_object(Bucket=bucket, Key="to-score/csv/part-0.csv", Body=_csv(cols, 0, 3000))
    dag = build_dags("batch_score")["batch_score_fraud_detection"]
    conf = {"input_uri": "s3://{bucket}/to-score/json/", "output_uri": "", "version": "latest-approved",
            "content_type": "application/jsonlines", "instance_type": "ml.m5.xlarge", "instance_count": 2}

    run = dag.test(run_conf=conf)
    assert run.state == "success", {t.task_id: t.state for t in run.get_task_instances()}
    result = result_of(run, "batch_transform")
    transform = result["Transform"]
    assert request_violations("sagemaker", "CreateTransformJob", {
        k: v for k, v in transform.items() if k in ("TransformJobName", "ModelName", "MaxPayloadInMB", "BatchStrategy",
                                                     "TransformInput", "TransformOutput", "TransformResources",
                                                     "DataProcessing", "ModelClientConfig")}) == []
    assert transform["DataProcessing"]["JoinSource"] == "Input" and transform["BatchStrategy"] == "MultiRecord"
    assert result["local"]["records"] == 3000 and result["local"]["objects"] == 2
    out = transform["TransformOutput"]["S3OutputPath"]
    assert out.startswith(f"s3://{bucket}/batch-scores/fraud-detection/")
    prefix = out.split(bucket + "/", 1)[1]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    assert keys == [f"{prefix}day=2/part-1.jsonl.out", f"{prefix}part-0.jsonl.out"]
    joined = [json.loads(line) for k in keys for line in s3.get_object(Bucket=bucket, Key=k)["Body"].read().splitlines()]
    batch = {r["transaction_id"]: r["SageMakerOutput"]["probability"] for r in joined}
    assert len(batch) == 3000 and all(set(FEATURES) <= set(r) for r in joined)

    online = LocalServing("fraud-detection", state_dir=Path(os.environ["HYBRID_MLOPS_LOCAL_DIR"]) / "online")
    with online.standalone(1, package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"], fetch=s3_fetch()) as url:
        scores = _online_scores(cols, url)
        assert urllib.request.urlopen(f"{url}/ping", timeout=5).status == 200  # SageMaker's health check
        for body, ctype, code, needle in ((b"1,2\n", "text/csv", 400, "line 1: 2 fields, expected 10"),
                                          (b"x", "text/plain", 415, "text/plain"),
                                          (b'{"amount": "a lot"}\n', "application/jsonlines", 400, "amount")):
            with pytest.raises(urllib.error.HTTPError) as err:
                invoke(url, body, ctype)
            assert err.value.code == code and needle in err.value.read().decode()
    assert max(abs(batch[i] - scores[i]) for i in scores) < 1e-6

    # CSV: the id column is filtered out on the way in and kept in the joined line
    run = dag.test(run_conf={**conf, "input_uri": f"s3://{bucket}/to-score/csv", "content_type": "text/csv"})
    assert run.state == "success"
    out = result_of(run, "batch_transform")["Transform"]["TransformOutput"]["S3OutputPath"]
    body = s3.get_object(Bucket=bucket, Key=out.split(bucket + "/", 1)[1] + "part-0.csv.out")["Body"].read().decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert len(rows) == 3000 and all(len(r) == 1 + len(FEATURES) + 1 for r in rows)
    assert max(abs(float(r[-1]) - scores[r[0]]) for r in rows) < 1e-6

    # a rerun of the run reuses the completed job (no predictor started, the output untouched)
    again = BatchTransformOperator(task_id="again", config=result_of(run, "transform_request"))
    assert again.execute({})["reused"] is True

    # bad input is refused naming the field: by the typed form, and by check_request for what a form allows
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="input_uri"):
        dag.test(run_conf={**conf, "input_uri": "https://example.com/x"})
    run = dag.test(run_conf={**conf, "input_uri": ""})
    assert {t.task_id: t.state for t in run.get_task_instances()}["check_request"] == "failed"


def test_sagemaker_capture_record_maps_to_the_monitors_line():
    """A DataCapture record (v2 JSON in, v2 JSON out) becomes the monitor's capture line, column by column."""
    from hybrid_mlops.drift.capture import from_sagemaker_capture
    from hybrid_mlops.serving import smoke

    sample = fraud_smoke_sample(3)
    answer = {"outputs": [{"name": "probability", "shape": [3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]},
                          {"name": "label", "shape": [3], "datatype": "INT8", "data": [0, 0, 0]}]}
    record = {"captureData": {
        "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "encoding": "JSON",
                          "data": json.dumps(smoke.v2_request(sample))},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "encoding": "JSON",
                           "data": json.dumps(answer)}},
        "eventMetadata": {"eventId": "e-1", "inferenceTime": "2026-12-01T05:00:00Z"}, "eventVersion": "0"}
    schema = sample["schema"]
    line = json.loads(from_sagemaker_capture(json.dumps(record), model="fraud-detection", version="2",
                                             numeric=schema["numeric"], categorical=list(schema["categorical"]),
                                             output="probability"))
    assert (line["id"], line["time"], line["version"], line["protocol"]) == ("e-1", "2026-12-01T05:00:00Z", "2", "v2")
    assert line["inputs"]["amount"] == [float(x) for x in sample["rows"]["amount"]]
    assert line["inputs"]["channel"] == sample["rows"]["channel"]
    assert line["outputs"] == {"probability": [0.1, 0.2, 0.3]}
    assert from_sagemaker_capture("not json", model="m", version="1", numeric=[], categorical=[], output="p") is None


def test_aws_target_defers_on_the_provider_trigger_and_smoke_tests_through_invoke_endpoint(aws, monkeypatch):
    """``aws``: the first deploy creates everything, defers on the Amazon provider's SageMakerTrigger, and
    the smoke test goes through sagemaker-runtime's InvokeEndpoint (moto answers from a queue of results)."""
    from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
    from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

    from hybrid_mlops.operators.sagemaker_endpoint import DeploySageMakerEndpointOperator
    from hybrid_mlops.specs.model import ServingSpec

    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "aws")
    monkeypatch.setenv("HYBRID_MLOPS_SAGEMAKER_ROLE_ARN", "arn:aws:iam::123456789012:role/hybrid-mlops-sagemaker")
    serving = ServingSpec(target="sagemaker", regions=["us-west-2"], sagemaker={"image": IMAGE}).model_dump(mode="json")
    bucket = os.environ["HYBRID_MLOPS_BUCKET"]
    sample = fraud_smoke_sample(4)

    def operator(version: int, sample: dict = sample) -> DeploySageMakerEndpointOperator:
        package = {"version": version, "package_arn": f"arn:aws:sagemaker:us-west-2:123456789012:model-package/{GROUP}/{version}",
                   "storage_uri": f"s3://{bucket}/models/fraud-detection/job-{version}/output/model.tar.gz",
                   "smoke_sample": sample}
        return DeploySageMakerEndpointOperator(task_id="deploy_sagemaker", model_name="fraud-detection",
                                               serving=serving, package=package, region="us-west-2",
                                               id_column="transaction_id", check_interval=5)

    def queue(*bodies: dict) -> None:
        results = [{"Body": json.dumps(b), "ContentType": "application/json"} for b in bodies]
        req = urllib.request.Request(f"{aws.url}/moto-api/static/sagemaker/endpoint-results", method="POST",
                                     data=json.dumps({"region": "us-west-2", "results": results}).encode())
        urllib.request.urlopen(req, timeout=5).read()

    op = operator(1)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, SageMakerTrigger) and trigger.serialize()[1]["job_type"] == "endpoint"
    assert deferred.value.method_name == "execute_complete"
    queue({"outputs": [{"name": "probability", "shape": [4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]})
    result = op.execute_complete({}, {"status": "success"}, **deferred.value.kwargs)
    assert (result["outcome"], result["version"]) == ("deployed", 1)
    assert result["url"] == "https://runtime.sagemaker.us-west-2.amazonaws.com/endpoints/fraud-detection/invocations"
    assert boto3.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker")["ScalableTargets"][0]["MaxCapacity"] == 4

    # an update that changes the instance type deregisters autoscaling first (AWS refuses it otherwise)
    from hybrid_mlops.serving import sagemaker as s

    aas = boto3.client("application-autoscaling")
    live = boto3.client("sagemaker").describe_endpoint(EndpointName="fraud-detection")["EndpointConfigName"]
    bigger = ServingSpec(target="sagemaker", regions=["us-west-2"],
                         sagemaker={"image": IMAGE, "instance_type": "ml.c5.2xlarge"}).sagemaker
    same = s.endpoint_config_request("fraud-detection", 2, "fraud-detection-v1", op.sm, bucket=bucket,
                                     instance_count=2, cost_tags={})
    op._prepare_scaling_for(live, same)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    op._prepare_scaling_for(live, s.endpoint_config_request("fraud-detection", 2, "fraud-detection-v1", bigger,
                                                            bucket=bucket, instance_count=2, cost_tags={}))
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    op._ensure_scaling()

    # the same version again: nothing to change, no wait, still smoke-tested (moto keys its answers by body)
    queue({"outputs": [{"name": "probability", "shape": [4], "datatype": "FP32", "data": [1.5, 0.2, 0.3, 0.4]}]})
    with pytest.raises(AirflowFailException, match=r"outside \[0, 1\]"):
        operator(1, fraud_smoke_sample(4, seed=12)).execute({})


def test_dags_on_both_targets(models_dir, monkeypatch):
    """deploy_<model> maps deploy_sagemaker over the spec's region on aws and local; batch_score_<model>
    has a typed form and the spec's schedule (none here)."""
    from hybrid_mlops.factory import build_dags

    for target in ("aws", "local"):
        monkeypatch.setenv("HYBRID_MLOPS_TARGET", target)
        dag = build_dags("deploy")["deploy_fraud_detection"]
        assert sorted(t.task_id for t in dag.tasks) == \
            ["choose_regions", "deploy_sagemaker", "record_deployment", "resolve_model_package"]
        assert dag.params.get_param("regions").schema["items"]["enum"] == ["us-west-2"]
        batch = build_dags("batch_score")["batch_score_fraud_detection"]
        assert [t.task_id for t in batch.topological_sort()] == \
            ["check_request", "resolve_model_package", "transform_request", "batch_transform", "summary"]
    form = batch.params
    assert form.get_param("content_type").schema["enum"] == ["application/jsonlines", "text/csv"]
    assert form.get_param("instance_count").schema["maximum"] == 100 and batch.schedule is None
