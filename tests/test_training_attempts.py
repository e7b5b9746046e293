"""TrainModelOperator on the ``aws`` target, driven against a moto server on loopback.

moto completes every training job at once, so this module runs its own moto server in this process
(``ThreadedMotoServer``, a real HTTP server on 127.0.0.1) and sets a job's status in moto's backend
to the state under test (``Stopped``, ``Failed``, ``InProgress``): no AWS API can put a job there.
"""

from __future__ import annotations

import json
import os

import boto3
import pytest

from hybrid_mlops.local.moto import LOCAL_CREDENTIALS, free_port

BUCKET = "hybrid-mlops-attempts"
ACCOUNT = "123456789012"
REGION = "us-west-2"
BASE = "fraud-detection-20260101t000000-a1b2c3"


@pytest.fixture(scope="module")
def inprocess_moto():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_target(inprocess_moto, monkeypatch):
    """``HYBRID_MLOPS_TARGET=aws`` with every aws setting, pointed at the in-process moto server."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{inprocess_moto}/moto-api/reset", method="POST")).read()
    connection = {"conn_type": "aws", "extra": {"region_name": REGION, "endpoint_url": inprocess_moto}}
    for k, v in {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": inprocess_moto, "AWS_DEFAULT_REGION": REGION,
                 "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection), "HYBRID_MLOPS_TARGET": "aws",
                 "HYBRID_MLOPS_BUCKET": BUCKET,
                 "HYBRID_MLOPS_SAGEMAKER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/sagemaker-execution",
                 "HYBRID_MLOPS_ATHENA_WORKGROUP": "primary", "HYBRID_MLOPS_ATHENA_DATABASE": "hybrid_mlops"}.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=BUCKET, Key="data/train/part-0.parquet", Body=b"PAR1")  # the provider checks the input
    return inprocess_moto


def _config(name: str = BASE) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:2.8.0-gpu-py312-cu129-ubuntu22.04-sagemaker",
            "TrainingInputMode": "File"},
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/sagemaker-execution",
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/train/", "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/models/fraud-detection"},
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": 14400, "MaxWaitTimeInSeconds": 21600},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": f"s3://{BUCKET}/checkpoints/fraud-detection/run", "LocalPath": "/opt/ml/checkpoints"},
    }


def _jobs():
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION].training_jobs


def _create(name: str, status: str) -> None:
    boto3.client("sagemaker").create_training_job(**_config(name))
    job = _jobs()[name]
    job.training_job_status = status
    if status in ("Failed", "Stopped"):
        job.failure_reason = "Spot capacity reclaimed" if status == "Stopped" else "AlgorithmError"


def _put_artifact(name: str) -> None:
    uri = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, key = uri[5:].split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"model")


def _operator(**kwargs):
    from hybrid_mlops.operators.sagemaker import TrainModelOperator

    return TrainModelOperator(task_id="train", config=_config(), aws_conn_id="aws_default", check_interval=60,
                              print_log=False, **kwargs)


class _TI:
    try_number = 2  # the old naming (-r<try>) would collide with the existing -r2


def _context():
    return {"ti": _TI(), "task_instance": _TI()}


@pytest.fixture(autouse=True)
def _no_links(monkeypatch):
    # Extra links persist through the task runner's XCom channel, absent outside a task run.
    from hybrid_mlops.operators.sagemaker import TrainModelOperator

    monkeypatch.setattr(TrainModelOperator, "_persist_link", lambda self, context: None)


def test_stopped_spot_job_is_retried_as_the_next_attempt_after_the_newest(aws_target):
    _create(BASE, "Failed")
    _create(f"{BASE}-r2", "Stopped")  # the spot job of the previous retry was reclaimed
    result = _operator().execute(_context())
    assert result["Training"]["TrainingJobName"] == f"{BASE}-r3"
    assert sorted(_jobs()) == [BASE, f"{BASE}-r2", f"{BASE}-r3"]


def test_completed_newest_attempt_is_reused_not_restarted(aws_target):
    _create(BASE, "Stopped")
    _create(f"{BASE}-r2", "Completed")
    _put_artifact(f"{BASE}-r2")
    result = _operator().execute(_context())
    assert result["reused"] is True and result["Training"]["TrainingJobName"] == f"{BASE}-r2"
    assert sorted(_jobs()) == [BASE, f"{BASE}-r2"]


def test_in_progress_newest_attempt_is_waited_on_with_the_whole_bound(aws_target):
    from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
    from airflow.sdk.exceptions import TaskDeferred

    _create(BASE, "Stopped")
    _create(f"{BASE}-r2", "InProgress")
    with pytest.raises(TaskDeferred) as deferred:
        _operator().execute(_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, SageMakerTrigger) and trigger.job_name == f"{BASE}-r2"
    bound = 14400 + 21600  # MaxRuntime + MaxWaitTime of the request
    kwargs = trigger.serialize()[1]
    assert kwargs["waiter_max_attempts"] * kwargs["waiter_delay"] >= bound, kwargs
    assert deferred.value.timeout.total_seconds() >= bound
    assert sorted(_jobs()) == [BASE, f"{BASE}-r2"]  # no third job while -r2 runs


def test_the_retrain_dags_wait_covers_run_plus_spot_wait(spec):
    from hybrid_mlops.factory import build_dags

    train = build_dags("retrain")[f"retrain_{spec.dag_suffix}"].get_task("train")
    bound = spec.training.max_run_seconds + (spec.training.max_wait_seconds or 0)
    assert train.max_attempts * train.check_interval >= bound, (train.max_attempts, train.check_interval)
    assert train.max_ingestion_time >= bound


def test_attempt_names_stay_within_sagemakers_63_characters():
    from hybrid_mlops.operators.sagemaker import TrainModelOperator

    base = "a" * 63
    assert TrainModelOperator.attempt_name(base, 1) == base
    assert len(TrainModelOperator.attempt_name(base, 12)) == 63
    assert TrainModelOperator.attempt_name(base, 12).endswith("-r12")
