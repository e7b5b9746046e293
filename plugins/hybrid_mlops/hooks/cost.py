"""Hooks of the daily cost report: the only code of the report that talks to AWS.

Each hook subclasses the Amazon provider's hook for its service and returns plain JSON-safe values.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from botocore.exceptions import ClientError

from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from airflow.providers.amazon.aws.hooks.sns import SnsHook

#: Tags through which the local target records what moto's training jobs cannot report themselves
#: (moto runs nothing, so it has no TrainingTimeInSeconds / BillableTimeInSeconds and stamps every
#: time with the moment of the create call). Only read when ``local=True``.
LOCAL_TIMING_TAG = "hybrid-mlops:local:"
LOCAL_TIMING_FIELDS = ("TrainingStartTime", "TrainingEndTime", "TrainingTimeInSeconds", "BillableTimeInSeconds")

ACCESS_DENIED = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnrecognizedClientException",
                 "InvalidClientTokenId"}


class CostExplorerError(AirflowException):
    """Cost Explorer answered with an error; the message quotes its code and text verbatim."""


class CostExplorerAccessDenied(AirflowFailException):
    """The connection's principal may not call Cost Explorer: a retry cannot fix it."""


class CostExplorerHook(AwsBaseHook):
    """Cost Explorer (``ce``), every page of ``GetCostAndUsage``, each billed request counted and logged.

    .. seealso::
        :external+boto3:py:meth:`CostExplorer.Client.get_cost_and_usage`

    :param aws_conn_id: the AWS connection (its ``endpoint_url`` points at moto on the local target).
    :param region_name: Cost Explorer's endpoint region, ``us-east-1`` unless told.
    """

    def __init__(self, *args, **kwargs):
        kwargs["client_type"] = "ce"
        kwargs["region_name"] = kwargs.get("region_name") or "us-east-1"
        super().__init__(*args, **kwargs)
        self.requests_sent = 0

    def get_cost_and_usage_pages(self, request: dict[str, Any], *, max_pages: int, name: str = "") -> list[dict]:
        """All pages of one query, following ``NextPageToken``.

        :param request: the ``GetCostAndUsage`` arguments, without ``NextPageToken``.
        :param max_pages: the most pages this query may take; more fails the task rather than
            sending requests nobody budgeted for (each one is billed).
        :param name: the query's name, for the log.
        """
        pages: list[dict] = []
        token: str | None = None
        while True:
            if len(pages) >= max_pages:
                raise CostExplorerError(
                    f"Cost Explorer query {name!r} has more than {max_pages} pages; stopped before sending more "
                    "billed requests. Narrow the window or raise max_pages_per_query."
                )
            args = dict(request, NextPageToken=token) if token else request
            self.requests_sent += 1
            self.log.info("Cost Explorer request %s: %s page %s %s..%s", self.requests_sent, name, len(pages) + 1,
                          request["TimePeriod"]["Start"], request["TimePeriod"]["End"])
            try:
                page = self.conn.get_cost_and_usage(**args)
            except ClientError as err:
                code, message = _error(err)
                if code in ACCESS_DENIED:
                    raise CostExplorerAccessDenied(
                        f"Cost Explorer refused ce:GetCostAndUsage ({code}: {message}). Grant ce:GetCostAndUsage "
                        f"to the principal of connection {self.aws_conn_id!r} (and enable Cost Explorer for the "
                        "account): no report is written without it."
                    ) from None
                raise CostExplorerError(f"Cost Explorer {name!r} failed: {code}: {message}") from None
            page.pop("ResponseMetadata", None)
            pages.append(page)
            token = page.get("NextPageToken")
            if not token:
                return pages


