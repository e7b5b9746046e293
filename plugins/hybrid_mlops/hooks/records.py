"""What the DAGs leave in the artifacts bucket, read back for the Models page: deployment records,
the monitor's newest drift report, the daily cost report.

Every read is bounded: a handful of S3 requests per model whatever the history's length (the newest
hourly report is found by one ``StartAfter`` listing of what is newer than the newest seen, or, cold,
of the last :data:`RECENT_HOURS`; when that finds none, by descending the ``<yyyy>/<mm>/<dd>/<hh>/``
levels with a delimiter).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.exceptions import ClientError

from hybrid_mlops import layout

#: A cold look for the newest drift report first lists this many hours back (one request), then descends.
RECENT_HOURS = 24
#: Objects the page may show through its report route (what the monitor and the cost report write).
REPORT_PREFIXES = ("monitoring/", "cost-reports/")


class RecordsHook(S3Hook):
    """Deployment records, drift reports and cost reports in the artifacts bucket.

    .. seealso:: https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html
    """

    hook_name = "Hybrid MLOps records"
    _newest_lock = threading.Lock()
    #: (bucket, model) -> the newest report.json key seen: the next look lists only what is newer.
    _newest_report: dict[tuple[str, str], str] = {}
    #: (bucket, key) -> (ETag, report): a report is read again only when it changed.
    _reports: dict[tuple[str, str], tuple[str, dict]] = {}

    def get_json(self, bucket: str, key: str) -> dict | None:
        """The JSON document at ``key``, None when there is none."""
        try:
            body = self.conn.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as err:
            if err.response["Error"]["Code"] in ("NoSuchKey", "404", "NoSuchBucket"):
                return None
            raise
        return json.loads(body)

    def get_report(self, bucket: str, key: str) -> tuple[bytes, str] | None:
        """``(body, content type)`` of a report object under :data:`REPORT_PREFIXES`, None when absent."""
        if not key.startswith(REPORT_PREFIXES) or ".." in key.split("/"):
            raise ValueError(f"{key!r} is not a report (prefixes {REPORT_PREFIXES})")
        try:
            obj = self.conn.get_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if err.response["Error"]["Code"] in ("NoSuchKey", "404", "NoSuchBucket"):
                return None
            raise
        return obj["Body"].read(), obj.get("ContentType") or "application/octet-stream"

    # -- deployment records ------------------------------------------------------------------------

    def put_deployment_record(self, bucket: str, model: str, record: dict) -> str:
        key = layout.deployment_record_key(model)
        self.conn.put_object(Bucket=bucket, Key=key, Body=json.dumps(record, indent=2, sort_keys=True).encode(),
                             ContentType="application/json")
        return f"s3://{bucket}/{key}"

    def deployment_record(self, bucket: str, model: str) -> dict | None:
        return self.get_json(bucket, layout.deployment_record_key(model))

    # -- drift reports -----------------------------------------------------------------------------

    def _prefixes(self, bucket: str, prefix: str) -> list[str]:
        found, kwargs = [], {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
        while True:
            page = self.conn.list_objects_v2(**kwargs)
            found += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                return found
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def newest_drift_report_key(self, bucket: str, model: str) -> tuple[str, str | None] | None:
        """``(key, ETag or None)`` of the newest ``monitoring/<model>/<yyyy>/<mm>/<dd>/<hh>/report.json``."""
        base = f"monitoring/{model}/"
        with self._newest_lock:
            known = self._newest_report.get((bucket, model))
        # Warm: one listing from the newest hour seen (its report, re-written or not, and newer ones). Cold: one
        # listing of the last RECENT_HOURS (an hourly monitor's newest report is there); else the descent below.
        known = known or layout.monitoring_prefix(model, datetime.now(timezone.utc) - timedelta(hours=RECENT_HOURS))
        page = self.conn.list_objects_v2(Bucket=bucket, Prefix=base, StartAfter=known.rsplit("/", 1)[0], MaxKeys=1000)
        reports = {o["Key"]: o["ETag"] for o in page.get("Contents", []) if o["Key"].endswith("/report.json")}
        if reports and not page.get("IsTruncated"):
            key = max(reports)
            self._remember(bucket, model, key)
            return key, reports[key]
        prefix = base
        for _level in range(4):  # yyyy/ mm/ dd/ hh/: take the newest at each level
            levels = sorted(self._prefixes(bucket, prefix))
            if not levels:
                return None
            prefix = levels[-1]
        key = f"{prefix}report.json"
        self._remember(bucket, model, key)
        return key, None

    def _remember(self, bucket: str, model: str, key: str) -> None:
        with self._newest_lock:
            self._newest_report[(bucket, model)] = key

    def newest_drift_report(self, bucket: str, model: str) -> dict | None:
        """The newest window's ``report.json`` (the monitor's summary) with its ``report_key``; read again
        only when its ETag changed."""
        found = self.newest_drift_report_key(bucket, model)
        if not found:
            return None
        key, etag = found
        with self._newest_lock:
            cached = self._reports.get((bucket, key))
        if etag and cached and cached[0] == etag:
            return cached[1]
        try:
            obj = self.conn.get_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if err.response["Error"]["Code"] in ("NoSuchKey", "404", "NoSuchBucket"):
                return None
            raise
        report = {**json.loads(obj["Body"].read()), "report_key": key}
        with self._newest_lock:
            self._reports[(bucket, key)] = (obj["ETag"], report)
        return report

    # -- cost reports ------------------------------------------------------------------------------

    def cost_report(self, bucket: str, day: str) -> dict | None:
        """``cost-reports/<day>/cost.json``; when that day has none yet, the newest day before it."""
        found = self.get_json(bucket, f"{layout.cost_report_prefix(day)}cost.json")
        if found is not None:
            return found
        days = [p.rstrip("/").rsplit("/", 1)[-1] for p in self._prefixes(bucket, "cost-reports/")]
        for older in sorted((d for d in days if d < day), reverse=True)[:3]:
            found = self.get_json(bucket, f"{layout.cost_report_prefix(older)}cost.json")
            if found is not None:
                return found
        return None


def jsonable(value: Any) -> Any:
    """Datetimes as ISO strings (boto3 responses), recursively."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value.isoformat() if hasattr(value, "isoformat") else value
