"""Every InferenceService the project renders validates against the KServe CRD schema and webhook rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from hybrid_mlops.serving import manifest as m

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "include" / "kserve" / "inferenceservice-v1beta1.schema.json").read_text())
REF = m.ModelRef(
    version=3,
    package_arn="arn:aws:sagemaker:us-west-2:123456789012:model-package/fraud-detection-models/3",
    storage_uri="s3://hybrid-mlops-test/models/fraud-detection/fraud-detection-train-1/output/model.tar.gz",
)
PREV = m.ModelRef(2, REF.package_arn[:-1] + "2", REF.storage_uri.replace("train-1", "train-0"))


def check(manifest: dict) -> None:
    errors = [e.message for e in Draft7Validator(SCHEMA).iter_errors(manifest)]
    assert errors == [], errors
    assert m.webhook_errors(manifest) == []
    m.validate(manifest)


def variants(spec):
    for runtime in ("project", "triton"):
        serving = spec.serving.model_copy(update={"runtime": runtime})
        for canary in (None, spec.serving.canary_traffic_percent):
            yield runtime, canary, m.render_inference_service(
                spec.name, serving, REF, canary_traffic_percent=canary,
                previous=PREV if canary else None, extra_labels=spec.cost_tags(),
            )
    for metric in ("cpu", "rps"):
        serving = spec.serving.model_copy(update={"autoscaling_metric": metric, "gpu": 0, "logger_url": None})
        yield "project", None, m.render_inference_service(spec.name, serving, REF)


def test_schema_copy_matches_shared_reference():
    shared = ROOT.parent / "shared" / "kserve" / "inferenceservice-v1beta1.schema.json"
    if shared.exists():
        assert json.loads(shared.read_text()) == SCHEMA


def test_every_rendered_manifest_validates(spec):
    rendered = list(variants(spec))
    assert len(rendered) == 6
    for _, _, manifest in rendered:
        check(manifest)


def test_project_runtime_manifest(spec):
    isvc = m.render_inference_service(spec.name, spec.serving, REF, extra_labels=spec.cost_tags())
    meta, pred = isvc["metadata"], isvc["spec"]["predictor"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and meta["name"] == "fraud-detection"
    assert meta["namespace"] == "models"
    assert meta["labels"]["hybrid-mlops.io/model-version"] == "3"
    assert meta["labels"]["hybrid-mlops.io/model-package"] == "fraud-detection-models-3"
    assert meta["labels"]["team"] == "risk-ml"
    assert meta["annotations"]["hybrid-mlops.io/model-package-arn"] == REF.package_arn
    assert meta["annotations"]["autoscaling.knative.dev/scale-down-delay"] == "300s"
    assert (pred["minReplicas"], pred["maxReplicas"]) == (2, 10)
    assert (pred["scaleMetric"], pred["scaleTarget"]) == ("concurrency", 70)
    assert "canaryTrafficPercent" not in pred
    assert pred["serviceAccountName"] == "kserve-models"
    assert pred["logger"] == {"mode": "all", "url": "http://capture-logger.models.svc.cluster.local"}
    assert pred["nodeSelector"]["karpenter.sh/capacity-type"] == "spot"
    assert pred["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    (c,) = pred["containers"]
    assert c["name"] == "kserve-container"
    assert {"name": "STORAGE_URI", "value": REF.storage_uri} in c["env"]
    assert c["args"][c["args"].index("--model-uri") + 1] == "/mnt/models"
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    for value in meta["labels"].values():
        assert len(value) <= 63 and ":" not in value


def test_triton_variant(spec):
    serving = spec.serving.model_copy(update={"runtime": "triton"})
    isvc = m.render_inference_service(spec.name, serving, REF, canary_traffic_percent=10, previous=PREV)
    pred = isvc["spec"]["predictor"]
    assert "containers" not in pred and pred["canaryTrafficPercent"] == 10
    assert pred["model"]["modelFormat"] == {"name": "onnx"}
    assert pred["model"]["runtime"] == "kserve-tritonserver"
    assert pred["model"]["storageUri"] == m.triton_repository_uri(REF.storage_uri)
    assert not any(a.startswith("--model-store") for a in pred["model"]["args"])  # the runtime passes it
    assert pred["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert m.previous_ref(isvc) == PREV and m.served_ref(isvc) == REF


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda i: i["metadata"].update(name="Fraud_Detection"), "metadata.name"),
        (lambda i: i["spec"]["predictor"].update(minReplicas=5, maxReplicas=2), "minReplicas=5"),
        (lambda i: i["spec"]["predictor"].update(model={"modelFormat": {"name": "onnx"}}), "exactly one"),
        (lambda i: i["spec"]["predictor"].pop("containers"), "exactly one"),
    ],
)
def test_webhook_rules_reject(spec, mutate, expected):
    isvc = m.render_inference_service(spec.name, spec.serving, REF)
    mutate(isvc)
    with pytest.raises(m.ManifestError, match=expected):
        m.validate(isvc)


def test_schema_rejects_wrong_types(spec):
    isvc = m.render_inference_service(spec.name, spec.serving, REF)
    isvc["spec"]["predictor"]["scaleMetric"] = "gpu"
    with pytest.raises(m.ManifestError, match="scaleMetric"):
        m.validate(isvc)


# -- the capture logger ---------------------------------------------------------------------------

def test_logger_deployment_and_service_are_consistent(spec):
    deployment, service = m.validate_logger(*m.render_logger(spec.name, spec.serving, "hybrid-mlops-test",
                                                             extra_labels=spec.cost_tags()))
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    # named from the host of serving.logger_url, in the predictor's namespace
    assert spec.serving.logger_url == "http://capture-logger.models.svc.cluster.local"
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "capture-logger"
    assert deployment["metadata"]["namespace"] == service["metadata"]["namespace"] == spec.serving.namespace
    pod = deployment["spec"]["template"]
    match = deployment["spec"]["selector"]["matchLabels"]
    assert match.items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["serviceAccountName"] == spec.serving.service_account  # IRSA: the role writes capture/
    container = pod["spec"]["containers"][0]
    assert container["image"] == spec.serving.image
    args = container["args"]
    port = int(args[args.index("--port") + 1])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["readinessProbe"]["httpGet"]["port"] == port
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("url, expected", [
    ("http://capture-logger", ("capture-logger", 80)),
    ("http://capture-logger.models:8081", ("capture-logger", 8081)),
    ("http://capture-logger.models.svc.cluster.local:9000", ("capture-logger", 9000)),
])
def test_logger_target_from_url(url, expected):
    target = m.logger_target(url, "models")
    assert (target.name, target.port) == expected and target.namespace == "models"


@pytest.mark.parametrize("url, expected", [
    ("https://capture-logger.models.svc.cluster.local", "must be http://"),
    ("http://capture-logger.other.svc.cluster.local", "names namespace 'other'"),
    ("http://logger.example.com", "cluster DNS name"),
    ("http://Capture_Logger.models", "DNS-1035"),
])
def test_logger_target_rejects(url, expected):
    with pytest.raises(m.ManifestError, match=expected):
        m.logger_target(url, "models")


@pytest.mark.parametrize("mutate, expected", [
    (lambda d, s: d["spec"]["selector"]["matchLabels"].update(app="x"), "match the pod template"),
    (lambda d, s: s["spec"].update(selector={"app": "x"}), "select the Deployment's pods"),
    (lambda d, s: s["spec"]["ports"][0].update(targetPort=9999), "targetPort 9999"),
    (lambda d, s: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort=1), "--port 8080"),
    (lambda d, s: d.update(apiVersion="extensions/v1beta1"), "apps/v1/Deployment"),
])
def test_logger_validation_rejects(spec, mutate, expected):
    deployment, service = m.render_logger(spec.name, spec.serving, "b")
    mutate(deployment, service)
    with pytest.raises(m.ManifestError, match=expected):
        m.validate_logger(deployment, service)


SERVE_PY = ROOT / ".venv-serve" / "bin" / "python"


@pytest.mark.skipif(not SERVE_PY.exists(), reason=".venv-serve is not installed (bin/setup)")
def test_rendered_logger_command_starts_and_answers_its_readiness_probe(spec, tmp_path):
    """The rendered command and arguments start the real logger service; the probe path answers 200."""
    import os
    import socket
    import subprocess
    import time
    import urllib.request

    deployment, _ = m.render_logger(spec.name, spec.serving, "hybrid-mlops-test")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    args = list(container["args"])
    args[args.index("--port") + 1] = str(free)  # the pod's port may be taken here; the flag is what is checked
    cmd = [str(SERVE_PY), *container["command"][1:], *args, "--host", "127.0.0.1"]
    env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "us-west-2", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x"}
    log = (tmp_path / "logger.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT / "include" / "serving", env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        probe = container["readinessProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{free}{probe}", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "logger.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "the logger did not answer its readiness probe"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
