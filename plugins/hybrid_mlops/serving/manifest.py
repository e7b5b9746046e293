"""KServe ``InferenceService`` manifests rendered from a model's serving spec (pure functions, no I/O).

One InferenceService per model and cluster, named after the model, so that a new version is a patch
of the same object: KServe keeps the previous revision serving while ``canaryTrafficPercent`` sends a
share of the traffic to the new one, and dropping the field promotes the new revision to 100 %.

Two predictor flavours, chosen by ``serving.runtime``:

``project`` (default)
    A custom container ``kserve-container`` running the project's predictor image
    (``python -m predictor --model-name ... --model-uri /mnt/models``), its CUDA build when
    ``serving.gpu > 0`` (:func:`predictor_image`). For a custom container KServe
    reads the model location from the container's ``STORAGE_URI`` environment variable: its storage
    initializer downloads (and unpacks) ``model.tar.gz`` into ``/mnt/models`` before the server starts.
``triton``
    ``modelFormat: onnx`` on the stock ``kserve-tritonserver`` runtime, protocol v2. KServe merges the
    runtime's container with this one (strategic merge; ``args`` are appended to the runtime's, which
    already pass ``--model-store=/mnt/models``), so the storage URI is the artifact's Triton repository
    unpacked beside ``model.tar.gz`` (:func:`triton_repository_uri`, published by the deploy operator)
    and the args only load the one model; the cpu limit is set to the request, since the runtime's
    limit (1) would otherwise sit below it.

The capture logger (``serving.logger_url``): the InferenceService's logger posts every request and
response there, so the URL must resolve to a Service. :func:`render_logger` renders that Service
(named from the URL's host) and the Deployment behind it: the predictor image running
``python -m predictor.logger_service``, which joins the two halves and writes capture files to S3.

.. seealso::
    KServe v1beta1 API: https://kserve.github.io/website/docs/reference/crd-api
    Canary rollout: https://kserve.github.io/website/docs/model-serving/predictive-inference/rollout-strategies/canary
    Inference logger: https://kserve.github.io/website/docs/model-serving/predictive-inference/logger/logger
"""

from __future__ import annotations

import copy
import json
import re
import urllib.parse
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from hybrid_mlops.settings import INCLUDE_DIR

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"

SCHEMA_PATH = INCLUDE_DIR / "kserve" / "inferenceservice-v1beta1.schema.json"

PREFIX = "hybrid-mlops.io"
LABEL_MODEL = f"{PREFIX}/model"
LABEL_VERSION = f"{PREFIX}/model-version"
LABEL_PACKAGE = f"{PREFIX}/model-package"
ANN_PACKAGE_ARN = f"{PREFIX}/model-package-arn"
ANN_STORAGE_URI = f"{PREFIX}/storage-uri"
ANN_PREVIOUS = f"{PREFIX}/previous"  # JSON of the ModelRef served before this one (rollback target)

CONTAINER_NAME = "kserve-container"
MODEL_MOUNT = "/mnt/models"
HTTP_PORT = 8080
GRPC_PORT = 8081
TRITON_RUNTIME = "kserve-tritonserver"

# The admission webhook's rules that the CRD schema does not encode.
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ISVC_NAME_MAX = 63
PREDICTOR_IMPLEMENTATIONS = (
    "model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "pmml", "lightgbm",
    "paddle", "huggingface",
)
KPA_METRICS = ("concurrency", "rps")  # Knative Pod Autoscaler; cpu/memory need Knative's HPA class


class ManifestError(ValueError):
    """A rendered manifest breaks the CRD schema or a KServe admission rule; the message lists each."""


@dataclass(frozen=True)
class ModelRef:
    """One registered model version as the serving side needs it.

    :param version: model package version number in the registry.
    :param package_arn: ``ModelPackageArn``.
    :param storage_uri: ``ModelDataUrl`` (the ``model.tar.gz`` in S3).
    """

    version: int
    package_arn: str
    storage_uri: str

    @classmethod
    def from_package(cls, package: dict) -> ModelRef:
        """From ``describe_model_package`` output (or a dict with the same keys)."""
        try:
            return cls(
                version=int(package["ModelPackageVersion"]),
                package_arn=package["ModelPackageArn"],
                storage_uri=package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],
            )
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise ManifestError(
                f"model package {package.get('ModelPackageArn', '?')!r} lacks {err}; "
                "an approved package needs ModelPackageVersion and InferenceSpecification.Containers[0].ModelDataUrl"
            ) from None

    @classmethod
    def from_dict(cls, data: dict) -> ModelRef:
        return cls(version=int(data["version"]), package_arn=data["package_arn"], storage_uri=data["storage_uri"])

    def to_dict(self) -> dict:
        return asdict(self)


