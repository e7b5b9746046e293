"""Extra links on the report tasks: the S3 console folder a drift or cost report was written to."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context


class _S3PrefixLink(BaseAwsLink):
    """An S3 console folder: ``bucket`` and the key ``prefix`` (URL-quoted) of the files written."""

    format_str = BASE_AWS_CONSOLE_LINK + "/s3/buckets/{bucket}?region={region_name}&prefix={prefix}&showversions=false"

    @classmethod
    def persist_prefix(cls, context: Context, operator: BaseOperator, bucket: str, prefix: str) -> None:
        """Store the link from an operator with an AWS hook (``operator.hook``), after the reports are written."""
        hook = operator.hook
        cls.persist(
            context=context,
            operator=operator,
            region_name=hook.conn_region_name,
            aws_partition=hook.conn_partition,
            bucket=bucket,
            prefix=urllib.parse.quote(prefix, safe="/"),
        )


class DriftReportLink(_S3PrefixLink):
    """Link to one window's drift reports (``monitoring/<model>/<yyyy>/<mm>/<dd>/<hh>/``).

    .. seealso:: https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-folders.html
    """

    name = "Drift report"
    key = "drift_report"


class CostReportLink(_S3PrefixLink):
    """Link to one day's cost report (``cost-reports/<yyyy-mm-dd>/``: cost.json, cost.csv, report.html).

    .. seealso:: https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-folders.html
    """

    name = "Cost report"
    key = "cost_report"
