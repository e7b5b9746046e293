"""The model spec: one YAML per model under ``include/models/``, validated once on load.

Every DAG of a model is generated from its spec, so a second model needs only a second YAML.
Validation errors name the file, the dotted field and the way out, e.g.::

    include/models/fraud.yaml: approval.rules.roc_auc: approve_at=0.8 must be >= reject_below=0.85 ...
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DNS_NAME = r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class SpecError(ValueError):
    """A model spec is invalid; the message names the file, the field and the fix."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricDefinition(_Spec):
    """A SageMaker metric definition: the regex is applied to the training job's log lines."""

    name: str = Field(min_length=1, max_length=255)
    regex: str = Field(min_length=1, max_length=500)

    @field_validator("regex")
    @classmethod
    def _one_group(cls, value: str) -> str:
        try:
            groups = re.compile(value).groups
        except re.error as err:
            raise ValueError(f"is not a valid regular expression ({err})") from None
        if groups != 1:
            raise ValueError(f"must have exactly one capture group for the value, found {groups}")
        return value


HyperValue = int | float | str | bool


class LocalTraining(_Spec):
    """What the ``local`` target changes for a CPU laptop run (same entry point, smaller budget)."""

    instance_count: int = Field(1, ge=1, le=4)
    hyperparameters: dict[str, HyperValue] = Field(default_factory=dict)


class TrainingSpec(_Spec):
    """The SageMaker training job. By default the project's tabular trainer (``include/training``)
    in a PyTorch DLC; or the team's own script (``source_dir`` + ``entry_point``, script mode); or
    the team's own image (``entry_point: null``: SageMaker runs the image's entry point)."""

    entry_point: str | None = "train.py"
    source_dir: str = "include/training"
    image_uri: str = Field(pattern=r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})?$")
    instance_type: str = Field(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    instance_count: int = Field(1, ge=1, le=64)
    volume_size_gb: int = Field(50, ge=1, le=16384)
    spot: bool = True
    max_run_seconds: int = Field(4 * 3600, ge=60, le=28 * 24 * 3600)
    max_wait_seconds: int | None = Field(None, ge=60)
    checkpoint_prefix: str = "checkpoints"
    hyperparameters: dict[str, HyperValue] = Field(default_factory=dict)
    metric_definitions: list[MetricDefinition] | None = Field(
        None, min_length=1, description="default: validation_<metric>=<value> lines for the task's metrics")
    local: LocalTraining = LocalTraining()

    @model_validator(mode="after")
    def _spot_wait(self) -> TrainingSpec:
        if self.spot:
            if self.max_wait_seconds is None:
                raise ValueError("max_wait_seconds is required when spot is true (SageMaker managed spot)")
            if self.max_wait_seconds < self.max_run_seconds:
                raise ValueError(
                    f"max_wait_seconds={self.max_wait_seconds} must be >= max_run_seconds="
                    f"{self.max_run_seconds}; raise max_wait_seconds or lower max_run_seconds"
                )
        elif self.max_wait_seconds is not None:
            raise ValueError("max_wait_seconds applies to spot training only; remove it or set spot: true")
        return self


#: An S3 URI; ``{bucket}`` stands for the deployment's artifacts bucket (``HYBRID_MLOPS_BUCKET``).
S3_URI = r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9]|\{bucket\})(/.*)?$"
#: Column names travel into SQL (quoted) and JSON paths: printable, no quotes.
COLUMN = r'^[^"\'\x00-\x1f]{1,128}$'


class SyntheticSource(_Spec):
    """Generated data (the demo's fraud model): a registered generator writes both channels."""

    type: Literal["synthetic"]
    generator: Literal["card_transactions"] = "card_transactions"
    rows: int = Field(200_000, ge=1_000, description="training rows (the form's default)")
    validation_rows: int = Field(50_000, ge=1_000)
    positive_rate: float = Field(0.02, gt=0.0, lt=0.5)


class S3Source(_Spec):
    """Files under an S3 prefix: Parquet or CSV (with a header row)."""

    type: Literal["s3"]
    uri: str = Field(pattern=S3_URI)
    format: Literal["parquet", "csv"] = "parquet"


class Table(_Spec):
    """A table the query names: its files on S3 (DuckDB on ``local``; a Glue table of that name on ``aws``)."""

    uri: str = Field(pattern=S3_URI)
    format: Literal["parquet", "csv"] = "parquet"