def inference_service_name(model: str) -> str:
    """The InferenceService of a model: its name, which the spec already keeps DNS-safe."""
    return model


def label_value(text: str) -> str:
    """A valid label value: ``[A-Za-z0-9._-]``, alphanumeric at both ends, at most 63 characters."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text))
    return value[-63:].strip("-._")


def package_label(arn: str) -> str:
    """``arn:...:model-package/<group>/<version>`` -> ``<group>-<version>`` (ARNs are not label values)."""
    return label_value(arn.split(":model-package/", 1)[-1])


def render_inference_service(
    model: str,
    serving: Any,
    ref: ModelRef,
    *,
    canary_traffic_percent: int | None = None,
    previous: ModelRef | None = None,
    namespace: str | None = None,
    extra_labels: dict[str, str] | None = None,
) -> dict:
    """The InferenceService that serves ``ref``.

    :param model: model name (``ModelSpec.name``).
    :param serving: the model's ``ServingSpec``.
    :param ref: the version to serve.
    :param canary_traffic_percent: share of traffic for ``ref`` while the previous revision keeps the
        rest; ``None`` sends all traffic to ``ref``.
    :param previous: the version served before, kept in an annotation as the rollback target.
    :param namespace: overrides ``serving.namespace``.
    :param extra_labels: more labels (cost-allocation tags), sanitized to valid label values.
    """
    name = inference_service_name(model)
    labels = {label_value(k)[:63]: label_value(v) for k, v in (extra_labels or {}).items() if label_value(v)}
    labels.update(
        {
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/part-of": "hybrid-mlops",
            LABEL_MODEL: label_value(model),
            LABEL_VERSION: str(ref.version),
            LABEL_PACKAGE: package_label(ref.package_arn),
        }
    )
    annotations = {
        "serving.kserve.io/deploymentMode": "Serverless",  # canary traffic splitting needs Knative
        "serving.kserve.io/enable-tag-routing": "true",  # a URL per revision: smoke-test the canary alone
        ANN_PACKAGE_ARN: ref.package_arn,
        ANN_STORAGE_URI: ref.storage_uri,
    }
    if previous is not None:
        annotations[ANN_PREVIOUS] = json.dumps(previous.to_dict(), sort_keys=True)
    if serving.autoscaling_metric in KPA_METRICS:
        annotations["autoscaling.knative.dev/class"] = "kpa.autoscaling.knative.dev"
        annotations["autoscaling.knative.dev/scale-down-delay"] = f"{serving.scale_down_delay_seconds}s"
    else:
        # cpu/memory scale through Knative's HPA class, which has no scale-down delay of its own.
        annotations["autoscaling.knative.dev/class"] = "hpa.autoscaling.knative.dev"

    predictor: dict[str, Any] = {
        "minReplicas": serving.min_replicas,
        "maxReplicas": serving.max_replicas,
        "scaleMetric": serving.autoscaling_metric,
        "scaleTarget": serving.autoscaling_target,
        "serviceAccountName": serving.service_account,
    }
    if canary_traffic_percent is not None:
        predictor["canaryTrafficPercent"] = int(canary_traffic_percent)
    selector = node_selector(serving)  # serving.node_selector + the labels serving.gpu_sharing needs
    if selector:
        predictor["nodeSelector"] = selector
    if serving.tolerations:
        predictor["tolerations"] = [t.model_dump(exclude_none=True) for t in serving.tolerations]
    if serving.logger_url:
        predictor["logger"] = {"mode": "all", "url": serving.logger_url}

    resources = _resources(serving)
    if serving.runtime == "triton":
        predictor["model"] = {
            "modelFormat": {"name": "onnx"},
            "runtime": TRITON_RUNTIME,
            "protocolVersion": "v2",
            "storageUri": triton_repository_uri(ref.storage_uri),
            "args": ["--model-control-mode=explicit", f"--load-model={name}"],
            "resources": {"requests": resources["requests"],
                          "limits": {"cpu": serving.cpu_request, **resources["limits"]}},
        }
    else:
        predictor["containers"] = [
            {
                "name": CONTAINER_NAME,
                "image": predictor_image(serving),
                "command": ["python", "-m", "predictor"],
                "args": [
                    "--model-name", name,
                    "--model-uri", MODEL_MOUNT,
                    "--model-version", str(ref.version),
                    "--http-port", str(HTTP_PORT),
                    "--grpc-port", str(GRPC_PORT),
                ],
                "env": [
                    {"name": "STORAGE_URI", "value": ref.storage_uri},  # KServe mounts it at /mnt/models
                    {"name": "PROTOCOL", "value": "v2"},
                ],
                "ports": [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}],
                "readinessProbe": {
                    "httpGet": {"path": f"/v2/models/{name}/ready", "port": HTTP_PORT},
                    "periodSeconds": 5,
                },
                "resources": resources,
            }
        ]

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace or serving.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


GPU_TAG_SUFFIX = "-gpu"


def gpu_image_of(image: str) -> str:
    """The CUDA build's reference of a predictor image: its tag with ``-gpu`` appended
    (``ghcr.io/x/predictor:1.4`` -> ``ghcr.io/x/predictor:1.4-gpu``, no tag -> ``:latest-gpu``), as
    include/serving/Dockerfile tags the ``--build-arg ONNXRUNTIME=gpu`` build. A digest names one
    build, so it has no such sibling: set ``serving.gpu_image`` then."""
    if "@" in image:
        raise ManifestError(
            f"serving.image={image!r} is pinned by digest, which names the CPU build only; "
            "set serving.gpu_image to the CUDA build (e.g. its own digest) for serving.gpu > 0"
        )
    repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    return f"{repository}:{tag.removesuffix(GPU_TAG_SUFFIX)}{GPU_TAG_SUFFIX}"


def predictor_image(serving: Any) -> str:
    """The predictor image a ``serving`` spec runs: the CUDA build (``serving.gpu_image``, else
    :func:`gpu_image_of` ``serving.image``) when it reserves GPUs, the CPU build otherwise; the CPU
    onnxruntime would leave a reserved GPU idle."""
    if not serving.gpu:
        return serving.image
    return getattr(serving, "gpu_image", None) or gpu_image_of(serving.image)


def triton_repository_uri(storage_uri: str) -> str:
    """Where the Triton repository of ``model.tar.gz`` (its ``triton/`` members) is unpacked in S3."""
    return f"{storage_uri.rsplit('/', 1)[0]}/triton/"


# -- GPU sharing (serving.gpu_sharing) --------------------------------------------------------------
#
# Resource names and node labels as NVIDIA's device plugin and GPU Feature Discovery (GFD) publish
# them (github.com/NVIDIA/k8s-device-plugin; the GPU operator deploys both):
#   - MIG "mixed" strategy: one resource per MIG profile, ``nvidia.com/mig-<profile>`` with ``+``
#     replaced by ``.`` (internal/rm/rm.go AddDefaultResourcesToConfig: "mig-"+profile, ReplaceAll
#     "+" -> "."), e.g. ``nvidia.com/mig-1g.10gb``, ``nvidia.com/mig-1g.10gb.me``; GFD labels each
#     type ``nvidia.com/mig-<profile>.product = <GPU>-MIG-<profile>`` (internal/lm/resource.go).
#   - MIG "single" strategy: every MIG device is advertised as ``nvidia.com/gpu``; GFD sets
#     ``nvidia.com/mig.strategy=single`` and ``nvidia.com/gpu.product=<GPU>-MIG-<profile>``
#     (docs/gfd_labels.md); the GPU operator's MIG Manager partitions the node named by the label
#     ``nvidia.com/mig.config`` (``all-<profile>`` in its default config,
#     assets/state-mig-manager/0400_configmap.yaml of github.com/NVIDIA/gpu-operator).
#   - time-slicing and MPS: the device plugin's sharing config (``sharing.timeSlicing`` /
#     ``sharing.mps``, api/config/v1/sharing.go) advertises ``replicas`` shares of each GPU as
#     ``nvidia.com/gpu``, or as ``nvidia.com/gpu.shared`` with ``renameByDefault: true``
#     (api/config/v1/consts.go DefaultSharedResourceNameSuffix = ".shared"); GFD labels the node
#     ``nvidia.com/gpu.sharing-strategy = mps | time-slicing | none``, ``nvidia.com/gpu.replicas``
#     and, without renameByDefault, ``nvidia.com/gpu.product = <GPU>-SHARED``.
#     https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/gpu-sharing.html and
#     gpu-sharing-mps.html: MPS shares are requested one at a time (``nvidia.com/gpu: 1``), at most
#     48 replicas per GPU (Volta and newer), and MPS does not run on MIG devices.

GPU_RESOURCE = "nvidia.com/gpu"
SHARED_RESOURCE_SUFFIX = ".shared"  # renameByDefault: true
SHARED_PRODUCT_SUFFIX = "-SHARED"  # renameByDefault: false (the default)
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_GPU_REPLICAS = "nvidia.com/gpu.replicas"
LABEL_SHARING_STRATEGY = "nvidia.com/gpu.sharing-strategy"
LABEL_MIG_STRATEGY = "nvidia.com/mig.strategy"
LABEL_MIG_CONFIG = "nvidia.com/mig.config"
#: ``serving.gpu_sharing.mode`` -> the value GFD gives ``nvidia.com/gpu.sharing-strategy``.
SHARING_STRATEGY_LABEL = {"mps": "mps", "time_slicing": "time-slicing"}
MPS_MAX_REPLICAS = 48

#: MIG profiles per GPU, as NVIDIA's MIG User Guide lists them ("Supported MIG Profiles",
#: https://docs.nvidia.com/datacenter/tesla/mig-user-guide/supported-mig-profiles.html) and the GPU
#: operator's default MIG Manager config partitions them.
MIG_PROFILES: dict[str, tuple[str, ...]] = {
    "A30-24GB": ("1g.6gb", "1g.6gb+me", "2g.12gb", "2g.12gb+me", "4g.24gb"),
    "A100-40GB": ("1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100-80GB": ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-80GB": ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-94GB (NVL)": ("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"),
    "H100-96GB (GH200)": ("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb"),
    "H200-141GB": ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
}
MIG_PROFILE_NAMES = frozenset(p for profiles in MIG_PROFILES.values() for p in profiles)

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def mig_resource_name(profile: str) -> str:
    """The MIG "mixed" strategy's resource of ``profile``: ``1g.10gb+me`` -> ``nvidia.com/mig-1g.10gb.me``."""
    return "nvidia.com/mig-" + profile.replace("+", ".")


