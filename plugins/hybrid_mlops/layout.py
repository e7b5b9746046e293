"""Where things live in the artifacts bucket: one place, so producers and consumers agree.

    data/<model>/<run>/{train,validation}/part-0.parquet     training channels
    code/<model>/<run>/sourcedir.tar.gz                      training source bundle
    checkpoints/<model>/<job>/                               spot checkpoints (CheckpointConfig.S3Uri)
    models/<model>/<job>/output/model.tar.gz                 SageMaker's output key
    capture/<model>/<yyyy>/<mm>/<dd>/<hh>/<file>.jsonl       request/response capture
    labels/<model>/<yyyy>/<mm>/<dd>/<file>.jsonl             ground truth (transaction_id, label)
    monitoring/<model>/<yyyy>/<mm>/<dd>/<hh>/                drift reports (Model Monitor shapes)
    cost-reports/<yyyy-mm-dd>/                               daily cost report
    deployments/<model>.json                                 what serves where (record_deployment)
    registry-index/<region>/<account>/<group>.json           each version's status, stage, metadata
"""

from __future__ import annotations

from datetime import datetime


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def data_prefix(bucket: str, model: str, run_key: str) -> str:
    return f"s3://{bucket}/data/{model}/{run_key}"


def code_uri(bucket: str, model: str, run_key: str) -> str:
    return f"s3://{bucket}/code/{model}/{run_key}/sourcedir.tar.gz"


def checkpoint_uri(bucket: str, prefix: str, model: str, job_name: str) -> str:
    return f"s3://{bucket}/{prefix.strip('/')}/{model}/{job_name}"


def model_output_path(bucket: str, model: str) -> str:
    """``OutputDataConfig.S3OutputPath``; SageMaker appends ``<job>/output/model.tar.gz``."""
    return f"s3://{bucket}/models/{model}"


def model_artifact_uri(bucket: str, model: str, job_name: str) -> str:
    return f"{model_output_path(bucket, model)}/{job_name}/output/model.tar.gz"


def capture_prefix(model: str, hour: datetime | None = None) -> str:
    """Key prefix (no bucket) of the capture files of one hour, or of the whole model."""
    base = f"capture/{model}/"
    return base if hour is None else base + hour.strftime("%Y/%m/%d/%H/")


def labels_prefix(model: str, day: datetime | None = None) -> str:
    base = f"labels/{model}/"
    return base if day is None else base + day.strftime("%Y/%m/%d/")


def monitoring_prefix(model: str, hour: datetime) -> str:
    return f"monitoring/{model}/" + hour.strftime("%Y/%m/%d/%H/")


def cost_report_prefix(day: str) -> str:
    return f"cost-reports/{day}/"


def deployment_record_key(model: str) -> str:
    """What serves the model where, as ``record_deployment`` last wrote it (the Models page reads it)."""
    return f"deployments/{model}.json"


def registry_index_key(region: str, account: str, group: str) -> str:
    """The index of a model package group's versions (``ModelRegistryHook`` writes it, the Models page reads it)."""
    return f"registry-index/{region}/{account}/{group}.json"
