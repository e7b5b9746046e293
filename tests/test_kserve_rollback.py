"""Rollback as KServe documents it, on the kmock Kubernetes API: ``canaryTrafficPercent: 0`` first,
then the previous spec, and a failed rollout that is not retried into another canary."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from data.kserve.cluster import failed_status, ready_status
from hybrid_mlops.hooks.kserve import KServeHook
from hybrid_mlops.serving import manifest as m
from test_kserve_deploy import NAME, NS, cluster, model_server, operator, ref, run_deploy, serves_ready  # noqa: F401


def test_rollback_sets_canary_to_zero_first_then_restores_the_previous_spec(spec, cluster, model_server, monkeypatch):
    run_deploy(operator(spec, 14), cluster, serves_ready(model_server))
    patches = []
    original = KServeHook.patch_inference_service

    def record(self, name, namespace, body):  # our own hook, recorded: the order of the writes is the point
        patches.append(body)
        return original(self, name, namespace, body)

    monkeypatch.setattr(KServeHook, "patch_inference_service", record)

    def decide(isvc):
        if m.served_ref(isvc).version == 15:
            return failed_status("container kserve-container: OOMKilled (exit code 137)")
        return ready_status(model_server.url)

    with pytest.raises(AirflowFailException, match="Not retried"):
        run_deploy(operator(spec, 15), cluster, decide)
    assert patches[0] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    restore = patches[1]["spec"]["predictor"]
    assert restore["canaryTrafficPercent"] == 0  # never null while the failed canary is the latest ready
    assert {"name": "STORAGE_URI", "value": ref(14)["storage_uri"]} in restore["containers"][0]["env"]
    live = cluster.get(NAME, NS)
    assert m.served_ref(live).version == 14 and m.canary_percent(live) == 0
