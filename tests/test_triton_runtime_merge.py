"""The Triton variant after KServe merges it with the shipped ClusterServingRuntime, as KServe does
(``MergeRuntimeContainers``: a strategic merge of the runtime's container with the predictor's, then
``args`` = the runtime's followed by the predictor's), validated as the pod would be."""

from __future__ import annotations

import copy

import yaml

from hybrid_mlops.serving import manifest as m
from hybrid_mlops.settings import INCLUDE_DIR

RUNTIME = INCLUDE_DIR / "kserve" / "runtime-kserve-tritonserver.yaml"
REF = m.ModelRef(3, "arn:aws:sagemaker:us-west-2:123456789012:model-package/g/3", "s3://b/models/job/output/model.tar.gz")


def _strategic_merge(base: dict, patch: dict) -> dict:
    # Maps merge key by key; lists without a patch merge key (args, command) are replaced; env merges by name.
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if key == "env":
            by_name = {e["name"]: e for e in out.get("env", [])}
            by_name.update({e["name"]: e for e in value})
            out["env"] = list(by_name.values())
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _strategic_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def kserve_merge(runtime_container: dict, predictor_container: dict) -> dict:
    merged = _strategic_merge(runtime_container, predictor_container)
    merged["args"] = [*runtime_container.get("args", []), *predictor_container.get("args", [])]
    return merged


def _quantity(text: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def container_problems(container: dict) -> list[str]:
    problems = []
    resources = container.get("resources", {})
    for name, request in resources.get("requests", {}).items():
        limit = resources.get("limits", {}).get(name)
        if limit is not None and _quantity(str(request)) > _quantity(str(limit)):
            problems.append(f"{name}: request {request} > limit {limit}")
    flags = [a.split("=", 1)[0] for a in container.get("args", []) if a.startswith("--")]
    problems += [f"{flag} passed {flags.count(flag)} times" for flag in sorted(set(flags)) if flags.count(flag) > 1]
    return problems


def test_triton_container_is_valid_after_kserves_merge_with_the_runtime(spec):
    runtime = yaml.safe_load(RUNTIME.read_text())["spec"]["containers"][0]
    serving = spec.serving.model_copy(update={"runtime": "triton"})
    isvc = m.validate(m.render_inference_service(spec.name, serving, REF))
    model = isvc["spec"]["predictor"]["model"]
    predictor_container = {"name": "kserve-container", "args": model["args"], "resources": model["resources"]}
    merged = kserve_merge(runtime, predictor_container)
    assert container_problems(merged) == [], merged
    assert f"--load-model={spec.name}" in merged["args"] and "--model-store=/mnt/models" in merged["args"]
    # the repository the runtime's --model-store reads: the artifact's triton/ folder, unpacked in S3
    assert model["storageUri"] == "s3://b/models/job/output/triton/"
