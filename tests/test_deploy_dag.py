"""The deploy DAG end to end under dag.test(): the registry on the moto server, three regions'
Kubernetes APIs on kmock (the test plays KServe's controller), the local target's real predictor."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import boto3
import pytest

from data.kserve.cluster import DEPLOYMENTS, SERVICES, FakeCluster, failed_status, ready_status
from data.kserve.model_server import TinyV2Server
from serving_helpers import fraud_smoke_sample
from hybrid_mlops.serving import manifest as m

ROOT = Path(__file__).resolve().parents[1]
GROUP = "fraud-detection-models"
REGIONS = ("us-west-2", "ap-northeast-2", "eu-west-1")


def register(version_bytes: bytes, status: str = "Approved") -> dict:
    """Create a package version in the moto registry whose model.tar.gz holds ``version_bytes``."""
    bucket = os.environ["HYBRID_MLOPS_BUCKET"]
    sm, s3 = boto3.client("sagemaker"), boto3.client("s3")
    try:
        sm.create_model_package_group(ModelPackageGroupName=GROUP)
    except sm.exceptions.ClientError:
        pass
    n = len(sm.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]) + 1
    key = f"models/fraud-detection/job-{n}/output/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=version_bytes)
    s3.put_object(Bucket=bucket, Key=f"models/fraud-detection/job-{n}/output/smoke_sample.json",
                  Body=json.dumps(fraud_smoke_sample(4)).encode())
    arn = sm.create_model_package(
        ModelPackageGroupName=GROUP,
        InferenceSpecification={
            "Containers": [{"Image": "ghcr.io/hybrid-mlops/fraud-predictor:latest",
                            "ModelDataUrl": f"s3://{bucket}/{key}"}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelApprovalStatus=status,
        CustomerMetadataProperties={"training_job": f"job-{n}"},
    )["ModelPackageArn"]
    return sm.describe_model_package(ModelPackageName=arn)


def metadata(arn: str) -> dict:
    return boto3.client("sagemaker").describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]


def deployed_events(model: str = "fraud-detection") -> list[dict]:
    from sqlalchemy import select

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == f"hybrid-mlops://{model}/deployed").order_by(AssetEvent.id)
        ).all()
        return [dict(e.extra) for e in rows]


def test_dag_files_parse_without_kubernetes_or_network():
    code = (
        "import sys; from hybrid_mlops.factory import build_dags\n"
        "for t in ('local', 'aws'):\n"
        "    import os; os.environ['HYBRID_MLOPS_TARGET'] = t\n"
        "    dag = build_dags('deploy')['deploy_fraud_detection']\n"
        "    print('>>', t, sorted(x.task_id for x in dag.tasks), sorted(dag.params))\n"
        "print('>>', 'kubernetes' in sys.modules, 'kubernetes_asyncio' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line[3:] for line in out.stdout.splitlines() if line.startswith(">> ")]
    assert lines[0] == "local ['record_deployment', 'resolve_model_package', 'serve_locally'] ['canary', 'regions', 'version']"
    assert lines[1].startswith("aws ['choose_regions', 'deploy_kserve', 'record_deployment', 'resolve_model_package']")
    assert lines[2] == "False False"


@pytest.fixture
def clusters(monkeypatch):
    """One kmock API server per region, Kubernetes connections kserve_<region>, a controller thread
    per cluster that marks every new spec Ready with a URL served by a tiny real v2 server, except the
    versions listed in ``failing[region]``, which it marks failed (the revision never becomes Ready)."""
    server = TinyV2Server()
    fakes = {r: FakeCluster().start() for r in REGIONS}
    failing: dict[str, set[int]] = {r: set() for r in REGIONS}
    stop = threading.Event()

    def controller(region, cluster):
        seen = None
        while not stop.wait(0.02):
            isvc = cluster.get("fraud-detection", "models")
            if isvc is None:
                continue
            key = repr((isvc["spec"], isvc["metadata"].get("annotations")))
            if key != seen:
                seen = key
                canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
                if m.served_ref(isvc).version in failing[region]:
                    status = failed_status("container kserve-container: OOMKilled (exit code 137)")
                else:
                    status = ready_status(server.url, latest_url=server.url if canary else None)
                cluster.set_status("fraud-detection", "models", status)

    threads = [threading.Thread(target=controller, args=rc, daemon=True) for rc in fakes.items()]
    for t in threads:
        t.start()
    for region, cluster in fakes.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_KSERVE_{region.replace('-', '_').upper()}", cluster.connection_uri_env())
    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "aws")
    monkeypatch.setenv("HYBRID_MLOPS_KUBERNETES_CONN_ID", "kserve_{region}")
    yield fakes, server, failing
    stop.set()
    for t in threads:
        t.join(2)
    for c in reversed(list(fakes.values())):  # kmock patches aiohttp's resolver: undo in LIFO order
        c.stop()
    server.stop()


def aws_deploy_dag():
    from hybrid_mlops.factory import build_dags

    dag = build_dags("deploy")["deploy_fraud_detection"]
    dag.get_task("deploy_kserve").partial_kwargs["check_interval"] = 0.05
    return dag


def conf(**overrides) -> dict:
    """A whole run conf: dag.test() keeps the previous run's conf in dag.params otherwise."""
    return {"version": "latest-approved", "regions": list(REGIONS), "canary": True, **overrides}


