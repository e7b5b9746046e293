"""Training on SageMaker, the same request on both targets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator, serialize

from hybrid_mlops import settings
from hybrid_mlops.links.sagemaker import SageMakerTrainingJobLink

if TYPE_CHECKING:
    from airflow.sdk import Context


class TrainModelOperator(SageMakerTrainingOperator):
    """Start (or reuse) a SageMaker training job named from the run, and wait for it.

    ``aws``: the provider's operator (deferrable waiting on the job's status).
    ``local``: the same ``CreateTrainingJob`` request goes to the moto server, then
    :func:`hybrid_mlops.local.training.run_training_job` does the work the training cluster would,
    under the container contract, and uploads ``model.tar.gz`` where SageMaker puts it.

    Idempotent: a retried task finds the job its first try created. A ``Completed`` job (with its
    artifact in S3) is reused; an ``InProgress`` one is waited on; a ``Failed`` or ``Stopped`` one
    is not resumed by name (SageMaker names are single-use) but retried as ``<name>-r<try>``,
    which picks up the same S3 checkpoints.

    .. seealso::
        https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html

    :param config: the ``CreateTrainingJob`` request (templated).
    """

    operator_extra_links = (SageMakerTrainingJobLink(),)

    def __init__(self, *, config: dict, deferrable: bool = True, **kwargs):
        kwargs.setdefault("check_if_job_exists", False)
        super().__init__(config=config, deferrable=deferrable, **kwargs)

    def _describe(self, name: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.hook.describe_training_job(name)
        except ClientError as err:
            if err.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                return None
            raise

    def _artifact_ready(self, description: dict) -> bool:
        from hybrid_mlops.hooks.artifacts import ModelArtifactHook

        uri = description.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        return bool(uri) and ModelArtifactHook(aws_conn_id=self.aws_conn_id).artifact_exists(uri)

    def execute(self, context: Context) -> dict:
        name = self.config["TrainingJobName"]
        existing = self._describe(name)
        if existing:
            status = existing["TrainingJobStatus"]
            if status == "Completed" and self._artifact_ready(existing):
                self._persist_link(context)
                self.log.info("Training job %s already completed (an earlier try); reusing it.", name)
                return self._result(existing, reused=True)
            if status in self.hook.failed_states or status == "Completed":
                retry_name = f"{name[:58]}-r{context['ti'].try_number}"
                self.log.warning("Training job %s is %s (%s); retrying as %s with the same checkpoints.",
                                 name, status, existing.get("FailureReason", "no artifact in S3"), retry_name)
                self.config["TrainingJobName"] = retry_name
            elif not settings.is_local():
                self.log.info("Training job %s is %s (an earlier try); waiting for it.", name, status)
                self._persist_link(context)
                return self._wait_existing(name)
        self._persist_link(context)  # the name is final (check_if_job_exists=False: no renaming on create)
        if settings.is_local():
            return self._run_local(context)
        return super().execute(context)

    def _persist_link(self, context: Context) -> None:
        import urllib.parse

        SageMakerTrainingJobLink.persist(
            context=context, operator=self, region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            job_name=urllib.parse.quote(self.config["TrainingJobName"], safe=""),
        )

    def _wait_existing(self, name: str) -> dict:
        from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

        self.defer(
            trigger=SageMakerTrigger(job_name=name, job_type="Training", waiter_delay=self.check_interval,
                                     waiter_max_attempts=self.max_attempts, aws_conn_id=self.aws_conn_id),
            method_name="execute_complete",
        )

    def _run_local(self, context: Context) -> dict:
        from hybrid_mlops.local.training import run_training_job

        self.preprocess_config()
        name = self.config["TrainingJobName"]
        if self._describe(name) is None:
            self.log.info("Creating training job %s on the local SageMaker API.", name)
            self.hook.create_training_job(self.config, wait_for_completion=False)
        self.log.info("Running %s locally under the SageMaker container contract.", name)
        result = run_training_job(self.config, _s3_client(self))
        self.log.info("Training job %s: %.1fs, metrics %s", name, result["TrainingTimeInSeconds"], result["FinalMetrics"])
        return self._result(self.hook.describe_training_job(name), local=result)

    def _result(self, description: dict, **extra: Any) -> dict:
        self.serialized_training_data = serialize(description)
        return {"Training": self.serialized_training_data, **extra}


def _s3_client(operator: TrainModelOperator):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=operator.aws_conn_id, region_name=operator.region_name).get_conn()