def gpu_placement(serving: Any) -> tuple[str, dict[str, str]]:
    """``(resource name, node labels)`` for the ``serving.gpu`` GPUs under ``serving.gpu_sharing``.

    No sharing (or no GPU): ``nvidia.com/gpu`` and no labels. ``mig`` mixed: ``nvidia.com/mig-<profile>``
    (the resource itself finds the nodes; ``gpu_product`` adds ``nvidia.com/mig-<profile>.product``).
    ``mig`` single: ``nvidia.com/gpu`` on nodes labelled ``nvidia.com/mig.strategy=single`` and
    ``nvidia.com/mig.config=<mig_config or all-<profile>>`` (``gpu_product`` adds
    ``nvidia.com/gpu.product=<product>-MIG-<profile>``). ``mps`` / ``time_slicing``: ``nvidia.com/gpu``
    (``nvidia.com/gpu.shared`` with ``rename_by_default``) on nodes labelled
    ``nvidia.com/gpu.sharing-strategy=mps|time-slicing``, ``replicas`` adds ``nvidia.com/gpu.replicas``
    and ``gpu_product`` adds ``nvidia.com/gpu.product`` (``-SHARED`` appended unless renamed).
    """
    sharing = getattr(serving, "gpu_sharing", None)
    if sharing is None or not serving.gpu:
        return GPU_RESOURCE, {}
    product = sharing.gpu_product
    labels: dict[str, str] = {}
    if sharing.mode == "mig":
        profile = sharing.profile
        if sharing.mig_strategy == "mixed":
            resource = mig_resource_name(profile)
            if product:
                labels[f"{resource}.product"] = f"{product}-MIG-{profile}"
        else:
            resource = GPU_RESOURCE
            labels[LABEL_MIG_STRATEGY] = "single"
            labels[LABEL_MIG_CONFIG] = sharing.mig_config or "all-" + profile.replace("+", ".")
            if product:
                labels[LABEL_GPU_PRODUCT] = f"{product}-MIG-{profile}"
    else:
        resource = GPU_RESOURCE + SHARED_RESOURCE_SUFFIX if sharing.rename_by_default else GPU_RESOURCE
        labels[LABEL_SHARING_STRATEGY] = SHARING_STRATEGY_LABEL[sharing.mode]
        if sharing.replicas:
            labels[LABEL_GPU_REPLICAS] = str(sharing.replicas)
        if product:
            labels[LABEL_GPU_PRODUCT] = product if sharing.rename_by_default else product + SHARED_PRODUCT_SUFFIX
    for key, value in labels.items():
        if len(value) > 63 or not LABEL_VALUE.match(value):
            raise ManifestError(
                f"serving.gpu_sharing: node label {key}={value!r} is not a valid label value "
                "(at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends); "
                "check gpu_product / mig_config (a +me profile cannot be pinned by product)"
            )
    return resource, labels


