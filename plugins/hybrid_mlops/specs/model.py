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
    entry_point: str = "train.py"
    source_dir: str = "include/training"
    image_uri: str
    instance_type: str = Field(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    instance_count: int = Field(1, ge=1, le=64)
    volume_size_gb: int = Field(50, ge=1, le=16384)
    spot: bool = True
    max_run_seconds: int = Field(4 * 3600, ge=60, le=28 * 24 * 3600)
    max_wait_seconds: int | None = Field(None, ge=60)
    checkpoint_prefix: str = "checkpoints"
    hyperparameters: dict[str, HyperValue] = Field(default_factory=dict)
    metric_definitions: list[MetricDefinition] = Field(min_length=1)
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


class DataSpec(_Spec):
    """Synthetic card-transaction data (the reference's fraud model) written as train/validation channels."""

    generator: Literal["card_transactions"] = "card_transactions"
    train_rows: int = Field(200_000, ge=1_000)
    validation_rows: int = Field(50_000, ge=1_000)
    fraud_rate: float = Field(0.02, gt=0.0, lt=0.5)
    seed: int = 7
    window_days: int = Field(30, ge=1, le=3650)


class MetricRule(_Spec):
    """Approve when the metric is >= ``approve_at``; reject when it is < ``reject_below``."""

    approve_at: Fraction
    reject_below: Fraction

    @model_validator(mode="after")
    def _ordered(self) -> MetricRule:
        if self.approve_at < self.reject_below:
            raise ValueError(
                f"approve_at={self.approve_at} must be >= reject_below={self.reject_below}; "
                "raise approve_at or lower reject_below"
            )
        return self


EVALUATION_METRICS = ("accuracy", "roc_auc", "pr_auc", "precision", "recall", "f1")


class ApprovalSpec(_Spec):
    rules: dict[str, MetricRule] = Field(min_length=1)
    human_timeout_hours: float = Field(24, gt=0, le=24 * 14)
    human_default: Literal["Approve", "Reject"] = "Reject"

    @field_validator("rules")
    @classmethod
    def _known_metrics(cls, rules: dict[str, MetricRule]) -> dict[str, MetricRule]:
        unknown = sorted(set(rules) - set(EVALUATION_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; evaluation.json has {list(EVALUATION_METRICS)}")
        return rules


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


class Toleration(_Spec):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class ServingSpec(_Spec):
    runtime: Literal["project", "triton"] = "project"
    image: str = "ghcr.io/hybrid-mlops/fraud-predictor:latest"
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

    @model_validator(mode="after")
    def _replicas(self) -> ServingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas={self.min_replicas} must be <= max_replicas={self.max_replicas}"
            )
        return self


class FeatureDrift(_Spec):
    """Per-feature overrides of the drift thresholds."""

    psi: float | None = Field(None, gt=0)
    ks_pvalue: float | None = Field(None, gt=0, lt=1)
    js: float | None = Field(None, gt=0, le=1)
    linf: float | None = Field(None, gt=0, le=1)
    completeness: Fraction | None = None


class DriftSpec(_Spec):
    psi: float = Field(0.2, gt=0)
    ks_pvalue: float = Field(0.001, gt=0, lt=1)
    js: float = Field(0.1, gt=0, le=1)
    linf: float = Field(0.1, gt=0, le=1)
    chi2_pvalue: float = Field(0.001, gt=0, lt=1)
    completeness: Fraction = 0.99
    min_window_rows: int = Field(100, ge=1)
    features: dict[str, FeatureDrift] = Field(default_factory=dict)


class CostSpec(_Spec):
    daily_budget_usd: float = Field(gt=0)
    anomaly_sigma: float = Field(3.0, gt=0)
    trailing_days: int = Field(14, ge=3, le=90)
    restate_days: int = Field(3, ge=0, le=30)
    tags: dict[str, str] = Field(default_factory=dict)


class ModelSpec(_Spec):
    """A whole model: data, training, registry, approval, serving, drift and cost."""

    name: str = Field(pattern=DNS_NAME)
    description: str = ""
    team: str = Field(min_length=1)
    environment: Literal["dev", "staging", "prod"] = "dev"
    schedule: ScheduleSpec = ScheduleSpec()
    data: DataSpec = DataSpec()
    training: TrainingSpec
    registry: RegistrySpec
    approval: ApprovalSpec
    serving: ServingSpec = ServingSpec()
    drift: DriftSpec = DriftSpec()
    cost: CostSpec

    @property
    def dag_suffix(self) -> str:
        return self.name.replace("-", "_")

    def cost_tags(self) -> dict[str, str]:
        """Cost-allocation tags the project puts on everything it creates for this model."""
        return {"model": self.name, "team": self.team, "environment": self.environment, **self.cost.tags}


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        shown = e.get("input")
        if e["type"] == "extra_forbidden":
            msg = "is not a known field (check its spelling and indentation)"
        elif e["type"] == "missing":
            msg = "is required"
        value = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(shown, dict) else f"={shown!r}"
        lines.append(f"{source}: {loc}{value}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "<spec>") -> ModelSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a mapping of sections, got {type(data).__name__}")
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_errors(source, err)) from None


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


def load_specs(directory: str | Path) -> list[ModelSpec]:
    """All model specs in a directory, sorted by name."""
    return [load_spec(p) for p in sorted(Path(directory).glob("*.yaml"))]