class SqlSource(_Spec):
    """An Athena/Glue SQL query (Athena on ``aws``; DuckDB over the tables' files on ``local``)."""

    type: Literal["sql"]
    query: str = Field(min_length=10)
    database: str = Field("default", pattern=r"^[a-z0-9_]{1,255}$")
    tables: dict[str, Table] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _select(self) -> SqlSource:
        if not re.match(r"^\s*(with|select)\b", self.query, re.IGNORECASE):
            raise ValueError("query must be one SELECT (or WITH ... SELECT) statement")
        return self


class FeatureStoreSource(_Spec):
    """A SageMaker Feature Store feature group: a point-in-time training set from its offline store."""

    type: Literal["feature_store"]
    feature_group: str = Field(pattern=r"^[a-zA-Z0-9]([_-]*[a-zA-Z0-9]){0,63}$")


Source = Annotated[SyntheticSource | S3Source | SqlSource | FeatureStoreSource, Field(discriminator="type")]


class DataSpec(_Spec):
    """Where the training data comes from, and how it is windowed and split into channels."""

    source: Source
    window_days: int | None = Field(30, ge=1, le=3650)
    validation_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    max_rows: int | None = Field(None, ge=100)
    seed: int = Field(7, description="seeds a synthetic source's generator")


class Feature(_Spec):
    """One input feature: numeric or categorical (an optional ``domain`` lists the expected values)."""

    type: Literal["numeric", "categorical"]
    domain: list[str] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _domain(self) -> Feature:
        if self.domain is not None and self.type != "categorical":
            raise ValueError("domain applies to categorical features only")
        return self


