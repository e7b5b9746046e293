"""The work behind the retrain DAG's Python tasks (kept out of the DAG module so parsing stays cheap)."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from hybrid_mlops import layout, naming, settings
from hybrid_mlops.specs import ModelSpec

log = logging.getLogger(__name__)
ONNX_TOLERANCE = 1e-5  # ONNX and PyTorch must agree this closely on the validation rows


def _s3():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=settings.aws_conn_id())


def _run_key(context) -> str:
    return naming.run_key(context["dag"].dag_id, context["run_id"])


def _seed(spec: ModelSpec, key: str, channel: int) -> int:
    import hashlib

    return (spec.data.seed * 1_000_003 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) + channel) % 2**32


def prepare_data(spec: ModelSpec, context) -> dict:
    """Write the train/validation channels and the source bundle; reuse them on a retry."""
    from hybrid_mlops.data.generator import generate, oracle_auc, to_arrow
    from hybrid_mlops.drift.cooldown import triggering_drift_report
    from hybrid_mlops.training_bundle import build_source_bundle

    import pyarrow.parquet as pq

    s3, bucket, key = _s3(), settings.bucket(), _run_key(context)
    if settings.is_local() and not s3.check_for_bucket(bucket):
        s3.create_bucket(bucket, region_name=settings.region())
    prefix = layout.data_prefix(bucket, spec.name, key)
    rows = {"train": int(context["params"]["train_rows"]), "validation": spec.data.validation_rows}
    channels, oracle = {}, None
    for i, (channel, n) in enumerate(rows.items()):
        uri = f"{prefix}/{channel}/part-0.parquet"
        channels[channel] = f"{prefix}/{channel}/"
        b, k = s3.parse_s3_url(uri)
        if s3.check_for_key(k, b):
            log.info("Channel %s already written by an earlier try: %s", channel, uri)
            continue
        data = generate(n, seed=_seed(spec, key, i), fraud_rate=spec.data.fraud_rate, id_prefix=f"{key}-{channel}")
        if channel == "validation":
            oracle = oracle_auc(data)
        buf = io.BytesIO()
        pq.write_table(to_arrow(data), buf)
        s3.load_bytes(buf.getvalue(), k, b, replace=True)
        log.info("Channel %s: %d rows (%.1f%% fraud) -> %s", channel, n, 100 * data["label"].mean(), uri)
    code = layout.code_uri(bucket, spec.name, key)
    b, k = s3.parse_s3_url(code)
    s3.load_bytes(build_source_bundle(spec.training.source_dir), k, b, replace=True)
    report = triggering_drift_report(context.get("triggering_asset_events"), spec.name)
    return {"run_key": key, "train_uri": channels["train"], "validation_uri": channels["validation"],
            "code_uri": code, "rows": rows, "oracle_roc_auc": oracle, "drift_report": report}


def training_config(spec: ModelSpec, prepared: dict, context) -> dict:
    """``CreateTrainingJob`` for this run: spec, target overrides, then the form's params."""
    t, params, local = spec.training, context["params"], settings.is_local()
    hp: dict[str, Any] = {**t.hyperparameters, **(t.local.hyperparameters if local else {})}
    for param, name in (("epochs", "epochs"), ("learning_rate", "learning-rate"), ("batch_size", "batch-size")):
        if params.get(param) is not None:
            hp[name] = params[param]
    count = params.get("instance_count") or (t.local.instance_count if local else t.instance_count)
    spot = bool(params.get("spot", t.spot))
    bucket, key = settings.bucket(), prepared["run_key"]
    hyperparameters = {k: json.dumps(v) for k, v in hp.items()}
    hyperparameters.update(
        {"model-name": json.dumps(spec.name), "sagemaker_program": json.dumps(t.entry_point),
         "sagemaker_submit_directory": json.dumps(prepared["code_uri"]),
         "sagemaker_region": json.dumps(settings.region())}
    )

    def channel(name: str) -> dict:
        return {"ChannelName": name, "ContentType": "application/x-parquet", "InputMode": "File",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": prepared[f"{name}_uri"],
                                                "S3DataDistributionType": "FullyReplicated"}}}

    stopping = {"MaxRuntimeInSeconds": t.max_run_seconds}
    if spot:
        stopping["MaxWaitTimeInSeconds"] = t.max_wait_seconds or t.max_run_seconds
    tags = {**spec.cost_tags(), "run-key": key}
    return {
        "TrainingJobName": naming.training_job_name(spec.name, key),
        "AlgorithmSpecification": {
            "TrainingImage": t.image_uri, "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": m.name, "Regex": m.regex} for m in t.metric_definitions],
        },
        "RoleArn": settings.sagemaker_role_arn(),
        "HyperParameters": hyperparameters,
        "InputDataConfig": [channel("train"), channel("validation")],
        "OutputDataConfig": {"S3OutputPath": layout.model_output_path(bucket, spec.name)},
        "ResourceConfig": {"InstanceType": params.get("instance_type") or t.instance_type,
                           "InstanceCount": int(count), "VolumeSizeInGB": t.volume_size_gb},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": spot,
        "CheckpointConfig": {"S3Uri": layout.checkpoint_uri(bucket, t.checkpoint_prefix, spec.name, key),
                             "LocalPath": "/opt/ml/checkpoints"},
        "Tags": [{"Key": k, "Value": str(v)} for k, v in tags.items()],
    }