def node_selector(serving: Any) -> dict[str, str]:
    """``serving.node_selector`` plus the labels :func:`gpu_placement` needs; a key set to another
    value in both is refused, naming it (the pod could never be scheduled where both hold)."""
    selector = dict(serving.node_selector or {})
    _, labels = gpu_placement(serving)
    for key, value in labels.items():
        if key in selector and selector[key] != value:
            raise ManifestError(
                f"serving.node_selector[{key!r}]={selector[key]!r} contradicts serving.gpu_sharing, "
                f"which needs {key}={value!r}; drop it from node_selector"
            )
        selector[key] = value
    return selector


def _resources(serving: Any) -> dict:
    requests = {"cpu": serving.cpu_request, "memory": serving.memory_request}
    limits = {"memory": serving.memory_limit}
    if serving.gpu:
        # Extended resources: request must equal limit.
        resource, _ = gpu_placement(serving)
        requests[resource] = str(serving.gpu)
        limits[resource] = str(serving.gpu)
    return {"requests": requests, "limits": limits}


def as_patch(manifest: dict) -> dict:
    """A JSON merge patch that makes a live object match ``manifest``.

    Merge patch replaces lists whole and merges maps, so fields the manifest leaves out must be sent as
    ``null`` to be removed: ``canaryTrafficPercent`` (promote / roll back) and the previous-version
    annotation.
    """
    patch = copy.deepcopy(manifest)
    patch["spec"]["predictor"].setdefault("canaryTrafficPercent", None)
    patch["metadata"]["annotations"].setdefault(ANN_PREVIOUS, None)
    return patch