class SchemaSpec(_Spec):
    """The columns the model reads: an id, the label, an optional event time, the typed features."""

    id: str = Field(pattern=COLUMN)
    label: str = Field(pattern=COLUMN)
    event_time: str | None = Field(None, pattern=COLUMN)
    features: dict[str, Feature] = Field(min_length=1)
    classes: list[str] | None = Field(None, min_length=3, description="multiclass: the label values, in output order")

    @field_validator("features", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        """``amount: numeric`` is short for ``amount: {type: numeric}``."""
        if isinstance(value, dict):
            return {k: {"type": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _distinct(self) -> SchemaSpec:
        bad = [n for n in self.features if not re.match(COLUMN, n)]
        if bad:
            raise ValueError(f"features: column name(s) {bad} must be printable, without quotes")
        for role in ("id", "label", "event_time"):
            column = getattr(self, role)
            if column is not None and column in self.features:
                raise ValueError(f"{role}={column!r} is also listed under features; a column has one role")
        if self.event_time is not None and self.event_time in (self.id, self.label):
            raise ValueError(f"event_time={self.event_time!r} must differ from id and label")
        if self.id == self.label:
            raise ValueError(f"id and label are both {self.id!r}; they must be different columns")
        return self

    @property
    def numeric(self) -> list[str]:
        return [n for n, f in self.features.items() if f.type == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [n for n, f in self.features.items() if f.type == "categorical"]


Task = Literal["binary", "multiclass", "regression"]
#: Metrics ``evaluation.json`` carries per task, and their direction (+1 higher is better, -1 lower).
TASK_METRICS: dict[str, dict[str, int]] = {
    "binary": {"accuracy": 1, "roc_auc": 1, "pr_auc": 1, "precision": 1, "recall": 1, "f1": 1, "log_loss": -1},
    "multiclass": {"accuracy": 1, "macro_f1": 1, "weighted_f1": 1, "log_loss": -1},
    "regression": {"mae": -1, "rmse": -1, "r2": 1},
}


class MetricRule(_Spec):
    """One metric's approval band, in the metric's direction.

    Higher is better (accuracy, ROC AUC, R²...): approve at ``>= approve_at``, reject ``< reject_below``.
    Lower is better (RMSE, MAE, log loss): approve at ``<= approve_at``, reject ``> reject_above``.
    """

    approve_at: float
    reject_below: float | None = None
    reject_above: float | None = None

    @model_validator(mode="after")
    def _one_floor(self) -> MetricRule:
        if (self.reject_below is None) == (self.reject_above is None):
            raise ValueError("give exactly one of reject_below (higher is better) or reject_above (lower is better)")
        if self.reject_below is not None and self.approve_at < self.reject_below:
            raise ValueError(
                f"approve_at={self.approve_at} must be >= reject_below={self.reject_below}; "
                "raise approve_at or lower reject_below"
            )
        if self.reject_above is not None and self.approve_at > self.reject_above:
            raise ValueError(
                f"approve_at={self.approve_at} must be <= reject_above={self.reject_above}; "
                "lower approve_at or raise reject_above"
            )
        return self

    @property
    def direction(self) -> int:
        return 1 if self.reject_below is not None else -1


class ApprovalSpec(_Spec):
    rules: dict[str, MetricRule] = Field(min_length=1)
    human_timeout_hours: float = Field(24, gt=0, le=24 * 14)
    human_default: Literal["Approve", "Reject"] = "Reject"
    #: The lifecycle stage (ModelLifeCycle.Stage) an approval, by the rules or a person, moves a version to.
    stage_on_approval: Literal["staging", "prod"] = "staging"


class RegistrySpec(_Spec):
    model_package_group: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    description: str = ""
    inference_image: str
    content_types: list[str] = ["application/json"]
    response_types: list[str] = ["application/json"]
    realtime_instance_types: list[str] = ["ml.g5.xlarge"]


class ScheduleSpec(_Spec):
    retrain: str | None = "0 3 * * *"
    monitor: str | None = "@hourly"
    drift_retrain_cooldown_hours: float = Field(12, ge=0)
    #: ``batch_score_<model>``: Batch Transform of ``batch.input_uri`` on this cron (null: on demand only).
    batch_score: str | None = None

    @field_validator("retrain", "monitor", "batch_score")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not _valid_cron(value):
            raise ValueError(
                "is not a cron expression (5 fields, e.g. '0 3 * * *') or a preset "
                f"({', '.join(sorted(CRON_PRESETS))}); use null for no schedule"
            )
        return value


CRON_PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0",
                "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@midnight": "0 0 * * *"}


def _valid_cron(expr: str) -> bool:
    """What Airflow's ``CronTriggerTimetable`` accepts: a preset or a 5-field cron croniter can expand."""
    from croniter import croniter

    expr = CRON_PRESETS.get(expr, expr)
    return len(expr.split()) == 5 and croniter.is_valid(expr)


class Toleration(_Spec):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


GPU_SHARING_MODES = ("mig", "mps", "time_slicing")


class GpuSharing(_Spec):
    """``serving.gpu_sharing``: the predictor gets a share of a GPU instead of a whole one.

    ``mig``: a MIG slice, ``profile`` one of the MIG User Guide's (``1g.10gb``...), through the device
    plugin's ``mixed`` (``nvidia.com/mig-<profile>``, default) or ``single`` strategy (``nvidia.com/gpu``
    on nodes partitioned by MIG Manager config ``mig_config``, default ``all-<profile>``).
    ``mps`` / ``time_slicing``: one of the ``replicas`` shares the device plugin's sharing config makes
    of each GPU (``nvidia.com/gpu``, or ``nvidia.com/gpu.shared`` when the cluster sets
    ``renameByDefault: true``: ``rename_by_default``). ``gpu_product`` (GFD's ``nvidia.com/gpu.product``
    of the whole GPU, e.g. ``NVIDIA-A100-SXM4-80GB``) pins the GPU model. Rendered by
    :func:`hybrid_mlops.serving.manifest.gpu_placement`.
    """

    mode: Literal["mig", "mps", "time_slicing"]
    profile: str | None = None
    mig_strategy: Literal["mixed", "single"] = "mixed"
    mig_config: str | None = Field(None, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
    replicas: int | None = Field(None, ge=2)
    rename_by_default: bool = False
    gpu_product: str | None = Field(None, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str | None) -> str | None:
        from hybrid_mlops.serving.manifest import MIG_PROFILE_NAMES, MIG_PROFILES

        if value is not None and value not in MIG_PROFILE_NAMES:
            listed = "; ".join(f"{gpu}: {', '.join(p)}" for gpu, p in MIG_PROFILES.items())
            raise ValueError(f"is not a MIG profile of the NVIDIA MIG User Guide ({listed})")
        return value

    @field_validator("gpu_product")
    @classmethod
    def _bare_product(cls, value: str | None) -> str | None:
        if value is not None and (value.endswith("-SHARED") or "-MIG-" in value):
            raise ValueError("give the whole GPU's product name (e.g. NVIDIA-A100-SXM4-80GB); "
                             "the -MIG-<profile> / -SHARED suffixes are added for the mode")
        return value

    @model_validator(mode="after")
    def _fields_of_mode(self) -> GpuSharing:
        given = self.model_fields_set
        if self.mode == "mig":
            if self.profile is None:
                raise ValueError("profile: is required for mode 'mig' (a MIG profile, e.g. 1g.10gb)")
            wrong = sorted(given & {"replicas", "rename_by_default"})
            if wrong:
                raise ValueError(f"{', '.join(wrong)}: only for mode 'mps' or 'time_slicing', not 'mig' "
                                 "(a MIG slice is not replicated)")
            if self.mig_config is not None and self.mig_strategy != "single":
                raise ValueError("mig_config: applies to mig_strategy 'single' only (the node's "
                                 "nvidia.com/mig.config label)")
            return self
        wrong = sorted(given & {"profile", "mig_strategy", "mig_config"})
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: only for mode 'mig', not {self.mode!r}"
                             + (" (MPS does not run on MIG devices)" if self.mode == "mps" else ""))
        if self.mode == "mps" and self.replicas is not None and self.replicas > 48:
            raise ValueError(f"replicas={self.replicas}: MPS makes at most 48 replicas of a GPU")
        return self


#: An ECR image (SageMaker hosting and Batch Transform pull only from ECR).
ECR_IMAGE = r"^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})?$"
SAGEMAKER_INSTANCE = r"^ml\.[a-z0-9-]+\.[a-z0-9]+$"


class SageMakerServing(_Spec):
    """``serving.sagemaker``: the real-time endpoint of ``serving.target: sagemaker``.

    ``image`` is the project's predictor (include/serving/Dockerfile) pushed to ECR; SageMaker runs it
    as ``<image> serve``. Updates are blue/green: a canary of ``serving.canary_traffic_percent`` of the
    instances (all at once with one instance) baked ``canary_wait_seconds`` under two CloudWatch alarms
    (5XX errors, p99 model latency) that roll it back; target-tracking autoscaling keeps
    ``invocations_per_instance`` between ``min_instances`` and ``max_instances``.
    """

    image: str | None = Field(None, pattern=ECR_IMAGE)
    instance_type: str = Field("ml.m5.xlarge", pattern=SAGEMAKER_INSTANCE)
    min_instances: int = Field(2, ge=1, le=100)
    max_instances: int = Field(4, ge=1, le=100)
    #: Target of SageMakerVariantInvocationsPerInstance (invocations per instance per minute).
    invocations_per_instance: float = Field(1000, gt=0)
    scale_in_cooldown_seconds: int = Field(300, ge=0, le=86400)
    scale_out_cooldown_seconds: int = Field(60, ge=0, le=86400)
    canary_wait_seconds: int = Field(300, ge=0, le=3600)
    termination_wait_seconds: int = Field(120, ge=0, le=3600)
    max_update_seconds: int = Field(3600, ge=600, le=28800)
    #: Invocation5XXErrors in one minute that roll an update back.
    alarm_5xx_errors: int = Field(1, ge=1)
    #: p99 ModelLatency (milliseconds) over one minute that rolls an update back.
    alarm_latency_ms: float = Field(500, gt=0)
    capture_sampling_percent: int = Field(100, ge=0, le=100)

    @model_validator(mode="after")
    def _instances(self) -> SageMakerServing:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances={self.min_instances} must be <= max_instances={self.max_instances}")
        return self


class ServingSpec(_Spec):
    #: Where an approved version serves: KServe on EKS, or a SageMaker real-time endpoint (``sagemaker``).
    target: Literal["kserve", "sagemaker"] = "kserve"
    sagemaker: SageMakerServing = SageMakerServing()
    runtime: Literal["project", "triton"] = "project"
    image: str = "ghcr.io/hybrid-mlops/predictor:latest"
    #: The CUDA build of ``image`` (onnxruntime-gpu), served when ``gpu > 0``; unset: ``image`` with
    #: ``-gpu`` appended to its tag (include/serving/Dockerfile builds both).
    gpu_image: str | None = None
    regions: list[str] = Field(["us-west-2"], min_length=1)
    cluster_name: str = "mlops-{region}"
    namespace: str = Field("models", pattern=DNS_NAME)
    service_account: str = "kserve-models"
    gpu: int = Field(1, ge=0, le=8)
    cpu_request: str = Field("2", pattern=QUANTITY)
    memory_request: str = Field("8Gi", pattern=QUANTITY)
    memory_limit: str = Field("16Gi", pattern=QUANTITY)
    min_replicas: int = Field(2, ge=0)
    max_replicas: int = Field(10, ge=1)
    autoscaling_metric: Literal["concurrency", "rps", "cpu", "memory"] = "concurrency"
    autoscaling_target: int = Field(70, ge=1)
    scale_down_delay_seconds: int = Field(300, ge=0)
    canary_traffic_percent: int = Field(10, ge=1, le=99)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    logger_url: str | None = None
    ready_timeout_seconds: int = Field(900, ge=10)
    #: How the deploy's smoke test reaches the new revision: ``api_proxy`` through the Kubernetes API
    #: server's service proxy (works from a worker outside a private cluster), ``url`` at the
    #: InferenceService's own URL (only when the worker can reach it).
    smoke_via: Literal["api_proxy", "url"] = "api_proxy"
    #: When a deploy archives the prod version it replaced everywhere, also remove what still serves it:
    #: KServe: the rollback target and the previous Knative revision of the one InferenceService; local:
    #: the old predictor (if still running) and its unpacked model. Off: kept for a manual rollback.
    remove_archived: bool = False
    #: A share of one GPU (MIG slice, MPS or time-slicing replica) instead of whole GPUs; ``None``
    #: (or ``none``): whole GPUs. A mode alone may be written as a string: ``gpu_sharing: time_slicing``.
    gpu_sharing: GpuSharing | None = None

    @field_validator("gpu_sharing", mode="before")
    @classmethod
    def _sharing_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return None if value.lower() == "none" else {"mode": value}
        return value

    @model_validator(mode="after")
    def _replicas(self) -> ServingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas={self.min_replicas} must be <= max_replicas={self.max_replicas}"
            )
        return self

    @model_validator(mode="after")
    def _sagemaker_target(self) -> ServingSpec:
        if self.target != "sagemaker":
            return self
        if self.sagemaker.image is None:
            raise ValueError("sagemaker.image: is required for target 'sagemaker' (the predictor image in ECR, "
                             "e.g. 123456789012.dkr.ecr.us-west-2.amazonaws.com/hybrid-mlops-predictor:1.0)")
        if len(self.regions) != 1:
            raise ValueError(f"regions={self.regions}: target 'sagemaker' serves one region (SageMaker reads "
                             "ModelDataUrl only from a bucket in the endpoint's own region); list one")
        if self.runtime != "project":
            raise ValueError(f"runtime={self.runtime!r}: target 'sagemaker' serves the project's predictor only")
        return self

    @model_validator(mode="after")
    def _gpu_share(self) -> ServingSpec:
        sharing = self.gpu_sharing
        if sharing is None:
            return self
        if self.gpu == 0:
            raise ValueError(f"gpu_sharing (mode {sharing.mode!r}) needs gpu: 1, but gpu is 0 (CPU serving); "
                             "set gpu: 1 or remove gpu_sharing")
        if self.gpu > 1:
            why = {"mig": "CUDA uses one MIG device per process, so a second slice would sit idle",
                   "mps": "the device plugin hands out MPS shares one per container",
                   "time_slicing": "more time-sliced replicas buy no more compute (and fail where the "
                                   "cluster sets failRequestsGreaterThanOne)"}[sharing.mode]
            raise ValueError(f"gpu={self.gpu} with gpu_sharing mode {sharing.mode!r}: request one share "
                             f"(gpu: 1); {why}")
        from hybrid_mlops.serving.manifest import ManifestError, node_selector

        try:
            node_selector(self)
        except ManifestError as err:
            raise ValueError(str(err).removeprefix("serving.")) from None
        return self


class BatchSpec(_Spec):
    """``batch``: ``batch_score_<model>`` scores files under an S3 prefix with an approved version
    (Batch Transform on ``aws``, the predictor in batches on ``local``). Input: JSON lines (an object
    per line with the id and the features) or CSV (no header: the id, the numeric features, then the
    categorical ones, in ``schema.features`` order). The form's defaults come from here."""

    input_uri: str | None = Field(None, pattern=S3_URI)
    #: Scores go under ``<output_uri>/<run>/``; default ``s3://<bucket>/batch-scores/<model>``.
    output_uri: str | None = Field(None, pattern=S3_URI)
    content_type: Literal["application/jsonlines", "text/csv"] = "application/jsonlines"
    instance_type: str = Field("ml.m5.xlarge", pattern=SAGEMAKER_INSTANCE)
    instance_count: int = Field(1, ge=1, le=100)
    max_payload_mb: int = Field(6, ge=1, le=100)
    max_runtime_seconds: int = Field(6 * 3600, ge=60)


class FeatureDrift(_Spec):
    """Per-feature overrides of the drift thresholds."""

    psi: float | None = Field(None, gt=0)
    ks_pvalue: float | None = Field(None, gt=0, lt=1)
    js: float | None = Field(None, gt=0, le=1)
    linf: float | None = Field(None, gt=0, le=1)
    completeness: Fraction | None = None


class BiasDrift(_Spec):
    """``drift.bias``: Model Monitor's bias drift of one facet (SageMaker Clarify's metrics, see drift/bias.py).

    The facet's group ``d`` is ``facet_values`` (a categorical feature) or ``> facet_threshold`` (a
    numeric one); the positive outcome is ``label_values`` or ``> label_threshold``. A metric is a
    violation when it lies farther from its ideal (0; 1 for DI) than the baseline's (the version's
    validation data) by more than ``tolerance``, or past ``thresholds[metric]`` when given.
    """

    facet: str = Field(min_length=1)
    facet_values: list[str | int | float] | None = Field(None, min_length=1)
    facet_threshold: float | None = None
    label_values: list[str | int | float] | None = Field(None, min_length=1)
    label_threshold: float | None = None
    group: str | None = Field(None, description="feature whose groups condition CDDL / CDDPL")
    metrics: list[str] = Field(default_factory=lambda: ["CI", "DPL", "KL", "JS", "LP", "TVD", "KS", "DPPL", "DI",
                                                        "DCAcc", "DCR", "RD", "SD", "DAR", "DRR", "AD", "TE", "GE"])
    tolerance: float = Field(0.1, ge=0)
    thresholds: dict[str, float] = Field(default_factory=dict)
    min_labelled_rows: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _choices(self) -> BiasDrift:
        from hybrid_mlops.drift.bias_metrics import POST_TRAINING, PRE_TRAINING

        if (self.facet_values is None) == (self.facet_threshold is None):
            raise ValueError("give exactly one of facet_values (a categorical facet) and facet_threshold (numeric)")
        if self.label_values is not None and self.label_threshold is not None:
            raise ValueError("give at most one of label_values and label_threshold")
        known = [*PRE_TRAINING, *POST_TRAINING]
        for field, names in (("metrics", self.metrics), ("thresholds", list(self.thresholds))):
            unknown = [m for m in names if m not in known]
            if unknown:
                raise ValueError(f"{field}: {unknown} are not bias metrics; use any of {known}")
        if any(m in ("CDDL", "CDDPL") for m in self.metrics) and self.group is None:
            raise ValueError("metrics CDDL / CDDPL need group (the feature that conditions them)")
        return self


class FeatureAttributionDrift(_Spec):
    """``drift.feature_attribution``: Model Monitor's feature attribution drift (SHAP, compared by nDCG).

    Kernel SHAP runs where the model runs (include/monitoring/attributions.py in the serving env: a
    subprocess on ``local``, a SageMaker Processing job on ``aws``): ``samples`` rows of each window
    (and of the validation data for the baseline) explained against ``baseline_row`` (default: the
    validation data's medians / modes); exact Shapley values up to ``exact_max_features`` features,
    else Kernel SHAP with ``num_samples`` coalitions.
    """

    ndcg_threshold: Fraction = 0.9
    samples: int = Field(200, ge=10, le=100_000)
    num_samples: int = Field(2048, ge=64, le=1_000_000)
    exact_max_features: int = Field(12, ge=1, le=16)
    baseline_row: dict[str, str | int | float] | None = None
    processing_instance_type: str = Field("ml.m5.xlarge", pattern=r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
    processing_image_uri: str | None = Field(
        None, description="the serving image by default (it has onnxruntime); on aws an ECR image (SageMaker "
                          "Processing pulls only from ECR): push the predictor image there")


class DriftSpec(_Spec):
    psi: float = Field(0.2, gt=0)
    ks_pvalue: float = Field(0.001, gt=0, lt=1)
    js: float = Field(0.1, gt=0, le=1)
    linf: float = Field(0.1, gt=0, le=1)
    chi2_pvalue: float = Field(0.001, gt=0, lt=1)
    completeness: Fraction = 0.99
    min_window_rows: int = Field(100, ge=1)
    features: dict[str, FeatureDrift] = Field(default_factory=dict)
    external_report_prefix: str | None = Field(
        None, pattern=S3_URI, description="watch an external Model Monitor schedule's output and retrain on it")
    bias: BiasDrift | None = None
    feature_attribution: FeatureAttributionDrift | None = None


class CostSpec(_Spec):
    daily_budget_usd: float = Field(gt=0)
    anomaly_sigma: float = Field(3.0, gt=0)
    trailing_days: int = Field(14, ge=3, le=90)
    restate_days: int = Field(3, ge=0, le=30)
    tags: dict[str, str] = Field(default_factory=dict)


ACCOUNT_ID = r"^[0-9]{12}$"
AWS_REGION = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$"


class PromotionSpec(_Spec):
    """``promotion``: where ``promote_<model>`` copies an Approved version: another AWS account's registry
    and bucket, reached by assuming ``role_arn`` there (``sts:AssumeRole`` from the Airflow connection).

    The KMS key and the role must be in ``account_id`` (and the key in ``region``): the copies are
    written as that account's role and encrypted with its key.
    """

    account_id: str = Field(pattern=ACCOUNT_ID, description="the prod account")
    region: str = Field(pattern=AWS_REGION, description="the prod registry's and bucket's region")
    role_arn: str = Field(pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]{1,576}$")
    #: sts:AssumeRole ExternalId, when the prod role's trust policy requires one.
    external_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_+=,.@:/-]{2,1224}$")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    #: The prod KMS key (SSE-KMS of the copies): a key or alias ARN, never a bare id (another account's).
    kms_key_arn: str = Field(pattern=r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key/[a-zA-Z0-9-]{1,128}|alias/[a-zA-Z0-9/_-]{1,250})$")
    #: The prod package group; default: the same name as ``registry.model_package_group``.
    model_package_group: str | None = Field(None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    #: The lifecycle stage (ModelLifeCycle.Stage) a promoted version gets in prod: the form's default.
    stage: Literal["staging", "prod"] = "staging"
    #: How long the promotion waits for a person; no answer rejects it.
    approval_timeout_hours: float = Field(24, gt=0, le=24 * 14)

    @model_validator(mode="after")
    def _same_account(self) -> PromotionSpec:
        role_account = self.role_arn.split(":")[4]
        if role_account != self.account_id:
            raise ValueError(f"role_arn: {self.role_arn!r} is a role of account {role_account}, not of "
                             f"promotion.account_id={self.account_id!r}; give the role to assume in the prod account")
        _, _, _, key_region, key_account, _ = self.kms_key_arn.split(":", 5)
        if key_account != self.account_id:
            raise ValueError(f"kms_key_arn: the key is in account {key_account}, not promotion.account_id="
                             f"{self.account_id!r}; use a key of the prod account")
        if key_region != self.region:
            raise ValueError(f"kms_key_arn: the key is in region {key_region}, not promotion.region={self.region!r} "
                             "(SSE-KMS needs a key in the bucket's region)")
        return self


class ModelSpec(_Spec):
    """A whole model: task, schema, data, training, registry, approval, serving, drift and cost."""

    name: str = Field(pattern=DNS_NAME)
    description: str = ""
    team: str = Field(min_length=1)
    environment: Literal["dev", "staging", "prod"] = "dev"
    task: Task
    schema_: SchemaSpec = Field(alias="schema")
    schedule: ScheduleSpec = ScheduleSpec()
    data: DataSpec
    training: TrainingSpec
    registry: RegistrySpec
    approval: ApprovalSpec
    serving: ServingSpec = ServingSpec()
    batch: BatchSpec = BatchSpec()
    drift: DriftSpec = DriftSpec()
    cost: CostSpec
    #: Cross-account promotion of Approved versions (``promote_<model>``); none: no promote DAG.
    promotion: PromotionSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        metrics = TASK_METRICS[self.task]
        for name, rule in self.approval.rules.items():
            if name not in metrics:
                raise ValueError(f"approval.rules.{name}: unknown metric for task {self.task!r}; "
                                 f"evaluation.json has {list(metrics)}")
            if rule.direction != metrics[name]:
                want, got = ("reject_below", "reject_above") if metrics[name] > 0 else ("reject_above", "reject_below")
                better = "higher" if metrics[name] > 0 else "lower"
                raise ValueError(f"approval.rules.{name}: {better} is better for {name}; use {want} instead of {got}")
        if self.task == "multiclass" and self.schema_.classes is None:
            raise ValueError("schema.classes: is required for task 'multiclass' (the label values, in output order)")
        if self.task != "multiclass" and self.schema_.classes is not None:
            raise ValueError(f"schema.classes: applies to task 'multiclass' only, not {self.task!r}")
        unknown = sorted(set(self.drift.features) - set(self.schema_.features))
        if unknown:
            raise ValueError(f"drift.features: {unknown} are not features of schema.features")
        if (bias := self.drift.bias) is not None:
            for field in ("facet", "group"):
                column = getattr(bias, field)
                if column is not None and column not in self.schema_.features:
                    raise ValueError(f"drift.bias.{field}={column!r}: is not a feature of schema.features "
                                     f"{list(self.schema_.features)}")
            kind = self.schema_.features[bias.facet].type
            if bias.facet_threshold is not None and kind != "numeric":
                raise ValueError(f"drift.bias.facet_threshold: facet {bias.facet!r} is {kind}; use facet_values")
            if bias.label_values is None and bias.label_threshold is None and self.task != "binary":
                raise ValueError(f"drift.bias.label_values: is required for task {self.task!r} "
                                 "(or label_threshold for regression)")
            if bias.label_threshold is not None and self.task != "regression":
                raise ValueError(f"drift.bias.label_threshold: applies to regression; task {self.task!r} "
                                 "takes label_values")
        if (fa := self.drift.feature_attribution) is not None and fa.baseline_row:
            unknown = sorted(set(fa.baseline_row) - set(self.schema_.features))
            if unknown:
                raise ValueError(f"drift.feature_attribution.baseline_row: {unknown} are not features of "
                                 "schema.features")
        if self.schedule.batch_score and not self.batch.input_uri:
            raise ValueError("batch.input_uri: is required when schedule.batch_score is set (the prefix to score)")
        if isinstance(self.data.source, SyntheticSource) and self.task != "binary":
            raise ValueError(f"data.source: the {self.data.source.generator} generator makes a binary task, "
                             f"not {self.task!r}")
        return self

    @property
    def dag_suffix(self) -> str:
        return self.name.replace("-", "_")

    @property
    def data_schema(self) -> SchemaSpec:
        """The ``schema`` section (``schema`` itself is a reserved name on pydantic models)."""
        return self.schema_

    def metric_definitions(self) -> list[dict]:
        """SageMaker ``MetricDefinitions``: the spec's, or one per task metric for the project's trainer."""
        if self.training.metric_definitions:
            return [{"Name": m.name, "Regex": m.regex} for m in self.training.metric_definitions]
        losses = [{"Name": f"{part}:loss", "Regex": f"{part}_loss=([-+0-9.eE]+)"} for part in ("train", "validation")]
        return losses + [{"Name": f"validation:{m}", "Regex": f"validation_{m}=([-+0-9.eE]+|nan)"}
                         for m in TASK_METRICS[self.task]]

    def cost_tags(self) -> dict[str, str]:
        """Cost-allocation tags the project puts on everything it creates for this model."""
        return {"model": self.name, "team": self.team, "environment": self.environment, **self.cost.tags}


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        shown = e.get("input")
        if e["type"] == "extra_forbidden":
            msg = "is not a known field (check its spelling and indentation)"
        elif e["type"] == "missing":
            msg = "is required"
        elif e["type"] == "union_tag_invalid":
            msg = f"type={e['ctx']['tag']!r} is not a source type; use one of {e['ctx']['expected_tags']}"
        if not loc:  # a whole-spec check names its own field
            lines.append(f"{source}: {msg}")
            continue
        value = "" if e["type"] in ("missing", "extra_forbidden", "union_tag_invalid") or isinstance(shown, dict) \
            else f"={shown!r}"
        lines.append(f"{source}: {loc}{value}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "<spec>") -> ModelSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a mapping of sections, got {type(data).__name__}")
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_errors(source, err)) from None


SPEC_SUFFIXES = (".yaml", ".yml")


def load_spec(path: str | Path) -> ModelSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    spec = parse_spec(data, str(path))
    if spec.name != path.stem:
        raise SpecError(f"{path}: name={spec.name!r} must match the file name {path.stem!r}")
    return spec


def spec_files(directory: str | Path) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file()) \
        if Path(directory).is_dir() else []


def load_all(directory: str | Path) -> tuple[list[ModelSpec], dict[str, SpecError]]:
    """Every spec that loads, and ``{file: error}`` for those that don't: one bad file never hides another.

    Names and package groups must be unique: of two files that claim one, the later (by file name)
    is refused, naming the earlier.
    """
    good: list[ModelSpec] = []
    errors: dict[str, SpecError] = {}
    claimed: dict[tuple[str, str], Path] = {}
    for path in spec_files(directory):
        try:
            spec = load_spec(path)
            for field, value in (("name", spec.name), ("registry.model_package_group", spec.registry.model_package_group)):
                if (field, value) in claimed:
                    raise SpecError(f"{path}: {field}={value!r} is already used by {claimed[(field, value)]}; "
                                    "each model needs its own")
        except SpecError as err:
            errors[str(path)] = err
            continue
        claimed[("name", spec.name)] = path
        claimed[("registry.model_package_group", spec.registry.model_package_group)] = path
        good.append(spec)
    return sorted(good, key=lambda s: s.name), errors


def load_specs(directory: str | Path) -> list[ModelSpec]:
    """All model specs in a directory, sorted by name; raises on the first invalid one (strict callers)."""
    specs, errors = load_all(directory)
    if errors:
        raise SpecError("\n".join(str(e) for e in errors.values()))
    return specs
