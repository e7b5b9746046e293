"""A predictor that reserves GPUs runs the CUDA build of the image (onnxruntime-gpu); one that does not
runs the CPU build. Every rendered manifest validates against the KServe CRD schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hybrid_mlops.serving import manifest as m
from hybrid_mlops.specs.model import ServingSpec
from test_kserve_manifest import REF, check

ROOT = Path(__file__).resolve().parents[1]


def container(serving) -> dict:
    isvc = m.render_inference_service("fraud-detection", serving, REF)
    check(isvc)
    (c,) = isvc["spec"]["predictor"]["containers"]
    return c


def test_gpu_serving_runs_the_cuda_build_by_tag_convention(spec):
    assert spec.serving.gpu == 1 and spec.serving.gpu_image is None
    c = container(spec.serving)
    assert c["image"] == "ghcr.io/hybrid-mlops/predictor:latest-gpu"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_cpu_serving_runs_the_cpu_build(spec):
    serving = spec.serving.model_copy(update={"gpu": 0})
    c = container(serving)
    assert c["image"] == spec.serving.image == "ghcr.io/hybrid-mlops/predictor:latest"
    assert "nvidia.com/gpu" not in c["resources"]["limits"]


def test_explicit_gpu_image_wins_and_only_with_gpus(spec):
    digest = "123456789012.dkr.ecr.us-west-2.amazonaws.com/predictor@sha256:" + "a" * 64
    serving = spec.serving.model_copy(update={"gpu_image": digest, "gpu": 2})
    assert container(serving)["image"] == digest
    assert container(serving.model_copy(update={"gpu": 0}))["image"] == spec.serving.image


def test_capture_logger_stays_on_the_cpu_build(spec):
    deployment, _ = m.render_logger(spec.name, spec.serving, "bucket")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == spec.serving.image


@pytest.mark.parametrize("image, gpu", [
    ("ghcr.io/hybrid-mlops/predictor:1.4.0", "ghcr.io/hybrid-mlops/predictor:1.4.0-gpu"),
    ("registry.local:5000/predictor", "registry.local:5000/predictor:latest-gpu"),
    ("registry.local:5000/predictor:2", "registry.local:5000/predictor:2-gpu"),
    ("predictor:3-gpu", "predictor:3-gpu"),
])
def test_gpu_tag_convention(image, gpu):
    assert m.gpu_image_of(image) == gpu


def test_digest_without_gpu_image_is_refused(spec):
    serving = spec.serving.model_copy(update={"image": "ghcr.io/x/predictor@sha256:" + "b" * 64, "gpu": 1})
    with pytest.raises(m.ManifestError, match="set serving.gpu_image"):
        m.render_inference_service("fraud-detection", serving, REF)


def test_spec_field_validates():
    assert ServingSpec.model_validate({"gpu_image": "ghcr.io/x/p:1-cuda"}).gpu_image == "ghcr.io/x/p:1-cuda"


def test_dockerfile_documents_the_convention_and_builds_onnxruntime_gpu():
    text = (ROOT / "include" / "serving" / "Dockerfile").read_text()
    assert re.search(r"--build-arg ONNXRUNTIME=gpu -t \S+:latest-gpu", text)
    assert 'pip install "onnxruntime-gpu' in text and "serving.gpu_image" in text
