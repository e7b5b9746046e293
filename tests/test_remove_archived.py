"""``serving.remove_archived``: when a deploy archives the prod version it replaced, what still serves that
version goes too. KServe (kmock's Kubernetes API): the one InferenceService's rollback target and the previous
Knative revision; local: the old predictor, if it still runs, and its unpacked model."""

from __future__ import annotations

import collections
import json
import subprocess
import types

import pytest
from kubernetes import client as k8s

from hybrid_mlops.hooks.kserve import KServeHook
from hybrid_mlops.serving import manifest as m
from test_kserve_deploy import NAME, NS, cluster, model_server, operator, run_deploy, serves_ready  # noqa: F401

REVISIONS = ("serving.knative.dev", "v1", "revisions")


def test_the_flag_is_validated_naming_the_field(tmp_path):
    import yaml

    from hybrid_mlops.settings import MODELS_DIR
    from hybrid_mlops.specs import load_spec
    from hybrid_mlops.specs.model import SpecError

    doc = yaml.safe_load((MODELS_DIR / "fraud-detection.yaml").read_text())
    doc["serving"]["remove_archived"] = "sometimes"
    path = tmp_path / "fraud-detection.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"serving\.remove_archived"):
        load_spec(path)
    doc["serving"]["remove_archived"] = True
    path.write_text(yaml.safe_dump(doc))
    assert load_spec(path).serving.remove_archived is True


def _revision(cluster, name: str) -> None:
    api = k8s.CustomObjectsApi(KServeHook(kubernetes_conn_id="kserve_us_west_2").api_client)
    api.create_namespaced_custom_object(*REVISIONS[:2], NS, REVISIONS[2], {
        "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
        "metadata": {"name": name, "namespace": NS, "labels": {"serving.kserve.io/inferenceservice": NAME}}})


def _get_revision(name: str) -> dict | None:
    from kubernetes.client.rest import ApiException

    api = k8s.CustomObjectsApi(KServeHook(kubernetes_conn_id="kserve_us_west_2").api_client)
    try:
        return api.get_namespaced_custom_object(*REVISIONS[:2], NS, REVISIONS[2], name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _with_previous_revision(cluster, routed: bool) -> None:
    """Play KServe after a promotion: 00002 takes all traffic, 00001 is the previous rolled-out revision."""
    status = cluster.get(NAME, NS)["status"]
    predictor = status["components"]["predictor"]
    predictor["previousRolledoutRevision"] = "fraud-detection-predictor-00001"
    if routed:  # a route that still names the old revision (a 0 % tag)
        predictor["traffic"].append({"tag": "prev", "revisionName": "fraud-detection-predictor-00001", "percent": 0})
    cluster.set_status(NAME, NS, status)


@pytest.mark.parametrize("routed", [False, True])
def test_kserve_removal_clears_the_rollback_target_and_deletes_the_old_revision(spec, cluster, model_server, routed):
    run_deploy(operator(spec, 1), cluster, serves_ready(model_server))
    run_deploy(operator(spec, 2), cluster, serves_ready(model_server))  # canary, smoke test, promote
    live = cluster.get(NAME, NS)
    assert m.served_ref(live).version == 2 and m.previous_ref(live).version == 1 and m.canary_percent(live) is None
    _revision(cluster, "fraud-detection-predictor-00001")
    _with_previous_revision(cluster, routed)

    hook = KServeHook(kubernetes_conn_id="kserve_us_west_2")
    assert hook.remove_previous_version(NAME, NS, 2)["rollback_target_cleared"] is False  # 2 is the served one
    out = hook.remove_previous_version(NAME, NS, 1)
    live = cluster.get(NAME, NS)
    assert out["rollback_target_cleared"] and m.previous_ref(live) is None and m.served_ref(live).version == 2
    kept = _get_revision("fraud-detection-predictor-00001")
    if routed:
        assert out["revision_deleted"] is None and kept is not None and "the route still names it" in out["reason"]
    else:
        assert out["revision_deleted"] == "fraud-detection-predictor-00001" and kept is None
    assert hook.remove_previous_version(NAME, NS, 1)["rollback_target_cleared"] is False  # a rerun: nothing left


def test_kserve_removal_waits_while_a_canary_still_routes_to_the_old_version(spec, cluster, model_server):
    run_deploy(operator(spec, 1), cluster, serves_ready(model_server))
    run_deploy(operator(spec, 2), cluster, serves_ready(model_server))
    hook = KServeHook(kubernetes_conn_id="kserve_us_west_2")
    hook.patch_inference_service(NAME, NS, {"spec": {"predictor": {"canaryTrafficPercent": 10}}})
    out = hook.remove_previous_version(NAME, NS, 1)
    assert not out["rollback_target_cleared"] and "canary" in out["reason"]
    assert m.previous_ref(cluster.get(NAME, NS)).version == 1


def _register(hook, job: str) -> dict:
    hook.ensure_group("fraud-detection-models", "", {})
    arn = hook.create_package({
        "ModelPackageGroupName": "fraud-detection-models", "ModelApprovalStatus": "Approved",
        "InferenceSpecification": {"Containers": [{"Image": "img:1", "ModelDataUrl": f"s3://b/{job}/model.tar.gz"}],
                                   "SupportedContentTypes": ["application/json"],
                                   "SupportedResponseMIMETypes": ["application/json"]},
        "CustomerMetadataProperties": {"training_job": job}})
    return hook.describe_package(arn)


def _record(spec, package: dict) -> dict:
    from hybrid_mlops.dags.deploy import _record_task

    ref = {"version": package["ModelPackageVersion"], "package_arn": package["ModelPackageArn"],
           "storage_uri": package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]}
    results = [{"region": "local", "outcome": "deployed", "url": "http://127.0.0.1:1"}]
    context = {"outlet_events": collections.defaultdict(types.SimpleNamespace)}
    return _record_task(spec).function(ref, results, ["local"], **context)


