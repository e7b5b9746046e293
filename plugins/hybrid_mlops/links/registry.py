"""Extra link on the register task: the model package group in the SageMaker Model Registry console."""

from __future__ import annotations

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink


class ModelPackageLink(BaseAwsLink):
    """Link to the model package group that holds the version a register task created (or reused).

    The console page lists the group's versions with their approval status; the operator persists
    ``region_name``, ``aws_partition`` and ``model_package_group`` (URL-quoted) after create or reuse.

    .. seealso:: https://docs.aws.amazon.com/sagemaker/latest/dg/model-registry-details.html
    """

    name = "Model Package"
    key = "model_package"
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/model-registry/{model_package_group}"