# -- the capture logger -----------------------------------------------------------------------------

LOGGER_CONTAINER = "capture-logger"
LOGGER_PORT = 8080  # the logger's --port inside the pod; the Service maps the URL's port onto it
LOGGER_HEALTH_PATH = "/healthz"  # the logger answers any GET with 200 {"status":"ok"}
LOGGER_REPLICAS = 2
LOGGER_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
#: Longer than the logger's default --capture-flush-seconds (30): SIGTERM flushes buffered capture.
LOGGER_GRACE_SECONDS = 60


@dataclass(frozen=True)
class LoggerTarget:
    """Where ``serving.logger_url`` points: a Service ``name`` in ``namespace`` on ``port``."""

    name: str
    namespace: str
    port: int


def logger_target(logger_url: str, namespace: str) -> LoggerTarget:
    """The Service ``logger_url`` names: ``http://<name>[.<namespace>[.svc[.cluster.local]]][:<port>]``.

    :param logger_url: ``serving.logger_url``.
    :param namespace: ``serving.namespace``; the logger runs there, beside the predictor and with its
        service account, so a URL naming another namespace is refused.
    """
    url = urllib.parse.urlsplit(logger_url)
    host = (url.hostname or "").lower()
    labels = host.split(".")
    where = f"serving.logger_url={logger_url!r}"
    if url.scheme != "http" or not host:
        raise ManifestError(
            f"{where} must be http://<service>.<namespace>.svc.cluster.local (the logger serves plain HTTP)"
        )
    if len(labels) > 1 and labels[2:] not in ([], ["svc"], ["svc", "cluster", "local"]):
        raise ManifestError(
            f"{where}: the host must be a Service's cluster DNS name <service>.<namespace>.svc.cluster.local"
        )
    name = labels[0]
    if not ISVC_NAME.match(name) or len(name) > ISVC_NAME_MAX:
        raise ManifestError(f"{where}: service name {name!r} must match {ISVC_NAME.pattern} (DNS-1035 label)")
    if len(labels) > 1 and labels[1] != namespace:
        raise ManifestError(
            f"{where} names namespace {labels[1]!r}, but the logger is deployed to serving.namespace={namespace!r}; "
            f"use http://{name}.{namespace}.svc.cluster.local"
        )
    try:
        port = url.port or 80
    except ValueError:
        raise ManifestError(f"{where}: the port is not a number") from None
    return LoggerTarget(name=name, namespace=namespace, port=port)