def _error(err: ClientError) -> tuple[str, str]:
    """Code and message of an AWS error, also when an endpoint answered a JSON-protocol call in XML."""
    error = err.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", err))
    if "<Code>" in message:  # botocore could not parse the body: take what it says
        code = re.search(r"<Code>([^<]*)</Code>", message).group(1)
        found = re.search(r"<Message>([^<]*)</Message>", message)
        message = found.group(1) if found else message
    if not code or code.isdigit():
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = "AccessDenied" if status == 403 else code or str(status)
    return code, message


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class TrainingCostHook(SageMakerHook):
    """SageMaker training jobs of a day, with what their cost needs: timings, instances, spot, tags, price.

    .. seealso::
        :external+boto3:py:meth:`SageMaker.Client.describe_training_job`,
        :external+boto3:py:meth:`Pricing.Client.get_products`
    """

    def jobs_ended_on(self, models: list[str], day: date, *, local: bool, lookback_days: int = 29) -> list[dict]:
        """Training jobs of ``models`` whose ``TrainingEndTime`` falls on ``day`` (UTC).

        :param models: model names; a job belongs to a model by its ``model`` tag, else by its name prefix.
        :param day: the reported day.
        :param local: the local target, where moto's jobs carry their timings in ``hybrid-mlops:local:*`` tags
            and their creation time is the moment of seeding (so no creation-time filter is sent).
        :param lookback_days: how long before ``day`` a job ending on it may have been created (SageMaker's
            longest run is 28 days).
        """
        start = datetime.combine(day, time.min, tzinfo=timezone.utc)
        end = start + timedelta(days=1)
        paginator = self.conn.get_paginator("list_training_jobs")
        out = []
        for model in models:
            args: dict[str, Any] = {"NameContains": model, "PaginationConfig": {"PageSize": 100}}
            if not local:
                args.update(CreationTimeAfter=start - timedelta(days=lookback_days), CreationTimeBefore=end)
            for page in paginator.paginate(**args):
                for summary in page["TrainingJobSummaries"]:
                    if not local:
                        ended = _as_datetime(summary.get("TrainingEndTime"))
                        if ended is None or not (start <= ended < end):
                            continue
                    job = self._job_facts(summary["TrainingJobName"], model, local=local)
                    ended = _as_datetime(job["end_time"])
                    if job["model"] == model and ended is not None and start <= ended < end:
                        out.append(job)
        return sorted(out, key=lambda j: j["job_name"])

    def _job_facts(self, name: str, model: str, *, local: bool) -> dict[str, Any]:
        desc = self.conn.describe_training_job(TrainingJobName=name)
        tags = {t["Key"]: t["Value"] for t in self.conn.list_tags(ResourceArn=desc["TrainingJobArn"]).get("Tags", [])}
        if local:
            for field in LOCAL_TIMING_FIELDS:
                if (value := tags.get(LOCAL_TIMING_TAG + field)) is not None:
                    desc[field] = int(value) if field.endswith("Seconds") else value
        resources = desc.get("ResourceConfig", {})
        end_time = _as_datetime(desc.get("TrainingEndTime"))
        start_time = _as_datetime(desc.get("TrainingStartTime"))
        return {
            "job_name": name,
            "model": tags.get("model", model if name.startswith(model) else ""),
            "version": tags.get("version"),
            "status": desc.get("TrainingJobStatus"),
            "instance_type": resources.get("InstanceType", ""),
            "instance_count": int(resources.get("InstanceCount", 1)),
            "spot": bool(desc.get("EnableManagedSpotTraining", False)),
            "training_seconds": desc.get("TrainingTimeInSeconds"),
            "billable_seconds": desc.get("BillableTimeInSeconds"),
            "start_time": start_time.isoformat() if start_time else None,
            "end_time": end_time.isoformat() if end_time else None,
            "timings_source": "local-tags" if local and LOCAL_TIMING_TAG + "BillableTimeInSeconds" in tags else "describe",
        }

    def on_demand_price(self, region: str, instance_type: str) -> float | None:
        """USD per instance-hour of SageMaker training from the Pricing API, None when it lists none.

        :param region: the job's region code, e.g. ``us-west-2``.
        :param instance_type: e.g. ``ml.g5.2xlarge``.
        """
        pricing = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="pricing", region_name="us-east-1").conn
        filters = [
            {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
            {"Type": "TERM_MATCH", "Field": "instanceName", "Value": instance_type},
            {"Type": "TERM_MATCH", "Field": "component", "Value": "Training"},
        ]
        response = pricing.get_products(ServiceCode="AmazonSageMaker", Filters=filters, MaxResults=10)
        for item in response.get("PriceList", []):
            product = json.loads(item) if isinstance(item, str) else item
            for term in product.get("terms", {}).get("OnDemand", {}).values():
                for dimension in term.get("priceDimensions", {}).values():
                    usd = dimension.get("pricePerUnit", {}).get("USD")
                    if usd and float(usd) > 0:
                        return float(usd)
        return None


class CostS3Hook(S3Hook):
    """The artifacts bucket as the report sees it: capture files to count, report files to write.

    .. seealso::
        :external+boto3:py:meth:`S3.Client.get_object`, :external+boto3:py:meth:`S3.Client.put_object`
    """

    def count_predictions(self, bucket: str, prefix: str) -> dict[str, Any]:
        """Requests and predictions per model version in the capture files under ``prefix``.

        A capture line is one request: ``{"version": ..., "inputs": {feature: [values, ...]}, ...}``;
        its predictions are the length of any input list. Lines that are not such records are counted
        as ``invalid_lines``, never silently dropped.

        :param bucket: the artifacts bucket.
        :param prefix: ``capture/<model>/<yyyy>/<mm>/<dd>/``.
        """
        versions: dict[str, dict[str, int]] = {}
        files = invalid = 0
        for key in self.list_keys(bucket_name=bucket, prefix=prefix) or []:
            if not key.endswith(".jsonl"):
                continue
            files += 1
            body = self.conn.get_object(Bucket=bucket, Key=key)["Body"]
            for raw in body.iter_lines():
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    inputs = record["inputs"]
                    rows = len(next(iter(inputs.values()))) if inputs else 0
                    version = str(record.get("version") or "unknown")
                except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
                    invalid += 1
                    continue
                counts = versions.setdefault(version, {"requests": 0, "predictions": 0})
                counts["requests"] += 1
                counts["predictions"] += rows
        return {"versions": versions, "files": files, "invalid_lines": invalid}

    def read_json(self, bucket: str, key: str) -> dict | None:
        """A JSON object, or None when the key does not exist."""
        try:
            return json.loads(self.conn.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def put_text(self, bucket: str, key: str, text: str, content_type: str) -> str:
        """Write (overwrite) one object; returns its ``s3://`` URI."""
        self.conn.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"), ContentType=content_type)
        return f"s3://{bucket}/{key}"


class CostMetricsHook(AwsBaseHook):
    """CloudWatch custom metrics of the report (one per figure).

    .. seealso::
        :external+boto3:py:meth:`CloudWatch.Client.put_metric_data`
    """

    BATCH = 500

    def __init__(self, *args, **kwargs):
        kwargs["client_type"] = "cloudwatch"
        super().__init__(*args, **kwargs)

    def put_metrics(self, namespace: str, metric_data: list[dict[str, Any]]) -> int:
        """Publish datums in batches; returns how many were sent."""
        for i in range(0, len(metric_data), self.BATCH):
            self.conn.put_metric_data(Namespace=namespace, MetricData=metric_data[i : i + self.BATCH])
        return len(metric_data)


class CostAlertHook(SnsHook):
    """The SNS topic cost alerts go to (created if missing: ``CreateTopic`` is idempotent by name).

    .. seealso::
        :external+boto3:py:meth:`SNS.Client.create_topic`
    """

    def ensure_topic(self, name: str, tags: dict[str, str] | None = None) -> str:
        tag_list = [{"Key": k, "Value": v} for k, v in sorted((tags or {}).items())]
        return self.conn.create_topic(Name=name, Tags=tag_list)["TopicArn"]


class SplitCostQueryFailed(AirflowException):
    """The split cost allocation query did not succeed on Athena; the message quotes Athena's reason."""


class SplitCostHook(AwsBaseHook):
    """Athena over the CUR 2.0 table with split cost allocation data (pod-level EKS cost).

    .. seealso::
        :external+boto3:py:meth:`Athena.Client.start_query_execution`,
        :external+boto3:py:meth:`Athena.Client.get_query_results`
    """

    def __init__(self, *args, **kwargs):
        kwargs["client_type"] = "athena"
        super().__init__(*args, **kwargs)

    def query_rows(self, query: str, *, database: str, workgroup: str, output_location: str,
                   poll_seconds: float = 5.0, max_polls: int = 360) -> tuple[str, list[list[str | None]]]:
        """Run ``query`` and return its execution id and every row of its result (the header row first).

        :param output_location: ``ResultConfiguration.OutputLocation`` (a workgroup that enforces its
            own location overrides it).
        """
        import time as clock

        qid = self.conn.start_query_execution(QueryString=query, QueryExecutionContext={"Database": database},
                                              ResultConfiguration={"OutputLocation": output_location},
                                              WorkGroup=workgroup)["QueryExecutionId"]
        for _ in range(max_polls):
            status = self.conn.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]
            if status["State"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            clock.sleep(poll_seconds)
        if status["State"] != "SUCCEEDED":
            raise SplitCostQueryFailed(f"Athena query {qid} in workgroup {workgroup!r} ended {status['State']}: "
                                       f"{status.get('StateChangeReason', 'no reason given')}")
        rows = []
        for page in self.conn.get_paginator("get_query_results").paginate(QueryExecutionId=qid):
            rows += [[c.get("VarCharValue") for c in r["Data"]] for r in page["ResultSet"]["Rows"]]
        return qid, rows
