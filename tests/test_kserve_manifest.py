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
    assert pred["model"]["storageUri"] == REF.storage_uri
    assert "--model-store=/mnt/models/triton" in pred["model"]["args"]
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