def render_logger(
    model: str,
    serving: Any,
    capture_bucket: str,
    *,
    namespace: str | None = None,
    extra_labels: dict[str, str] | None = None,
) -> tuple[dict, dict]:
    """``(Deployment, Service)`` of the capture logger that ``serving.logger_url`` points at.

    The Deployment runs ``serving.image`` as ``python -m predictor.logger_service`` under
    ``serving.service_account`` (its IAM role, through IRSA, needs ``s3:PutObject`` on
    ``capture/`` of the bucket), with a readiness probe on the logger's health path. The Service is
    named from the URL's host and maps the URL's port onto the logger's ``--port``. The logger pairs a
    request with its response in memory, so the Service pins each client (one predictor pod's logger)
    to one replica with ``sessionAffinity: ClientIP``.

    :param model: model name: the logger's ``--model-name`` for events that do not name their service.
    :param serving: the model's ``ServingSpec`` (``logger_url`` must be set).
    :param capture_bucket: the bucket the capture files go to (``--capture-bucket``).
    :param namespace: overrides ``serving.namespace``.
    :param extra_labels: more labels (cost-allocation tags), sanitized to valid label values.
    """
    if not serving.logger_url:
        raise ManifestError("serving.logger_url is not set: there is no logger to render")
    if not capture_bucket:
        raise ManifestError("the capture logger needs a capture bucket (HYBRID_MLOPS_BUCKET)")
    target = logger_target(serving.logger_url, namespace or serving.namespace)
    selector = {"app.kubernetes.io/name": target.name, "app.kubernetes.io/part-of": "hybrid-mlops"}
    labels = {label_value(k)[:63]: label_value(v) for k, v in (extra_labels or {}).items() if label_value(v)}
    labels.update(selector)
    labels["app.kubernetes.io/component"] = "capture-logger"
    metadata = {"name": target.name, "namespace": target.namespace, "labels": labels}
    container = {
        "name": LOGGER_CONTAINER,
        "image": serving.image,
        "command": ["python", "-m", "predictor.logger_service"],
        "args": [
            "--capture-bucket", capture_bucket,
            "--port", str(LOGGER_PORT),
            "--model-name", model,
        ],
        "ports": [{"name": "http", "containerPort": LOGGER_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": LOGGER_HEALTH_PATH, "port": LOGGER_PORT},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": LOGGER_HEALTH_PATH, "port": LOGGER_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 20,
        },
        "resources": copy.deepcopy(LOGGER_RESOURCES),
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": copy.deepcopy(metadata),
        "spec": {
            "replicas": LOGGER_REPLICAS,
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "serviceAccountName": serving.service_account,
                    "terminationGracePeriodSeconds": LOGGER_GRACE_SECONDS,
                    "containers": [container],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": copy.deepcopy(metadata),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "sessionAffinity": "ClientIP",
            "ports": [{"name": "http", "port": target.port, "targetPort": LOGGER_PORT, "protocol": "TCP"}],
        },
    }
    return deployment, service


def logger_errors(deployment: dict, service: dict) -> list[str]:
    """What makes a logger Deployment/Service pair unusable: kinds, names, selectors and ports."""
    errors = []
    if deployment.get("apiVersion") != "apps/v1" or deployment.get("kind") != "Deployment":
        errors.append("Deployment: apiVersion/kind must be apps/v1/Deployment")
    if service.get("apiVersion") != "v1" or service.get("kind") != "Service":
        errors.append("Service: apiVersion/kind must be v1/Service")
    for what, obj in (("Deployment", deployment), ("Service", service)):
        name = (obj.get("metadata") or {}).get("name", "")
        if not ISVC_NAME.match(name) or len(name) > ISVC_NAME_MAX:
            errors.append(f"{what}: metadata.name={name!r} must be a DNS-1035 label")
    spec = deployment.get("spec") or {}
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not match or any(template_labels.get(k) != v for k, v in match.items()):
        errors.append(
            f"Deployment: spec.selector.matchLabels {match} must be non-empty and match the pod template's labels"
        )
    svc_selector = (service.get("spec") or {}).get("selector") or {}
    if not svc_selector or any(template_labels.get(k) != v for k, v in svc_selector.items()):
        errors.append(f"Service: spec.selector {svc_selector} must be non-empty and select the Deployment's pods")
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    args = containers[0].get("args", []) if containers else []
    try:
        listen = int(args[args.index("--port") + 1])
    except (ValueError, IndexError):
        errors.append("Deployment: the logger container must be started with --port <n>")
        listen = None
    if listen is not None:
        container_ports = {p.get("containerPort") for p in containers[0].get("ports", [])}
        if listen not in container_ports:
            errors.append(f"Deployment: containerPort {sorted(container_ports)} must include --port {listen}")
        for port in (service.get("spec") or {}).get("ports") or []:
            if port.get("targetPort") != listen:
                errors.append(f"Service: targetPort {port.get('targetPort')} must be the logger's --port {listen}")
    return errors


def validate_logger(deployment: dict, service: dict) -> tuple[dict, dict]:
    """Raise :class:`ManifestError` listing every problem of the logger pair; return it."""
    errors = logger_errors(deployment, service)
    if errors:
        raise ManifestError("capture logger manifests are invalid:\n  " + "\n  ".join(errors))
    return deployment, service


def is_applied(desired: Any, live: Any) -> bool:
    """True when every field of ``desired`` has that value in ``live`` (server-added fields ignored).

    Maps compare key by key, lists element by element (same length), scalars by value: a re-apply of
    an unchanged manifest then writes nothing.
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and is_applied(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(is_applied, desired, live))
    return desired == live


# -- reading a live object ------------------------------------------------------------------------


def served_ref(isvc: dict | None) -> ModelRef | None:
    """The version an InferenceService was last told to serve (from its annotations)."""
    if not isvc:
        return None
    meta = isvc.get("metadata", {})
    ann = meta.get("annotations") or {}
    version = (meta.get("labels") or {}).get(LABEL_VERSION)
    if not (version and ann.get(ANN_PACKAGE_ARN) and ann.get(ANN_STORAGE_URI)):
        return None
    return ModelRef(version=int(version), package_arn=ann[ANN_PACKAGE_ARN], storage_uri=ann[ANN_STORAGE_URI])


def previous_ref(isvc: dict | None) -> ModelRef | None:
    """The rollback target recorded while a canary is in progress."""
    raw = ((isvc or {}).get("metadata", {}).get("annotations") or {}).get(ANN_PREVIOUS)
    return ModelRef.from_dict(json.loads(raw)) if raw else None


def canary_percent(isvc: dict | None) -> int | None:
    return ((isvc or {}).get("spec", {}).get("predictor") or {}).get("canaryTrafficPercent")


# -- validation -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def schema_errors(manifest: dict) -> list[str]:
    """Violations of the InferenceService CRD's ``openAPIV3Schema`` (JSON Schema draft 7)."""
    from jsonschema import Draft7Validator

    validator = Draft7Validator(load_schema())
    return [
        f"{'.'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}"
        for err in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    ]


def webhook_errors(manifest: dict) -> list[str]:
    """Violations of the KServe admission webhook's rules that the schema cannot express."""
    errors = []
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        errors.append(f"apiVersion/kind must be {API_VERSION}/{KIND}")
    name = (manifest.get("metadata") or {}).get("name", "")
    if not ISVC_NAME.match(name) or len(name) > ISVC_NAME_MAX:
        errors.append(
            f"metadata.name={name!r} must match {ISVC_NAME.pattern} (DNS-1035 label) "
            f"and be at most {ISVC_NAME_MAX} characters"
        )
    predictor = ((manifest.get("spec") or {}).get("predictor")) or {}
    implementations = [k for k in PREDICTOR_IMPLEMENTATIONS if predictor.get(k)]
    if predictor.get("containers"):
        implementations.append("containers")
    if len(implementations) != 1:
        errors.append(
            f"spec.predictor must have exactly one implementation (model, a framework or containers), "
            f"found {implementations or 'none'}"
        )
    low, high = predictor.get("minReplicas"), predictor.get("maxReplicas")
    if low is not None and high is not None and high != 0 and low > high:
        errors.append(f"spec.predictor.minReplicas={low} must be <= maxReplicas={high}")
    if low is not None and low < 0:
        errors.append(f"spec.predictor.minReplicas={low} must be >= 0")
    canary = predictor.get("canaryTrafficPercent")
    if canary is not None and not 0 <= canary <= 100:
        errors.append(f"spec.predictor.canaryTrafficPercent={canary} must be within 0..100")
    containers = predictor.get("containers") or []
    if containers and containers[0].get("name") != CONTAINER_NAME:
        errors.append(f"spec.predictor.containers[0].name must be {CONTAINER_NAME!r}")
    errors.extend(_pod_rule_errors(predictor))
    return errors


def _qualified_name_error(name: str) -> str | None:
    """Why ``name`` is not a Kubernetes qualified name (``[prefix/]name``: a DNS subdomain prefix of
    at most 253 characters, a name of at most 63 of ``[A-Za-z0-9._-]`` alphanumeric at both ends)."""
    prefix, _, local = name.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return f"prefix {prefix!r} is not a DNS subdomain"
    if len(local) > 63 or not LABEL_NAME.match(local):
        return f"name {local!r} must be at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends"
    return None


def _pod_rule_errors(predictor: dict) -> list[str]:
    """The API server's pod rules that the CRD schema leaves open: node selector labels must be valid
    label keys and values, and an extended resource (``nvidia.com/...``) is a whole number whose
    request equals its limit (extended resources are never overcommitted)."""
    errors = []
    for key, value in (predictor.get("nodeSelector") or {}).items():
        why = _qualified_name_error(str(key))
        if why:
            errors.append(f"spec.predictor.nodeSelector key {key!r}: {why}")
        if len(str(value)) > 63 or not LABEL_VALUE.match(str(value)):
            errors.append(f"spec.predictor.nodeSelector[{key!r}]={value!r} is not a valid label value")
    places = [(f"spec.predictor.containers[{i}]", c) for i, c in enumerate(predictor.get("containers") or [])]
    places += [(f"spec.predictor.{k}", predictor[k]) for k in PREDICTOR_IMPLEMENTATIONS
               if isinstance(predictor.get(k), dict)]
    for where, container in places:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for name in sorted(set(requests) | set(limits)):
            if "/" not in name or name.split("/", 1)[0].endswith("kubernetes.io"):
                continue  # cpu, memory, ephemeral-storage, hugepages-*: native resources
            why = _qualified_name_error(name)
            if why:
                errors.append(f"{where}.resources: extended resource {name!r}: {why}")
            if name in requests and name in limits and str(requests[name]) != str(limits[name]):
                errors.append(f"{where}.resources: {name} request {requests[name]!r} must equal its limit "
                              f"{limits[name]!r}")
            for value in (requests.get(name), limits.get(name)):
                if value is not None and not re.fullmatch(r"[0-9]+", str(value)):
                    errors.append(f"{where}.resources: {name}={value!r} must be a whole number")
    return errors


def validate(manifest: dict) -> dict:
    """Raise :class:`ManifestError` listing every schema and webhook violation; return the manifest."""
    errors = schema_errors(manifest) + webhook_errors(manifest)
    if errors:
        name = (manifest.get("metadata") or {}).get("name", "?")
        raise ManifestError(f"InferenceService {name!r} is invalid:\n  " + "\n  ".join(errors))
    return manifest