def evaluate(spec: ModelSpec, training: dict, prepared: dict, context) -> dict:
    """Evaluation and baseline out of ``model.tar.gz``, published beside it as ``ModelMetrics``."""
    from airflow.sdk.exceptions import AirflowFailException

    from hybrid_mlops.drift.cooldown import lineage_metadata
    from hybrid_mlops.hooks.artifacts import ModelArtifactHook

    job = training["Training"]
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    members = ModelArtifactHook(aws_conn_id=settings.aws_conn_id()).read_members(
        artifact, ["evaluation.json", "statistics.json", "constraints.json", "input_schema.json", "model.onnx"]
    )
    evaluation = json.loads(members["evaluation.json"])
    if evaluation.get("onnx_max_abs_diff", 1.0) > ONNX_TOLERANCE:
        raise AirflowFailException(
            f"{artifact}: the ONNX export disagrees with PyTorch by {evaluation.get('onnx_max_abs_diff')} "
            f"(> {ONNX_TOLERANCE}); refusing to register it"
        )
    s3 = _s3()
    base = artifact.rsplit("/", 1)[0]
    uris = {}
    for name in ("evaluation.json", "statistics.json", "constraints.json"):
        uris[name] = f"{base}/{name}"
        b, k = s3.parse_s3_url(uris[name])
        s3.load_bytes(members[name], k, b, replace=True)

    def ref(name):
        return {"ContentType": "application/json", "S3Uri": uris[name]}

    model_metrics = {
        "ModelQuality": {"Statistics": ref("evaluation.json")},
        "ModelDataQuality": {"Statistics": ref("statistics.json"), "Constraints": ref("constraints.json")},
    }
    params = context["params"]
    lineage = {
        "training_job": job["TrainingJobName"],
        "dag_id": context["dag"].dag_id,
        "run_id": context["run_id"],
        "git_sha": settings.git_sha(),
        "target": settings.target(),
        "stage": spec.environment,
        "train_data_uri": prepared["train_uri"],
        "validation_data_uri": prepared["validation_uri"],
        "instance_type": job["ResourceConfig"]["InstanceType"],
        "instance_count": job["ResourceConfig"]["InstanceCount"],
        "spot": job.get("EnableManagedSpotTraining", False),
        "data_window_days": params.get("data_window_days"),
        "trigger": "drift" if prepared.get("drift_report") else ("manual" if context["run_id"].startswith("manual") else "schedule"),
        **{k: f"{evaluation[k]:.6f}" for k in ("accuracy", "roc_auc", "pr_auc", "precision", "recall", "f1",
                                               "threshold", "oracle_roc_auc") if k in evaluation},
        **lineage_metadata(prepared.get("drift_report")),
    }
    metrics = {k: v for k, v in evaluation.items() if isinstance(v, (int, float))}
    log.info("Evaluation of %s: %s", job["TrainingJobName"], json.dumps(metrics, sort_keys=True))
    return {
        "metrics": metrics,
        "model_data_url": artifact,
        "model_metrics": model_metrics,
        "lineage": {k: str(v) for k, v in lineage.items()},
        "metadata_properties": {"GeneratedBy": job.get("TrainingJobArn", job["TrainingJobName"]),
                                "CommitId": settings.git_sha()[:1024], "ProjectId": spec.name},
    }


def apply_approval_rules(spec: ModelSpec, registered: dict, metrics: dict) -> str:
    """Branch: record an automatic decision in the registry, or hand the version to a person."""
    from airflow.sdk import get_current_context

    from hybrid_mlops.approval import decide
    from hybrid_mlops.hooks.registry import ModelRegistryHook

    decision = decide(metrics, spec.approval.rules)
    get_current_context()["ti"].xcom_push(key="reason", value=decision.reason)
    arn = registered["ModelPackageArn"]
    log.info("Version %s: %s", registered["ModelPackageVersion"], decision.reason)
    if decision.status is None:
        return "human_review"
    ModelRegistryHook(aws_conn_id=settings.aws_conn_id()).update_package(
        arn, status=decision.status, reason=decision.reason, properties={"decision": "rules"}
    )
    return "approved" if decision.status == "Approved" else "rejected"


def summarize(spec: ModelSpec, registered: dict, metrics: dict) -> dict:
    from hybrid_mlops.hooks.registry import ModelRegistryHook

    package = ModelRegistryHook(aws_conn_id=settings.aws_conn_id()).describe_package(registered["ModelPackageArn"])
    out = {
        "model": spec.name,
        "model_package_arn": package["ModelPackageArn"],
        "version": package["ModelPackageVersion"],
        "status": package["ModelApprovalStatus"],
        "reason": package.get("ApprovalDescription", ""),
        "model_data_url": package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],
        "metrics": {k: metrics[k] for k in ("accuracy", "roc_auc", "oracle_roc_auc", "pr_auc", "precision",
                                            "recall", "f1") if k in metrics},
    }
    log.info("%s version %s: %s (%s)", spec.name, out["version"], out["status"], out["reason"])
    return out
