"""The deploy's smoke test reaches the new revision through the Kubernetes API server's service proxy,
as a worker outside a private cluster must (``serving.smoke_via: api_proxy``, the default).

kmock answers ``/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/...`` as the API server does
(404 for a missing Service, 503 for a missing port or no endpoints, else the pods' answer passed
through); the pods are tiny real v2 servers on loopback. The InferenceService's own URLs are
cluster-local names the worker cannot resolve, so a smoke test that went to them would fail.
"""

from __future__ import annotations

import os

import pytest
from airflow.sdk.exceptions import AirflowException

import test_kserve_deploy as base
from data.kserve.cluster import SERVICES, FakeCluster, ready_status
from data.kserve.model_server import TinyV2Server
from hybrid_mlops.hooks.kserve import KServeHook
from hybrid_mlops.serving import manifest as m
from serving_helpers import fraud_smoke_sample

NAME, NS = base.NAME, base.NS
PRIVATE = f"http://{NAME}.{NS}.svc.cluster.local"  # what a worker outside the cluster cannot reach
INFER = f"/v2/models/{NAME}/infer"


@pytest.fixture(scope="module")
def cluster():
    c = FakeCluster().start()
    os.environ["AIRFLOW_CONN_KSERVE_US_WEST_2"] = c.connection_uri_env()
    yield c
    os.environ.pop("AIRFLOW_CONN_KSERVE_US_WEST_2", None)
    c.stop()


@pytest.fixture
def pods():
    good, broken = TinyV2Server(), TinyV2Server(broken=True)
    yield good, broken
    good.stop()
    broken.stop()


def revisions(cluster, version_pods: dict[int, str]):
    """Play KServe + Knative: each version's revision is ``<name>-predictor-<version>``; its
    ``-private`` Service's endpoints are the pods in ``version_pods``; the status carries only
    cluster-local URLs."""
    def decide(isvc):
        version = m.served_ref(isvc).version
        prev = m.previous_ref(isvc)
        for v, url in version_pods.items():
            cluster.endpoints[(NS, f"{NAME}-predictor-{v:05d}-private")] = url
        canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        if canary and prev is not None:
            status = ready_status(PRIVATE, latest_url=f"http://latest-{PRIVATE[7:]}", revision=version)
            status["components"]["predictor"]["traffic"][1]["revisionName"] = f"{NAME}-predictor-{prev.version:05d}"
            return status
        return ready_status(PRIVATE, revision=version)

    return decide


def test_canary_passes_its_smoke_test_through_the_api_server_proxy(spec, cluster, pods):
    good, _ = pods
    assert spec.serving.smoke_via == "api_proxy"  # the default
    decide = revisions(cluster, {41: good.url, 42: good.url})
    base.run_deploy(base.operator(spec, 41), cluster, decide)
    before = len(cluster.proxied)
    result, _ = base.run_deploy(base.operator(spec, 42), cluster, decide)
    assert result["outcome"] == "deployed" and result["version"] == 42
    live = cluster.get(NAME, NS)
    assert m.served_ref(live).version == 42 and m.canary_percent(live) is None
    # the canary (revision 42) first, then the promoted revision: both through the proxy, port 80
    assert cluster.proxied[before:] == [
        (NS, f"{NAME}-predictor-00042-private:80", INFER),
        (NS, f"{NAME}-predictor-00042-private:80", INFER),
    ]
    assert good.last_request["id"] == "smoke-test" and good.last_request["inputs"][0]["shape"] == [4]


def test_canary_failing_its_smoke_test_through_the_proxy_rolls_back(spec, cluster, pods):
    good, broken = pods
    decide = revisions(cluster, {51: good.url, 52: broken.url})
    base.run_deploy(base.operator(spec, 51), cluster, decide)
    served_before = good.calls
    with pytest.raises(AirflowException) as err:
        base.run_deploy(base.operator(spec, 52), cluster, decide)
    message = str(err.value)
    assert "Rolled models/fraud-detection in us-west-2 back to version 51" in message
    assert f"services/{NAME}-predictor-00052-private:80/proxy{INFER} -> 500" in message
    assert "failed to load" in message
    assert broken.calls == 1 and good.calls == served_before  # the canary's pods only
    live = cluster.get(NAME, NS)
    assert m.served_ref(live).version == 51 and m.canary_percent(live) == 0


