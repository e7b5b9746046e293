"""Batch Transform of an S3 prefix with an approved version, the same request on both targets."""

from __future__ import annotations

import datetime
import math
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTransformOperator, serialize
from airflow.sdk.exceptions import AirflowFailException

from hybrid_mlops import settings

if TYPE_CHECKING:
    from airflow.sdk import Context


class BatchTransformOperator(SageMakerTransformOperator):
    """Create (or reuse) the run's transform job and the version's SageMaker Model, and wait.

    ``aws``: the provider's operator (deferrable on the job's status). ``local``: the same
    ``CreateModel`` / ``CreateTransformJob`` requests go to the moto server, then
    :func:`hybrid_mlops.local.batch.run_transform_job` scores the input with the project's predictor
    and writes the joined output where Batch Transform would.

    Idempotent per run: the job is named from the run. A ``Completed`` job (on ``local``: with every
    output object written) is reused; an ``InProgress`` one is waited on; a ``Failed`` or ``Stopped``
    one fails the task naming its reason (job names are single-use: trigger a new run). The Model
    (``<model>-v<version>-batch``) is created once per version and shared by every run.

    :param config: ``{"Model": CreateModel request, "Transform": CreateTransformJob request}`` (templated).
    """

    def __init__(self, *, config: dict, deferrable: bool = True, max_ingestion_time: int = 6 * 3600,
                 check_interval: int = 60, **kwargs: Any):
        kwargs.update(check_if_job_exists=False, check_if_model_exists=False)
        super().__init__(config=config, deferrable=deferrable, max_ingestion_time=max_ingestion_time,
                         check_interval=check_interval, max_attempts=math.ceil(max_ingestion_time / check_interval),
                         **kwargs)

    def _describe(self, describe, name: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return describe(name)
        except ClientError as err:
            if err.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                return None
            raise

    def execute(self, context: Context) -> dict:
        model, transform = self.config["Model"], self.config["Transform"]
        name = transform["TransformJobName"]
        if self._describe(self.hook.describe_model, model["ModelName"]) is None:
            self.log.info("Creating SageMaker Model %s (%s)", model["ModelName"], model["PrimaryContainer"]["ModelDataUrl"])
            self.hook.create_model(model)
        existing = self._describe(self.hook.describe_transform_job, name)
        if existing:
            status = existing["TransformJobStatus"]
            if status == "Completed" and (not settings.is_local() or self._local_outputs_complete(transform)):
                self.log.info("Transform job %s already completed (an earlier try); reusing its output %s", name,
                              transform["TransformOutput"]["S3OutputPath"])
                return {**self.serialize_result(name), "reused": True}
            if status in ("Failed", "Stopped"):
                raise AirflowFailException(f"transform job {name} is {status}: {existing.get('FailureReason')}; "
                                           "job names are single-use: trigger a new run")
            if not settings.is_local():
                self.log.info("Transform job %s is %s (an earlier try); waiting for it", name, status)
                return self._wait_existing(name)
        if settings.is_local():
            return self._run_local(model, transform, existing is None)
        self.config = transform  # the Model exists: the provider creates the job only
        return super().execute(context)

    def _s3(self):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).get_conn()

    def _local_outputs_complete(self, transform: dict) -> bool:
        from hybrid_mlops.local.batch import outputs_complete

        return outputs_complete(self._s3(), transform)

    def _wait_existing(self, name: str) -> dict:
        from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

        self.defer(
            trigger=SageMakerTrigger(job_name=name, job_type="Transform", waiter_delay=self.check_interval,
                                     waiter_max_attempts=self.max_attempts, aws_conn_id=self.aws_conn_id,
                                     region_name=self.region_name, verify=self.verify,
                                     botocore_config=self.botocore_config),
            method_name="execute_complete",
            timeout=datetime.timedelta(seconds=self.max_ingestion_time),
        )

    def _run_local(self, model: dict, transform: dict, create: bool) -> dict:
        from hybrid_mlops.local.batch import run_transform_job
        from hybrid_mlops.local.serving import s3_fetch

        if create:
            self.log.info("Creating transform job %s on the local SageMaker API", transform["TransformJobName"])
            self.hook.create_transform_job(transform, wait_for_completion=False)
        figures = run_transform_job(model, transform, self._s3(), fetch=s3_fetch(self.aws_conn_id), log=self.log.info)
        self.log.info("Transform job %s: %s records in %ss (%s records/s)", transform["TransformJobName"],
                      figures["records"], figures["scoring_seconds"], figures["records_per_second"])
        return {"Model": serialize(self.hook.describe_model(model["ModelName"])),
                "Transform": serialize(self.hook.describe_transform_job(transform["TransformJobName"])),
                "local": figures}
