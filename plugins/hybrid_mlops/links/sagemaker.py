"""Extra link on the training task: the SageMaker training job in the AWS console."""

from __future__ import annotations

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink


class SageMakerTrainingJobLink(BaseAwsLink):
    """Link to the training job a training task started (or reused).

    Built like the Amazon provider's ``SageMakerTransformJobLink``: the operator persists
    ``region_name``, ``aws_partition`` and ``job_name`` (URL-quoted) right after the name is final.

    .. seealso:: https://docs.aws.amazon.com/sagemaker/latest/dg/model-access-training-data.html
    """

    name = "SageMaker Training Job"
    key = "sagemaker_training_job"
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/jobs/{job_name}"
