"""The Kubernetes deploy path against a real HTTP Kubernetes API (kmock), the test playing KServe's
controller: first deploy, canary -> promote, canary -> rollback (not Ready, and failed smoke test),
a re-run that changes nothing, and the capture logger's Deployment and Service applied beside it."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from data.kserve.cluster import DEPLOYMENTS, SERVICES, FakeCluster, failed_status, ready_status
from data.kserve.model_server import TinyV2Server
from hybrid_mlops.operators.kserve import DeployInferenceServiceOperator
from hybrid_mlops.serving import manifest as m
from hybrid_mlops.triggers.kserve import InferenceServiceReadyTrigger

from serving_helpers import fraud_smoke_sample  # noqa: E402

NAME, NS = "fraud-detection", "models"
BUCKET = "hybrid-mlops-test"


def ref(version: int) -> dict:
    return {
        "version": version,
        "package_arn": f"arn:aws:sagemaker:us-west-2:123456789012:model-package/fraud-detection-models/{version}",
        "storage_uri": f"s3://hybrid-mlops-test/models/fraud-detection/job-{version}/output/model.tar.gz",
        "smoke_sample": fraud_smoke_sample(4),
    }


class FakeTI:
    def __init__(self):
        self.xcom: dict = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


@pytest.fixture(scope="module")
def cluster():
    c = FakeCluster().start()
    os.environ["AIRFLOW_CONN_KSERVE_US_WEST_2"] = c.connection_uri_env()
    yield c
    os.environ.pop("AIRFLOW_CONN_KSERVE_US_WEST_2", None)
    c.stop()


@pytest.fixture
def model_server():
    server = TinyV2Server()
    yield server
    server.stop()


def operator(spec, version: int, **kwargs) -> DeployInferenceServiceOperator:
    return DeployInferenceServiceOperator(
        task_id="deploy_kserve",
        model_name=spec.name,
        serving=spec.serving.model_dump(),
        package=ref(version),
        region="us-west-2",
        kubernetes_conn_id="kserve_{region}",
        capture_bucket=BUCKET,
        check_interval=0.05,
        timeout=20,
        **kwargs,
    )


def controller(cluster, decide, stop: threading.Event):
    """Play KServe: whenever the spec changes, write the status ``decide(isvc)`` returns."""
    seen = None
    while not stop.wait(0.02):
        isvc = cluster.get(NAME, NS)
        if isvc is None:
            continue
        key = repr((isvc["spec"], isvc["metadata"].get("annotations")))
        if key != seen:
            seen = key
            status = decide(isvc)
            if status is not None:
                cluster.set_status(NAME, NS, status)


def run_deploy(op, cluster, decide):
    """execute -> (trigger -> execute_complete)* as the triggerer would, with a controller thread."""
    stop = threading.Event()
    thread = threading.Thread(target=controller, args=(cluster, decide, stop), daemon=True)
    thread.start()
    context = {"ti": FakeTI()}
    try:
        call, kwargs = op.execute, {}
        while True:
            try:
                return call(context, **kwargs), context
            except TaskDeferred as deferred:
                trigger = deferred.trigger
                assert isinstance(trigger, InferenceServiceReadyTrigger)
                classpath, params = trigger.serialize()
                assert classpath == "hybrid_mlops.triggers.kserve.InferenceServiceReadyTrigger"
                event = asyncio.run(_first(InferenceServiceReadyTrigger(**params)))
                call = getattr(op, deferred.method_name)
                kwargs = {"event": event, **(deferred.kwargs or {})}
    finally:
        stop.set()
        thread.join(2)


async def _first(trigger):
    async for event in trigger.run():
        return event.payload


def serves_ready(server):
    def decide(isvc):
        canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        return ready_status(server.url, latest_url=server.url if canary else None)

    return decide


def test_first_deploy_then_canary_promote_then_rerun_changes_nothing(spec, cluster, model_server):
    result, ctx = run_deploy(operator(spec, 1), cluster, serves_ready(model_server))
    assert result["version"] == 1 and result["outcome"] == "deployed" and result["url"] == model_server.url
    live = cluster.get(NAME, NS)
    assert m.served_ref(live).version == 1 and m.canary_percent(live) is None
    assert m.previous_ref(live) is None  # first deployment: no canary, nothing to roll back to
    assert ctx["ti"].xcom["inference_service_link"] == model_server.url
    assert model_server.calls == 1

    # version 2: canary first (10 %), smoke test, then promoted to 100 %
    canaries = []

    def decide(isvc):
        canaries.append(isvc["spec"]["predictor"].get("canaryTrafficPercent"))
        return serves_ready(model_server)(isvc)

    result, _ = run_deploy(operator(spec, 2), cluster, decide)
    assert result["version"] == 2
    assert 10 in canaries
    live = cluster.get(NAME, NS)
    assert m.served_ref(live).version == 2 and m.canary_percent(live) is None
    env = live["spec"]["predictor"]["containers"][0]["env"]
    assert {"name": "STORAGE_URI", "value": ref(2)["storage_uri"]} in env
    assert m.previous_ref(live).version == 1

    # the same task again: no write at all
    before, writes = cluster.get(NAME, NS), len(cluster.writes())
    result, _ = run_deploy(operator(spec, 2), cluster, lambda isvc: None)
    assert result["outcome"] == "unchanged"
    assert cluster.get(NAME, NS) == before and len(cluster.writes()) == writes


def test_canary_not_ready_rolls_back_and_quotes_condition(spec, cluster, model_server):
    run_deploy(operator(spec, 4), cluster, serves_ready(model_server))  # served: version 4

    def decide(isvc):
        if m.served_ref(isvc).version == 5:
            return failed_status("container kserve-container: OOMKilled (exit code 137)")
        return ready_status(model_server.url)

    with pytest.raises(AirflowException) as err:
        run_deploy(operator(spec, 5), cluster, decide)
    assert "Rolled models/fraud-detection in us-west-2 back to version 4" in str(err.value)
    assert "OOMKilled (exit code 137)" in str(err.value)
    live = cluster.get(NAME, NS)
    assert m.served_ref(live).version == 4 and m.canary_percent(live) == 0  # KServe rollback: 0 % to the latest
    assert {"name": "STORAGE_URI", "value": ref(4)["storage_uri"]} in live["spec"]["predictor"]["containers"][0]["env"]


def test_canary_failing_smoke_test_rolls_back(spec, cluster, model_server):
    run_deploy(operator(spec, 6), cluster, serves_ready(model_server))
    broken = TinyV2Server(broken=True)
    try:
        def decide(isvc):
            canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
            return ready_status(model_server.url, latest_url=broken.url if canary else None)

        with pytest.raises(AirflowException, match="smoke test of version 7 .* 500: .*failed to load"):
            run_deploy(operator(spec, 7), cluster, decide)
    finally:
        broken.stop()
    live = cluster.get(NAME, NS)
    assert m.served_ref(live).version == 6 and m.canary_percent(live) == 0


def test_canary_off_goes_straight_to_full(spec, cluster, model_server):
    run_deploy(operator(spec, 8), cluster, serves_ready(model_server))
    seen = []

    def decide(isvc):
        seen.append(isvc["spec"]["predictor"].get("canaryTrafficPercent"))
        return ready_status(model_server.url)

    result, _ = run_deploy(operator(spec, 9, canary="False"), cluster, decide)
    assert result["version"] == 9 and set(seen) == {None}


def test_timeout_without_previous_fails_with_last_status(spec, cluster):
    op = DeployInferenceServiceOperator(
        task_id="t", model_name="other-model", serving=spec.serving.model_dump(), package=ref(1),
        region="us-west-2", kubernetes_conn_id="kserve_{region}", capture_bucket=BUCKET, check_interval=0.05,
        timeout=0.3,
    )
    with pytest.raises(AirflowException, match=r"no previous version.*\(timeout\)"):
        run_deploy(op, cluster, lambda isvc: None)


def test_ready_sensor_defers_and_quotes_failure(spec, cluster, model_server):
    from hybrid_mlops.sensors.kserve import InferenceServiceReadySensor

    run_deploy(operator(spec, 20), cluster, serves_ready(model_server))
    sensor = InferenceServiceReadySensor(task_id="s", name=NAME, namespace=NS, kubernetes_conn_id="kserve_us_west_2",
                                         check_interval=0.05, max_attempts=40)
    assert sensor.poke({}) is True
    cluster.set_status(NAME, NS, failed_status("pull image: 403 Forbidden"))
    with pytest.raises(AirflowException, match="403 Forbidden"):
        sensor.poke({})
    cluster.set_status(NAME, NS, {"conditions": [{"type": "Ready", "status": "Unknown"}]})
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    cluster.set_status(NAME, NS, ready_status(model_server.url))
    event = asyncio.run(_first(deferred.value.trigger))
    assert sensor.execute_complete({}, event)["url"] == model_server.url


def test_eks_kube_config_mints_a_token(aws):
    """The EKS path: describe_cluster on the (moto) EKS API, and the exec plugin prints an ExecCredential."""
    import json
    import subprocess

    import boto3

    from hybrid_mlops.hooks.kserve import eks_kube_config

    eks = boto3.client("eks", region_name="us-west-2")
    eks.create_cluster(name="mlops-us-west-2", roleArn="arn:aws:iam::123456789012:role/eks",
                       resourcesVpcConfig={"subnetIds": ["subnet-1"]})
    config = eks_kube_config("mlops-us-west-2", "us-west-2", aws_conn_id=None)
    assert config["clusters"][0]["cluster"]["server"].startswith("https://")
    exec_ = config["users"][0]["user"]["exec"]
    out = subprocess.run([exec_["command"], *exec_["args"]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    cred = json.loads(out.stdout)
    assert cred["kind"] == "ExecCredential" and cred["status"]["token"].startswith("k8s-aws-v1.")


def test_capture_logger_is_applied_before_the_inference_service_and_kept_in_sync(spec, cluster, model_server):
    """The logger_url's Service and its Deployment exist before the InferenceService is written; a re-run
    writes nothing; a changed bucket is merge-patched onto the live Deployment."""
    logger = "capture-logger"  # the host of spec.serving.logger_url
    run_deploy(operator(spec, 30), cluster, serves_ready(model_server))
    deployment, service = cluster.get(logger, NS, DEPLOYMENTS), cluster.get(logger, NS, SERVICES)
    assert deployment is not None and service is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == spec.serving.image
    assert container["command"] == ["python", "-m", "predictor.logger_service"]
    assert container["args"][container["args"].index("--capture-bucket") + 1] == BUCKET
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == spec.serving.service_account
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    writes = cluster.writes()
    first_logger = min(i for i, w in enumerate(writes) if "/deployments" in w or "/services" in w)
    first_isvc = min(i for i, w in enumerate(writes) if "/inferenceservices" in w)
    assert first_logger < first_isvc, writes

    before = len(cluster.writes())  # version 30 again: the logger is up to date, nothing is written
    result, _ = run_deploy(operator(spec, 30), cluster, lambda isvc: None)
    assert result["outcome"] == "unchanged" and len(cluster.writes()) == before

    op = operator(spec, 30)
    op.capture_bucket = "other-bucket"
    run_deploy(op, cluster, lambda isvc: None)
    new = cluster.writes()[before:]
    assert [w.split()[0].upper().rsplit(".", 1)[-1] for w in new] == ["PATCH"], new
    args = cluster.get(logger, NS, DEPLOYMENTS)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--capture-bucket") + 1] == "other-bucket"
    assert cluster.get(logger, NS, SERVICES)["spec"]["ports"][0]["port"] == 80


def test_logger_url_without_capture_bucket_fails_before_any_write(spec, cluster):
    op = operator(spec, 31)
    op.capture_bucket = None
    before = len(cluster.writes())
    with pytest.raises(AirflowException, match="needs capture_bucket"):
        op.execute({"ti": FakeTI()})
    assert len(cluster.writes()) == before
