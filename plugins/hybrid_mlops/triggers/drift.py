"""Waits for a Model Monitor violations report in S3 (``constraint_violations.json``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from hybrid_mlops.hooks.drift import DriftHook


def latest_report(hook: DriftHook, bucket: str, prefix: str, *, suffix: str = "constraint_violations.json",
                  start_after_key: str = "", modified_after: str = "", require_violations: bool = True) -> dict | None:
    """The newest matching report under a prefix, or None: ``{"report_uri", "key", "violations", "violated_features"}``.

    Lists once, keeps keys after ``start_after_key`` and objects written after ``modified_after`` (ISO
    8601), then reads candidates newest first and stops at the first with a violation: a long-lived
    Model Monitor prefix costs one listing and usually one GET per poke, not one GET per report.
    """
    listed = hook.find_reports(bucket, prefix, suffix=suffix, start_after_key=start_after_key, require_violations=False)
    if modified_after:
        cutoff = datetime.fromisoformat(modified_after)
        listed = [r for r in listed if datetime.fromisoformat(r["last_modified"]) > cutoff]
    for report in reversed(listed):
        violations: list = []
        if require_violations:
            try:
                violations = json.loads(hook.read_key(report["key"], bucket)).get("violations") or []
            except (ValueError, AttributeError):  # not a violations report: keep looking
                continue
            if not violations:
                continue
        return {"report_uri": f"s3://{bucket}/{report['key']}", "key": report["key"], "violations": violations,
                "violated_features": sorted({v.get("feature_name", "") for v in violations if isinstance(v, dict)} - {""})}
    return None


class DriftReportTrigger(BaseTrigger):
    """Polls an S3 prefix until a violations report (or any key with ``suffix``) appears, or a deadline passes.

    The listing runs off the event loop (``asyncio.to_thread``) and the wait is ``asyncio.sleep``:
    the provider's aiobotocore client cannot be installed beside this project's boto3 pin (aiobotocore
    pins an older botocore), so the trigger keeps the triggerer's loop free this way instead.

    Any producer's report counts: this project's monitor (``monitoring/<model>/...``) or a SageMaker
    Model Monitor schedule (``<output prefix>/<endpoint>/<schedule>/<yyyy>/<mm>/<dd>/<hh>/``).

    .. seealso:: https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html

    :param bucket: bucket of the reports.
    :param prefix: key prefix to search.
    :param suffix: what a matching key ends with.
    :param start_after_key: only keys sorting after this one count (reports of earlier windows).
    :param modified_after: only objects written after this ISO 8601 time count.
    :param require_violations: only reports with at least one violation count.
    :param deadline: epoch seconds after which the trigger reports a timeout.
    :param poke_interval: seconds between listings.
    :param aws_conn_id: Airflow AWS connection.
    :param region_name: AWS region.
    """

    def __init__(self, *, bucket: str, prefix: str, suffix: str = "constraint_violations.json", start_after_key: str = "", require_violations: bool = True,
                 deadline: float, modified_after: str = "", poke_interval: float = 60.0, aws_conn_id: str | None = "aws_default",
                 region_name: str | None = None):
        super().__init__()
        self.bucket = bucket
        self.prefix = prefix
        self.suffix = suffix
        self.start_after_key = start_after_key
        self.modified_after = modified_after
        self.require_violations = require_violations
        self.deadline = deadline
        self.poke_interval = poke_interval
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"bucket": self.bucket, "prefix": self.prefix, "suffix": self.suffix, "start_after_key": self.start_after_key,
             "modified_after": self.modified_after, "require_violations": self.require_violations, "deadline": self.deadline,
             "poke_interval": self.poke_interval, "aws_conn_id": self.aws_conn_id, "region_name": self.region_name},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = DriftHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        location = f"s3://{self.bucket}/{self.prefix}"
        try:
            while True:
                found = await asyncio.to_thread(
                    latest_report, hook, self.bucket, self.prefix, suffix=self.suffix,
                    start_after_key=self.start_after_key, modified_after=self.modified_after,
                    require_violations=self.require_violations)
                if found:
                    yield TriggerEvent({"status": "success", "message": f"found {found['report_uri']}", **found})
                    return
                if time.time() >= self.deadline:
                    yield TriggerEvent({"status": "timeout", "report_uri": None,
                                        "message": f"nothing matching *{self.suffix} under {location} before the deadline"})
                    return
                await asyncio.sleep(max(min(self.poke_interval, self.deadline - time.time()), 0.05))
        except Exception as err:  # one event, never a crash of the triggerer
            yield TriggerEvent({"status": "error", "report_uri": None, "message": f"{type(err).__name__}: {err}"})
