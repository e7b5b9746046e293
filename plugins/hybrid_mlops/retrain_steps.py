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
#: The newest ONNX IR version the serving image's onnxruntime (1.31, include/serving/requirements.lock) loads.
SERVING_MAX_ONNX_IR = 13


def onnx_ir_version(model: bytes) -> int | None:
    """``ModelProto.ir_version`` (field 1, a varint) read off the serialized model, without onnx."""
    pos = 0
    while pos < len(model):
        key, pos = _varint(model, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(model, pos)
            if field == 1:
                return value
        elif wire == 2:
            length, pos = _varint(model, pos)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            return None
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return value, pos


def _s3():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=settings.aws_conn_id())


def _run_key(context) -> str:
    return naming.run_key(context["dag"].dag_id, context["run_id"])


def _seed(spec: ModelSpec, key: str, channel: int) -> int:
    import hashlib

    return (spec.data.seed * 1_000_003 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) + channel) % 2**32


def _window_end(context):
    """The end of the run's data window: its data interval, else (a run with no logical date) run_after."""
    from datetime import datetime, timezone

    end = context.get("data_interval_end") or getattr(context.get("dag_run"), "run_after", None)
    return end or datetime.now(timezone.utc)


def prepare_data(spec: ModelSpec, context) -> dict:
    """Write the train/validation/config channels and the source bundle; reuse them on a retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from hybrid_mlops.data.sources import DataSourceError, schema_document
    from hybrid_mlops.drift.cooldown import triggering_drift_report
    from hybrid_mlops.specs.model import SyntheticSource
    from hybrid_mlops.training_bundle import build_source_bundle

    s3, bucket, key = _s3(), settings.bucket(), _run_key(context)
    if settings.is_local() and not s3.check_for_bucket(bucket):
        s3.create_bucket(bucket, region_name=settings.region())
    prefix = layout.data_prefix(bucket, spec.name, key)
    channels = {c: f"{prefix}/{c}/" for c in ("train", "validation", "config")}
    config = layout.split_s3_uri(channels["config"])[1]
    marker = f"{config}prepared.json"  # written last: the channels are complete
    if s3.check_for_key(marker, bucket):
        log.info("Channels already written by an earlier try under %s", prefix)
        extra = json.loads(s3.read_key(marker, bucket))
    else:
        try:
            if isinstance(spec.data.source, SyntheticSource):
                extra = _synthetic_channels(spec, s3, prefix, key, context)
            else:
                extra = _query_channels(spec, prefix, key, context)
        except DataSourceError as err:
            raise AirflowFailException(f"{spec.name}: {err}") from None
        s3.load_string(json.dumps(extra), marker, bucket, replace=True)
    s3.load_string(json.dumps(schema_document(spec), indent=2), f"{config}schema.json", bucket, replace=True)
    code = layout.code_uri(bucket, spec.name, key)
    b, k = s3.parse_s3_url(code)
    if spec.training.entry_point:
        s3.load_bytes(build_source_bundle(spec.training.source_dir), k, b, replace=True)
    report = triggering_drift_report(context.get("triggering_asset_events"), spec.name)
    return {"run_key": key, "train_uri": channels["train"], "validation_uri": channels["validation"],
            "config_uri": channels["config"], "code_uri": code, "drift_report": report, **extra}


def _synthetic_channels(spec: ModelSpec, s3, prefix: str, key: str, context) -> dict:
    """The synthetic source: generated rows (with the oracle ROC AUC the generator knows)."""
    from hybrid_mlops.data.generator import generate, oracle_auc, to_arrow

    import pyarrow.parquet as pq

    source = spec.data.source
    rows = {"train": int(context["params"].get("rows") or source.rows), "validation": source.validation_rows}
    oracle = None
    for i, (channel, n) in enumerate(rows.items()):
        data = generate(n, seed=_seed(spec, key, i), fraud_rate=source.positive_rate, id_prefix=f"{key}-{channel}")
        if channel == "validation":
            oracle = oracle_auc(data)
        data.pop("true_probability")  # the generator's ground truth is not a feature
        buf = io.BytesIO()
        pq.write_table(to_arrow(data), buf)
        b, k = s3.parse_s3_url(f"{prefix}/{channel}/part-0.parquet")
        s3.load_bytes(buf.getvalue(), k, b, replace=True)
        log.info("Channel %s: %d generated rows (%.1f%% positive) -> %s", channel, n,
                 100 * data[spec.data_schema.label].mean(), f"{prefix}/{channel}/")
    return {"rows": rows, "oracle_roc_auc": oracle}


def _query_channels(spec: ModelSpec, prefix: str, key: str, context) -> dict:
    """The s3 / sql / feature_store sources: one query, windowed and split by DuckDB over S3."""
    from hybrid_mlops.data import sources
    from hybrid_mlops.hooks.data import DataSourceHook

    import duckdb

    hook = DataSourceHook(aws_conn_id=settings.aws_conn_id())
    where = sources.describe_source(spec)
    params, end = context["params"], _window_end(context)
    con = hook.duckdb()
    try:
        if settings.is_local() or spec.data.source.type == "s3":
            offline = hook.offline_store_uri(spec.data.source.feature_group) \
                if spec.data.source.type == "feature_store" else None
            setup, query = sources.local_source_sql(spec, offline_store_uri=offline)
            for statement in setup:
                con.execute(statement)
        else:  # Athena runs the team's SQL (or the point-in-time query) and unloads Parquet for the split
            attempt = getattr(context.get("ti"), "try_number", 1)  # UNLOAD wants an empty prefix: one per try
            raw = hook.athena_unload(spec, f"{prefix}/raw/try-{attempt}/", f"{key}-{attempt}")
            query = f"SELECT * FROM {sources.files_sql(raw, 'parquet')}"
        # the form's values (their defaults are the spec's); empty means every row, the whole history
        rows = sources.write_channels(con, spec, query, prefix, window_end=end,
                                      window_days=params.get("data_window_days", spec.data.window_days),
                                      max_rows=params.get("rows", spec.data.max_rows), where=where)
    except duckdb.Error as err:
        raise sources.DataSourceError(f"{where}: {type(err).__name__}: {err}") from None
    finally:
        con.close()
    log.info("%s: %s rows in the window ending %s -> %s", where, rows, end.isoformat(), prefix)
    return {"rows": rows, "window_end": end.isoformat()}


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
    if t.entry_point:  # script mode; an own image (entry_point: null) runs its own entry point
        hyperparameters.update(
            {"sagemaker_program": json.dumps(t.entry_point),
             "sagemaker_submit_directory": json.dumps(prepared["code_uri"]),
             "sagemaker_region": json.dumps(settings.region())}
        )

    def channel(name: str, content_type: str = "application/x-parquet") -> dict:
        return {"ChannelName": name, "ContentType": content_type, "InputMode": "File",
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
            "MetricDefinitions": spec.metric_definitions(),
        },
        "RoleArn": settings.sagemaker_role_arn(),
        "HyperParameters": hyperparameters,
        "InputDataConfig": [channel("train"), channel("validation"), channel("config", "application/json")],
        "OutputDataConfig": {"S3OutputPath": layout.model_output_path(bucket, spec.name)},
        "ResourceConfig": {"InstanceType": params.get("instance_type") or t.instance_type,
                           "InstanceCount": int(count), "VolumeSizeInGB": t.volume_size_gb},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": spot,
        "CheckpointConfig": {"S3Uri": layout.checkpoint_uri(bucket, t.checkpoint_prefix, spec.name, key),
                             "LocalPath": "/opt/ml/checkpoints"},
        "Tags": [{"Key": k, "Value": str(v)} for k, v in tags.items()],
    }


def check_contract(spec: ModelSpec, artifact: str, evaluation: dict, input_schema: dict, model: bytes = b"") -> None:
    """What any trainer must write (README, "Add your model"), checked before a version is registered,
    so a model that could never serve is never approved."""
    from hybrid_mlops.specs.model import TASK_METRICS

    schema = spec.data_schema
    problems = []
    if input_schema.get("task", spec.task) != spec.task:
        problems.append(f"input_schema.json task={input_schema.get('task')!r}, the spec says {spec.task!r}")
    if list(input_schema.get("numeric", [])) != schema.numeric:
        problems.append(f"input_schema.json numeric={input_schema.get('numeric')} must be the spec's numeric "
                        f"features in order {schema.numeric}")
    if sorted(input_schema.get("categorical", {})) != sorted(schema.categorical):
        problems.append(f"input_schema.json categorical={sorted(input_schema.get('categorical', {}))} must be "
                        f"the spec's categorical features {schema.categorical}")
    if spec.task == "multiclass" and [str(c) for c in input_schema.get("classes", [])] != schema.classes:
        problems.append(f"input_schema.json classes={input_schema.get('classes')} must be schema.classes {schema.classes}")
    ir = onnx_ir_version(model) if model else None
    if ir is not None and ir > SERVING_MAX_ONNX_IR:
        problems.append(f"model.onnx has IR version {ir}; the serving image's onnxruntime loads up to "
                        f"{SERVING_MAX_ONNX_IR} (export with ir_version={SERVING_MAX_ONNX_IR} or older)")
    diff = evaluation.get("onnx_max_abs_diff")
    if diff is not None and not (isinstance(diff, (int, float)) and diff <= ONNX_TOLERANCE):  # NaN fails too
        problems.append(f"the ONNX export disagrees with the trained model by {diff} (> {ONNX_TOLERANCE})")
    missing = [m for m in spec.approval.rules if not isinstance(evaluation.get(m), (int, float))]
    if missing:
        problems.append(f"evaluation.json lacks the approval metric(s) {missing} (task {spec.task}: "
                        f"{list(TASK_METRICS[spec.task])})")
    if problems:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{artifact}: refusing to register it: " + "; ".join(problems))


def baseline_documents(spec: ModelSpec, train_uri: str, model_data_url: str | None = None) -> dict[str, dict]:
    """Model Monitor ``statistics.json`` / ``constraints.json`` of the training channel, computed here
    (not by the trainer), so a team's own script or image needn't produce them. Given ``model_data_url``,
    also writes the prepared baseline of the numeric features beside it (sorted once here, so each hourly
    monitor run costs O(window): :meth:`DriftHook.put_prepared_baseline`)."""
    from hybrid_mlops.drift import monitor_format
    from hybrid_mlops.hooks.drift import DriftHook

    schema = spec.data_schema
    hook = DriftHook(aws_conn_id=settings.aws_conn_id())
    columns = hook.read_parquet_columns(train_uri, list(schema.features))
    stats = monitor_format.dataset_statistics(columns, schema.numeric, schema.categorical)
    if model_data_url:
        hook.put_prepared_baseline(columns, list(schema.numeric), model_data_url, train_uri)
    return {"statistics.json": stats, "constraints.json": monitor_format.suggest_constraints(stats)}


def _smoke_rows(spec: ModelSpec, input_schema: dict, validation_uri: str, rows: int = 8) -> dict[str, list]:
    """Rows of the version's own validation data: what every deploy's smoke test sends."""
    from hybrid_mlops.hooks.data import DataSourceHook

    columns = [*input_schema.get("numeric", []), *input_schema.get("categorical", {})]
    return DataSourceHook(aws_conn_id=settings.aws_conn_id()).head_rows(validation_uri, columns, rows)


def evaluate(spec: ModelSpec, training: dict, prepared: dict, context) -> dict:
    """Check the artifact against the training contract; publish its evaluation and the training
    baseline beside it as ``ModelMetrics``."""
    from hybrid_mlops.drift.cooldown import lineage_metadata
    from hybrid_mlops.hooks.artifacts import SMOKE_SAMPLE, ModelArtifactHook
    from hybrid_mlops.specs.model import TASK_METRICS

    job = training["Training"]
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    members = ModelArtifactHook(aws_conn_id=settings.aws_conn_id()).read_members(
        artifact, ["evaluation.json", "input_schema.json", "model.onnx"]
    )
    evaluation = json.loads(members["evaluation.json"])
    if prepared.get("oracle_roc_auc") is not None:
        evaluation["oracle_roc_auc"] = prepared["oracle_roc_auc"]
    check_contract(spec, artifact, evaluation, json.loads(members["input_schema.json"]), members["model.onnx"])
    input_schema = json.loads(members["input_schema.json"])
    docs = {"evaluation.json": evaluation, **baseline_documents(spec, prepared["train_uri"], artifact),
            SMOKE_SAMPLE: {"schema": input_schema, "rows": _smoke_rows(spec, input_schema, prepared["validation_uri"])}}
    s3 = _s3()
    base = artifact.rsplit("/", 1)[0]
    uris = {}
    for name, body in docs.items():
        uris[name] = f"{base}/{name}"
        b, k = s3.parse_s3_url(uris[name])
        s3.load_string(json.dumps(body, indent=2), k, b, replace=True)

    def ref(name):
        return {"ContentType": "application/json", "S3Uri": uris[name]}

    model_metrics = {
        "ModelQuality": {"Statistics": ref("evaluation.json")},
        "ModelDataQuality": {"Statistics": ref("statistics.json"), "Constraints": ref("constraints.json")},
    }
    params = context["params"]
    figures = [*TASK_METRICS[spec.task], "threshold", "oracle_roc_auc"]
    lineage = {
        "training_job": job["TrainingJobName"],
        "dag_id": context["dag"].dag_id,
        "run_id": context["run_id"],
        "git_sha": settings.git_sha(),
        "target": settings.target(),
        "stage": spec.environment,
        "task": spec.task,
        "train_data_uri": prepared["train_uri"],
        "validation_data_uri": prepared["validation_uri"],
        "instance_type": job["ResourceConfig"]["InstanceType"],
        "instance_count": job["ResourceConfig"]["InstanceCount"],
        "spot": job.get("EnableManagedSpotTraining", False),
        "data_window_days": params.get("data_window_days"),
        "trigger": "drift" if prepared.get("drift_report") else ("manual" if context["run_id"].startswith("manual") else "schedule"),
        **{k: f"{evaluation[k]:.6f}" for k in figures if isinstance(evaluation.get(k), (int, float))},
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
    """Branch: record an automatic decision in the registry, or hand the version to a person.

    An approval moves the version to ``approval.stage_on_approval`` (ModelLifeCycle, ``Approved``), a
    rejection leaves it in ``dev`` (``Rejected``). A version handed to a person carries the stage an
    approval will move it to (metadata ``stage_on_approval``, read by the human review).
    """
    from airflow.sdk import get_current_context

    from hybrid_mlops.approval import decide
    from hybrid_mlops.hooks.registry import STAGE_DEV, STAGE_ON_APPROVAL_KEY, ModelRegistryHook, model_life_cycle

    decision = decide(metrics, spec.approval.rules)
    get_current_context()["ti"].xcom_push(key="reason", value=decision.reason)
    arn = registered["ModelPackageArn"]
    log.info("Version %s: %s", registered["ModelPackageVersion"], decision.reason)
    hook = ModelRegistryHook(aws_conn_id=settings.aws_conn_id())
    stage = spec.approval.stage_on_approval
    if decision.status is None:
        described = hook.update_metadata(arn, {STAGE_ON_APPROVAL_KEY: stage})
        get_current_context()["ti"].xcom_push(key="review", value=review_body(spec, described, metrics,
                                                                             decision.reason, hook))
        return "human_review"
    if decision.status == "Approved":
        lifecycle = model_life_cycle(stage, "Approved", f"Approved by the rules: {decision.reason}")
    else:
        lifecycle = model_life_cycle(STAGE_DEV, "Rejected", f"Rejected by the rules: {decision.reason}")
    hook.update_package(arn, status=decision.status, reason=decision.reason, properties={"decision": "rules"},
                        lifecycle=lifecycle)
    return "approved" if decision.status == "Approved" else "rejected"


def review_body(spec: ModelSpec, candidate: dict, metrics: dict, reason: str, hook) -> str:
    """The human review's markdown: the candidate beside the version serving in prod (the registry's
    ``prod`` stage, newest first), the evaluation's reference figures, the drift report that started the
    run, links to the evaluation, the data, the training job, the registry and the Models page."""
    import urllib.parse

    from airflow.providers.amazon.aws.links.base_aws import BaseAwsLink

    from hybrid_mlops.approval import review_markdown
    from hybrid_mlops.hooks.registry import STAGE_PROD, split_metadata_list
    from hybrid_mlops.specs.model import TASK_METRICS
    from hybrid_mlops.links.registry import ModelPackageLink
    from hybrid_mlops.links.sagemaker import SageMakerTrainingJobLink
    from hybrid_mlops.ui.app import URL_PREFIX

    group = spec.registry.model_package_group
    prods = [p for p in hook.packages_in_stage(group, STAGE_PROD) if p["ModelPackageArn"] != candidate["ModelPackageArn"]]
    production = None
    if prods:
        props = prods[0].get("CustomerMetadataProperties") or {}
        figures = {}
        for name, value in props.items():
            try:
                figures[name] = float(value)
            except ValueError:
                continue
        production = {"version": prods[0]["ModelPackageVersion"], "metrics": figures}
    props = candidate.get("CustomerMetadataProperties") or {}
    region, domain = hook.conn_region_name or settings.region(), BaseAwsLink.get_aws_domain(hook.conn_partition or "aws")

    def s3_console(uri: str | None, kind: str = "buckets") -> str | None:
        if not uri or not uri.startswith("s3://"):
            return None
        bucket, key = layout.split_s3_uri(uri)
        if kind == "object":
            return f"https://console.{domain}/s3/object/{bucket}?region={region}&prefix={urllib.parse.quote(key, safe='/')}"
        return f"https://console.{domain}/s3/buckets/{bucket}?region={region}&prefix={urllib.parse.quote(key, safe='/')}"

    evaluation_uri = ((candidate.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics", {}).get("S3Uri")
    links = {
        "evaluation.json": s3_console(evaluation_uri, "object"),
        "training data": s3_console(props.get("train_data_uri")),
        "validation data": s3_console(props.get("validation_data_uri")),
        "training job": SageMakerTrainingJobLink().format_link(aws_domain=domain, region_name=region,
                                                               job_name=props.get("training_job", "")),
        "Model Registry": ModelPackageLink().format_link(aws_domain=domain, region_name=region,
                                                         model_package_group=urllib.parse.quote(group, safe="")),
        "Models page": f"{URL_PREFIX}/models",
    }
    drift = None
    if props.get("drift_report_uri"):
        drift = {"report_uri": props["drift_report_uri"], "window_start": props.get("drift_window_start"),
                 "violated_features": split_metadata_list(props.get("drift_violated_features"))}
        _bucket, key = layout.split_s3_uri(props["drift_report_uri"])
        links["drift report"] = f"{URL_PREFIX}/reports/{key.rsplit('/', 1)[0]}/report.json"
    return review_markdown(
        model=spec.name, candidate={"version": candidate["ModelPackageVersion"], "metrics": metrics},
        production=production, rules=spec.approval.rules, reason=reason, metrics=metrics, links=links, drift=drift,
        metric_names=TASK_METRICS[spec.task],
    )


def summarize(spec: ModelSpec, registered: dict, metrics: dict) -> dict:
    from hybrid_mlops.hooks.registry import ModelRegistryHook
    from hybrid_mlops.specs.model import TASK_METRICS

    package = ModelRegistryHook(aws_conn_id=settings.aws_conn_id()).describe_package(registered["ModelPackageArn"])
    out = {
        "model": spec.name,
        "model_package_arn": package["ModelPackageArn"],
        "version": package["ModelPackageVersion"],
        "status": package["ModelApprovalStatus"],
        "reason": package.get("ApprovalDescription", ""),
        "model_data_url": package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],
        "metrics": {k: metrics[k] for k in (*TASK_METRICS[spec.task], "oracle_roc_auc") if k in metrics},
    }
    log.info("%s version %s: %s (%s)", spec.name, out["version"], out["status"], out["reason"])
    return out