def test_a_revision_without_endpoints_fails_the_smoke_test(spec, cluster, pods):
    good, _ = pods
    decide = revisions(cluster, {61: good.url})  # revision 62 has no pods behind its Service
    base.run_deploy(base.operator(spec, 61), cluster, decide)
    cluster.endpoints.pop((NS, f"{NAME}-predictor-00062-private"), None)

    def no_pods(isvc):
        status = decide(isvc)
        for route in status["components"]["predictor"]["traffic"]:
            if route["revisionName"].endswith("62"):
                route["url"] = None
        return status

    with pytest.raises(AirflowException, match=r"-> 503: .*no endpoints available"):
        base.run_deploy(base.operator(spec, 62), cluster, no_pods)


def test_smoke_via_url_calls_the_inference_service_url_from_the_worker(spec, cluster, pods):
    good, _ = pods
    serving = spec.serving.model_copy(update={"smoke_via": "url"})
    before = len(cluster.proxied)

    def decide(isvc):
        canary = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        return ready_status(good.url, latest_url=good.url if canary else None)

    op = base.operator(spec, 71)
    op.serving = serving.model_dump()
    result, _ = base.run_deploy(op, cluster, decide)
    assert result["outcome"] == "deployed" and good.calls == 2  # the canary, then the promoted revision
    assert cluster.proxied[before:] == []


def test_raw_deployment_is_reached_at_the_predictor_service(spec, cluster, pods):
    """RawDeployment: ``<isvc>-predictor:80``; a cluster that kept KServe's older
    ``<isvc>-predictor-default`` Service is reached there."""
    good, broken = pods
    hook = KServeHook(kubernetes_conn_id="kserve_us_west_2")
    raw = {"metadata": {"name": "raw-model", "namespace": NS,
                        "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"}},
           "status": {"url": PRIVATE, "deploymentMode": "RawDeployment"}}
    assert KServeHook.predictor_services(raw) == ["raw-model-predictor", "raw-model-predictor-default"]
    cluster.endpoints[(NS, "raw-model-predictor")] = good.url
    sample = fraud_smoke_sample(3)
    good.model = "raw-model"
    try:
        problem, where = hook.proxy_smoke_test(raw, sample)
        assert problem is None and where == f"service {NS}/raw-model-predictor:80 through the API server proxy"
        assert cluster.proxied[-1] == (NS, "raw-model-predictor:80", "/v2/models/raw-model/infer")

        legacy = {**raw, "metadata": {**raw["metadata"], "name": "old-raw"}}
        hook.apply_namespaced_object({"apiVersion": "v1", "kind": "Service",
                                      "metadata": {"name": "old-raw-predictor-default", "namespace": NS},
                                      "spec": {"ports": [{"name": "http1", "port": 80, "targetPort": 8080}]}})
        assert cluster.get("old-raw-predictor-default", NS, SERVICES) is not None
        cluster.endpoints[(NS, "old-raw-predictor-default")] = broken.url
        problem, where = hook.proxy_smoke_test(legacy, sample)
        assert "old-raw-predictor-default:80" in where and "-> 500" in problem
    finally:
        good.model = NAME


def test_proxy_answers_like_the_api_server_for_a_missing_service_or_port(cluster):
    hook = KServeHook(kubernetes_conn_id="kserve_us_west_2")
    with pytest.raises(RuntimeError, match=r'-> 404: .*services \\"nope-private\\" not found'):
        hook.proxy_infer_v2(NS, "nope-private", NAME, {"inputs": []})
    cluster.endpoints[(NS, "some-private")] = "http://127.0.0.1:9"
    with pytest.raises(RuntimeError, match=r"-> 503: .*no service port 8080 found"):
        hook.proxy_infer_v2(NS, "some-private", NAME, {"inputs": []}, port=8080)