def test_deploy_dag_on_eks_regions_canary_promote_rerun_and_rollback(aws, airflow_db, clusters):
    fakes, server, _ = clusters
    v1, v2 = register(b"one"), register(b"two")
    register(b"three", status="PendingManualApproval")
    dag = aws_deploy_dag()
    states = lambda run: {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}  # noqa: E731

    run = dag.test(run_conf=conf(version="1"))
    assert run.state == "success", states(run)
    for cluster in fakes.values():
        live = cluster.get("fraud-detection", "models")
        assert m.served_ref(live).version == 1 and m.canary_percent(live) is None
    assert metadata(v1["ModelPackageArn"])["deployed_regions"] == " ".join(sorted(REGIONS))
    assert metadata(v1["ModelPackageArn"])["training_job"] == "job-1"  # other metadata kept

    run = dag.test(run_conf=conf())  # latest-approved: version 2 (version 3 is not approved)
    assert run.state == "success", states(run)
    for cluster in fakes.values():
        live = cluster.get("fraud-detection", "models")
        assert m.served_ref(live).version == 2 and m.canary_percent(live) is None
        assert m.previous_ref(live).version == 1
        assert any('"canaryTrafficPercent": 10' in w or "PATCH" in w for w in cluster.writes())
    events = deployed_events()
    assert events[-1]["version"] == 2 and events[-1]["package_arn"] == v2["ModelPackageArn"]
    assert sorted(events[-1]["regions"]) == sorted(REGIONS)
    assert metadata(v2["ModelPackageArn"])["deployed_at"]

    writes = {r: len(c.writes()) for r, c in fakes.items()}
    run = dag.test(run_conf=conf())  # the same again: nothing changes anywhere
    assert run.state == "success", states(run)
    assert {r: len(c.writes()) for r, c in fakes.items()} == writes
    assert states(run)[("record_deployment", -1)] == "skipped"
    assert len(deployed_events()) == len(events)

    run = dag.test(run_conf=conf(version="1", regions=["eu-west-1"], canary=False))  # roll back one region
    assert run.state == "success", states(run)
    assert m.served_ref(fakes["eu-west-1"].get("fraud-detection", "models")).version == 1
    assert m.served_ref(fakes["us-west-2"].get("fraud-detection", "models")).version == 2

    run = dag.test(run_conf=conf(version="3"))
    assert run.state == "failed" and states(run)[("resolve_model_package", -1)] == "failed"


def test_partial_region_failure_records_the_regions_that_succeeded(aws, airflow_db, clusters):
    """eu-west-1's canary of version 2 never becomes Ready: that region rolls back to version 1, the two
    others serve version 2 and are recorded in the registry, and the run still fails (no asset event)."""
    fakes, _, failing = clusters
    v1, v2 = register(b"one"), register(b"two")
    dag = aws_deploy_dag()
    states = lambda run: {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}  # noqa: E731
    assert dag.test(run_conf=conf(version="1")).state == "success"
    # the capture logger the InferenceService logs to was applied in every region
    for cluster in fakes.values():
        assert cluster.get("capture-logger", "models", DEPLOYMENTS)
        assert cluster.get("capture-logger", "models", SERVICES)
    events = deployed_events()

    failing["eu-west-1"].add(2)
    run = dag.test(run_conf=conf(version="2"))
    assert run.state == "failed", states(run)
    deploy_states = {ti.map_index: ti.state for ti in run.get_task_instances() if ti.task_id == "deploy_kserve"}
    assert sorted(deploy_states.values()) == ["failed", "success", "success"], deploy_states
    assert states(run)[("record_deployment", -1)] == "failed"
    assert m.served_ref(fakes["eu-west-1"].get("fraud-detection", "models")).version == 1  # rolled back
    for region in ("us-west-2", "ap-northeast-2"):
        assert m.served_ref(fakes[region].get("fraud-detection", "models")).version == 2
    assert metadata(v2["ModelPackageArn"])["deployed_regions"] == "ap-northeast-2 us-west-2"
    assert metadata(v1["ModelPackageArn"])["deployed_regions"] == " ".join(sorted(REGIONS))
    assert len(deployed_events()) == len(events)  # a partial rollout emits no "deployed" event

    failing["eu-west-1"].clear()  # fixed: re-run the failed region alone
    run = dag.test(run_conf=conf(version="2", regions=["eu-west-1"]))
    assert run.state == "success", states(run)
    assert metadata(v2["ModelPackageArn"])["deployed_regions"] == " ".join(sorted(REGIONS))
    assert deployed_events()[-1]["regions"] == ["eu-west-1"]


REAL = (ROOT / ".venv-serve" / "bin" / "python").exists() and (ROOT / "include/serving/predictor/__main__.py").exists()


@pytest.mark.skipif(not REAL, reason="the predictor or .venv-serve is not installed (bin/setup)")
def test_deploy_dag_local_serves_the_approved_version(aws, airflow_db, artifacts_dir, monkeypatch, tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from serving_helpers import build_standin_model, make_tarball

    from hybrid_mlops.hooks.kserve import smoke_test
    from hybrid_mlops.local.serving import LocalServing, free_port

    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "local")
    monkeypatch.setenv("HYBRID_MLOPS_SERVING_PORT", str(free_port()))
    model_dir = build_standin_model(artifacts_dir / "standin-model")
    package = register(make_tarball(model_dir, tmp_path / "model.tar.gz").read_bytes())
    from hybrid_mlops.factory import build_dags

    dag = build_dags("deploy")["deploy_fraud_detection"]
    serving = LocalServing("fraud-detection")
    try:
        run = dag.test(run_conf=conf())
        assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert serving.current()["version"] == 1
        assert smoke_test(serving.url, "fraud-detection", fraud_smoke_sample(4)) is None
        assert metadata(package["ModelPackageArn"])["deployed_regions"] == "local"
        assert deployed_events()[-1]["regions"] == ["local"]
    finally:
        serving.stop()