def test_local_deploy_archives_and_removes_the_old_predictor_and_records_the_deployment(aws, spec):
    import boto3

    from hybrid_mlops import settings
    from hybrid_mlops.hooks.registry import ModelRegistryHook
    from hybrid_mlops.local.serving import LocalServing

    spec = spec.model_copy(update={"serving": spec.serving.model_copy(update={"remove_archived": True})})
    hook = ModelRegistryHook(aws_conn_id="aws_default")
    v1, v2 = _register(hook, "job-1"), _register(hook, "job-2")
    _record(spec, v1)
    root = LocalServing(spec.name).root
    (root / "v1" / "model").mkdir(parents=True, exist_ok=True)  # what v1's deploy unpacked
    # a deploy interrupted while draining v1: its predictor still runs, previous.json names it
    old = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (root / "previous.json").write_text(json.dumps({"version": 1, "pid": old.pid}))
    try:
        _record(spec, v2)
        assert old.wait(timeout=20) is not None  # stopped
    finally:
        if old.poll() is None:
            old.kill()
    assert not (root / "v1").exists() and not (root / "previous.json").exists()
    archived = hook.describe_package(v1["ModelPackageArn"])["ModelLifeCycle"]
    assert archived["Stage"] == "archived"
    assert "serving removed: local predictor stopped, files deleted" in archived["StageDescription"]
    record = json.loads(boto3.client("s3").get_object(Bucket=settings.bucket(), Key=f"deployments/{spec.name}.json")["Body"].read())
    assert (record["version"], record["previous_version"], record["target"]) == (2, 1, "local")
    assert record["regions"]["local"]["traffic_percent"] == 100

    served = subprocess.Popen(["sleep", "300"], start_new_session=True)  # stands for v2's predictor
    try:
        (root / "current.json").write_text(json.dumps({"version": 2, "pid": served.pid}))
        with pytest.raises(ValueError, match="is the one serving"):  # never the served version
            LocalServing(spec.name).remove_version(2)
    finally:
        served.kill()
        (root / "current.json").unlink()
