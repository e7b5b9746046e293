"""GPU sharing on KServe (``serving.gpu_sharing``): MIG slices, MPS and time-slicing replicas render to
the resource names and node labels NVIDIA's device plugin and GPU Feature Discovery publish, every
manifest validates against the KServe CRD schema, and a spec that could never schedule is refused on
load, naming the field."""

from __future__ import annotations

import copy

import pytest
import yaml

from hybrid_mlops.serving import manifest as m
from hybrid_mlops.specs.model import GpuSharing, ServingSpec, SpecError, parse_spec
from test_kserve_manifest import REF, ROOT, check

FRAUD = yaml.safe_load((ROOT / "include" / "models" / "fraud-detection.yaml").read_text())


def serving_with(sharing, **fields) -> ServingSpec:
    data = {**FRAUD["serving"], "gpu_sharing": sharing, **fields}
    return parse_spec({**copy.deepcopy(FRAUD), "serving": data}, "fraud-detection.yaml").serving


def rendered(serving: ServingSpec, runtime: str = "project") -> tuple[dict, dict]:
    """(resources, nodeSelector) of the predictor, after checking the manifest (schema + webhook rules)."""
    serving = serving.model_copy(update={"runtime": runtime})
    isvc = m.render_inference_service("fraud-detection", serving, REF, canary_traffic_percent=10, previous=REF)
    check(isvc)
    pred = isvc["spec"]["predictor"]
    resources = pred["model"]["resources"] if runtime == "triton" else pred["containers"][0]["resources"]
    return resources, pred.get("nodeSelector", {})


SPOT = {"karpenter.sh/capacity-type": "spot", "karpenter.k8s.aws/instance-gpu-manufacturer": "nvidia"}


@pytest.mark.parametrize("runtime", ["project", "triton"])
@pytest.mark.parametrize("sharing, resource, labels", [
    # MIG, mixed strategy: one resource per profile; the resource alone finds MIG nodes
    ({"mode": "mig", "profile": "1g.10gb"}, "nvidia.com/mig-1g.10gb", {}),
    ({"mode": "mig", "profile": "3g.40gb", "mig_strategy": "mixed"}, "nvidia.com/mig-3g.40gb", {}),
    ({"mode": "mig", "profile": "1g.5gb+me"}, "nvidia.com/mig-1g.5gb.me", {}),  # '+' -> '.'
    ({"mode": "mig", "profile": "2g.20gb", "gpu_product": "NVIDIA-A100-SXM4-80GB"}, "nvidia.com/mig-2g.20gb",
     {"nvidia.com/mig-2g.20gb.product": "NVIDIA-A100-SXM4-80GB-MIG-2g.20gb"}),
    # MIG, single strategy: nvidia.com/gpu on nodes partitioned into that profile
    ({"mode": "mig", "profile": "1g.10gb", "mig_strategy": "single"}, "nvidia.com/gpu",
     {"nvidia.com/mig.strategy": "single", "nvidia.com/mig.config": "all-1g.10gb"}),
    ({"mode": "mig", "profile": "1g.10gb", "mig_strategy": "single", "mig_config": "inference-7x1g",
      "gpu_product": "NVIDIA-H100-80GB-HBM3"}, "nvidia.com/gpu",
     {"nvidia.com/mig.strategy": "single", "nvidia.com/mig.config": "inference-7x1g",
      "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"}),
    # MPS and time-slicing: shared nvidia.com/gpu replicas on nodes labelled with the strategy
    ({"mode": "mps", "replicas": 4}, "nvidia.com/gpu",
     {"nvidia.com/gpu.sharing-strategy": "mps", "nvidia.com/gpu.replicas": "4"}),
    ({"mode": "mps", "gpu_product": "Tesla-T4"}, "nvidia.com/gpu",
     {"nvidia.com/gpu.sharing-strategy": "mps", "nvidia.com/gpu.product": "Tesla-T4-SHARED"}),
    ({"mode": "time_slicing"}, "nvidia.com/gpu", {"nvidia.com/gpu.sharing-strategy": "time-slicing"}),
    ({"mode": "time_slicing", "rename_by_default": True, "replicas": 8, "gpu_product": "NVIDIA-L4"},
     "nvidia.com/gpu.shared",
     {"nvidia.com/gpu.sharing-strategy": "time-slicing", "nvidia.com/gpu.replicas": "8",
      "nvidia.com/gpu.product": "NVIDIA-L4"}),  # renamed: the product label is left as it is
])
def test_sharing_renders_resource_and_node_labels(sharing, resource, labels, runtime):
    resources, selector = rendered(serving_with(sharing), runtime)
    gpu_keys = sorted(k for k in {**resources["requests"], **resources["limits"]} if k.startswith("nvidia.com/"))
    assert gpu_keys == [resource]  # exactly one device resource, never nvidia.com/gpu beside a MIG one
    assert resources["requests"][resource] == resources["limits"][resource] == "1"
    assert selector == {**SPOT, **labels}  # the spec's own selector is kept


def test_no_sharing_is_unchanged(spec):
    assert spec.serving.gpu_sharing is None
    resources, selector = rendered(spec.serving)
    assert resources["limits"]["nvidia.com/gpu"] == "1" and selector == SPOT
    for word in ("none", "None", None):
        assert serving_with(word).gpu_sharing is None


def test_mode_shorthand():
    assert serving_with("time_slicing").gpu_sharing == GpuSharing(mode="time_slicing")
    assert serving_with("mps").gpu_sharing.mode == "mps"


