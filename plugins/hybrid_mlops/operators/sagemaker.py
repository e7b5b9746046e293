"""Training on SageMaker, the same request on both targets."""

from __future__ import annotations

import datetime
import math
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

    Idempotent: every try looks for the newest attempt of the job (``<name>``, ``<name>-r2``,
    ``<name>-r3``, ...). A ``Completed`` one (with its artifact in S3) is reused; an ``InProgress`` or
    ``Stopping`` one is waited on; a ``Failed`` or ``Stopped`` one (a reclaimed spot job, a stop) is
    not resumed by name (SageMaker names are single-use) but retried as the next ``<name>-r<n>``,
    which picks up the same S3 checkpoints. So a retry never starts a job while another attempt runs.

    The wait is bounded by the request's own ``StoppingCondition`` (run + spot wait, plus
    :data:`WAIT_MARGIN_SECONDS` for provisioning and the upload of the model): SageMaker ends the job
    by then, so the trigger never gives up on a job that may still finish.

    .. seealso::
        https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html

    :param config: the ``CreateTrainingJob`` request (templated).
    :param max_attempts: status polls before giving up; default: enough polls of ``check_interval``
        for the bound above.
    """

    operator_extra_links = (SageMakerTrainingJobLink(),)
    #: Beyond MaxRuntime/MaxWaitTime: instance provisioning, image pull, model upload.
    WAIT_MARGIN_SECONDS = 1800
    #: Statuses of an attempt that will never produce a model: retried under the next name.
    ENDED_WITHOUT_MODEL = frozenset({"Failed", "Stopped"})

    def __init__(self, *, config: dict, deferrable: bool = True, max_attempts: int | None = None, **kwargs):
        kwargs.setdefault("check_if_job_exists", False)
        super().__init__(config=config, deferrable=deferrable, max_attempts=max_attempts, **kwargs)
        self._max_attempts_given = max_attempts
        if max_attempts is None and self.max_ingestion_time:  # not the provider's 60 polls (1 h at 60 s)
            self.max_attempts = max(1, math.ceil(self.max_ingestion_time / self.check_interval))

    @classmethod
    def wait_bound_seconds(cls, config: dict) -> int:
        """The longest a job of this request can take: MaxRuntime + MaxWaitTime + the margin."""
        stopping = config.get("StoppingCondition") or {}
        run = int(stopping.get("MaxRuntimeInSeconds") or 86400)
        return run + int(stopping.get("MaxWaitTimeInSeconds") or 0) + cls.WAIT_MARGIN_SECONDS

    def _bound_wait(self) -> None:
        """Make the deferred wait (polls x interval, and the defer timeout) cover the job's bound."""
        bound = self.wait_bound_seconds(self.config)
        self.max_ingestion_time = max(int(self.max_ingestion_time or 0), bound)
        if self._max_attempts_given is None:
            self.max_attempts = max(1, math.ceil(bound / self.check_interval))

    @staticmethod
    def attempt_name(base: str, attempt: int) -> str:
        """``base`` for the first attempt, ``<base>-r<attempt>`` after (within SageMaker's 63 characters)."""
        if attempt <= 1:
            return base
        suffix = f"-r{attempt}"
        return f"{base[:63 - len(suffix)].rstrip('-')}{suffix}"

    def _describe(self, name: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.hook.describe_training_job(name)
        except ClientError as err:
            if err.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                return None
            raise

    def newest_attempt(self, base: str) -> tuple[int, dict | None]:
        """``(n, description)`` of the newest existing attempt of ``base`` (``(1, None)``: none yet)."""
        attempt, found = 1, None
        while (description := self._describe(self.attempt_name(base, attempt))) is not None:
            found = (attempt, description)
            attempt += 1
        return found or (1, None)

    def _artifact_ready(self, description: dict) -> bool:
        from hybrid_mlops.hooks.artifacts import ModelArtifactHook

        uri = description.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        return bool(uri) and ModelArtifactHook(aws_conn_id=self.aws_conn_id).artifact_exists(uri)

    def execute(self, context: Context) -> dict:
        self._bound_wait()
        base = self.config["TrainingJobName"]
        attempt, existing = self.newest_attempt(base)
        if existing:
            name, status = existing["TrainingJobName"], existing["TrainingJobStatus"]
            self.config["TrainingJobName"] = name
            if status == "Completed" and self._artifact_ready(existing):
                self._persist_link(context)
                self.log.info("Training job %s already completed (an earlier try); reusing it.", name)
                return self._result(existing, reused=True)
            if status in self.ENDED_WITHOUT_MODEL or status == "Completed":
                retry_name = self.attempt_name(base, attempt + 1)
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
                                     waiter_max_attempts=self.max_attempts, aws_conn_id=self.aws_conn_id,
                                     region_name=self.region_name, verify=self.verify,
                                     botocore_config=self.botocore_config),
            method_name="execute_complete",
            timeout=datetime.timedelta(seconds=self.max_ingestion_time),
        )

    def _run_local(self, context: Context) -> dict:
        from hybrid_mlops.local.training import run_training_job

        self.preprocess_config()
        name = self.config["TrainingJobName"]
        if self._describe(name) is None:
            self.log.info("Creating training job %s on the local SageMaker API.", name)
            self.hook.create_training_job(self.config, wait_for_completion=False, print_log=False)  # no log poll: it sleeps
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