def test_cpu_copy_of_a_sharing_spec_requests_no_gpu():
    serving = serving_with({"mode": "mig", "profile": "1g.10gb"}).model_copy(update={"gpu": 0})
    resources, selector = rendered(serving)
    assert not any(k.startswith("nvidia.com/") for k in {**resources["requests"], **resources["limits"]})
    assert selector == SPOT


def test_every_documented_mig_profile_renders():
    for gpu, profiles in m.MIG_PROFILES.items():
        for profile in profiles:
            resources, _ = rendered(serving_with({"mode": "mig", "profile": profile}))
            assert m.mig_resource_name(profile) in resources["limits"], (gpu, profile)


@pytest.mark.parametrize("sharing, fields, expected", [
    ({"mode": "mig", "profile": "1g.7gb"}, {}, r"serving\.gpu_sharing\.profile='1g\.7gb': is not a MIG profile"),
    ({"mode": "mig", "profile": "MIG 1g.10gb"}, {}, r"serving\.gpu_sharing\.profile=.*A100-40GB: 1g\.5gb"),
    ({"mode": "mig"}, {}, r"serving\.gpu_sharing: profile: is required for mode 'mig'"),
    ({"mode": "mig", "profile": "1g.10gb", "replicas": 2}, {}, r"serving\.gpu_sharing: replicas: only for mode 'mps'"),
    ({"mode": "mig", "profile": "1g.10gb", "mig_config": "all-1g.10gb"}, {},
     r"serving\.gpu_sharing: mig_config: applies to mig_strategy 'single'"),
    ({"mode": "mps", "profile": "1g.10gb"}, {}, r"serving\.gpu_sharing: profile: only for mode 'mig'.*MPS does not run on MIG"),
    ({"mode": "time_slicing", "mig_strategy": "single"}, {}, r"serving\.gpu_sharing: mig_strategy: only for mode 'mig'"),
    ({"mode": "mps", "replicas": 49}, {}, r"serving\.gpu_sharing: replicas=49: MPS makes at most 48"),
    ({"mode": "mps", "replicas": 1}, {}, r"serving\.gpu_sharing\.replicas=1: .*greater than or equal to 2"),
    ({"mode": "time-slicing"}, {}, r"serving\.gpu_sharing\.mode='time-slicing'.*'time_slicing'"),
    ({"mode": "mps", "gpu_product": "Tesla-T4-SHARED"}, {}, r"serving\.gpu_sharing\.gpu_product=.*whole GPU's product"),
    ({"mode": "mps", "gpu_product": "Tesla T4"}, {}, r"serving\.gpu_sharing\.gpu_product="),
    ({"mode": "mps", "mps": 2}, {}, r"serving\.gpu_sharing\.mps: is not a known field"),
    ({"mode": "mig", "profile": "1g.10gb"}, {"gpu": 0}, r"serving: gpu_sharing \(mode 'mig'\) needs gpu: 1, but gpu is 0"),
    ({"mode": "time_slicing"}, {"gpu": 0}, r"serving: gpu_sharing \(mode 'time_slicing'\) needs gpu: 1"),
    ({"mode": "mig", "profile": "1g.10gb"}, {"gpu": 2}, r"serving: gpu=2 with gpu_sharing mode 'mig': request one share"),
    ({"mode": "mps"}, {"gpu": 4}, r"serving: gpu=4 with gpu_sharing mode 'mps'"),
    ({"mode": "mps"}, {"node_selector": {"nvidia.com/gpu.sharing-strategy": "none"}},
     r"serving: node_selector\['nvidia.com/gpu.sharing-strategy'\]='none' contradicts serving.gpu_sharing"),
    ({"mode": "mig", "profile": "1g.10gb+me", "gpu_product": "NVIDIA-A100-SXM4-80GB"}, {},
     r"serving: gpu_sharing: node label nvidia.com/mig-1g.10gb.me.product=.*not a valid label value"),
])
def test_spec_refuses_naming_the_field(sharing, fields, expected):
    with pytest.raises(SpecError, match=rf"^fraud-detection\.yaml: {expected}"):
        serving_with(sharing, **fields)


def test_a_matching_node_selector_entry_is_accepted():
    serving = serving_with({"mode": "mps"}, node_selector={"nvidia.com/gpu.sharing-strategy": "mps"})
    assert rendered(serving)[1] == {"nvidia.com/gpu.sharing-strategy": "mps"}


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["resources"]["limits"].update({"nvidia.com/mig-1g.10gb": "2"}), "request '1' must equal its limit '2'"),
    (lambda c: [r.update({"nvidia.com/mig-1g.10gb": "500m"}) for r in c["resources"].values()], "must be a whole number"),
    (lambda c: [r.update({"nvidia.com/mig-1g.10gb+me": "1"}) for r in c["resources"].values()], "extended resource"),
])
def test_webhook_rules_on_extended_resources(mutate, expected):
    isvc = m.render_inference_service("fraud-detection", serving_with({"mode": "mig", "profile": "1g.10gb"}), REF)
    mutate(isvc["spec"]["predictor"]["containers"][0])
    with pytest.raises(m.ManifestError, match=expected):
        m.validate(isvc)


def test_webhook_rules_on_node_selector():
    isvc = m.render_inference_service("fraud-detection", serving_with("mps"), REF)
    isvc["spec"]["predictor"]["nodeSelector"]["nvidia.com/gpu.product"] = "Tesla T4"
    with pytest.raises(m.ManifestError, match="is not a valid label value"):
        m.validate(isvc)
