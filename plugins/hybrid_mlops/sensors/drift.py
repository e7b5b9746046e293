"""Sensor on drift reports in S3, from this project's monitor or a SageMaker Model Monitor schedule."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, AirflowSkipException
from airflow.sdk import BaseSensorOperator

from hybrid_mlops.triggers.drift import DriftReportTrigger


class DriftReportSensor(BaseSensorOperator):
    """Waits for a ``constraint_violations.json`` with violations under an S3 prefix.

    Deferrable by default: one listing in ``execute``, then the wait moves to
    :class:`DriftReportTrigger` (async client). On timeout it raises ``AirflowSensorTimeout``
    (or skips with ``soft_fail``). Returns ``{"report_uri", "violations"}``.

    .. seealso:: https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-violations.html

    :param bucket: bucket of the reports (templated).
    :param prefix: key prefix, e.g. ``monitoring/<model>/`` or a Model Monitor output path (templated).
    :param start_after_key: ignore keys sorting at or before this one (templated).
    :param require_violations: only a report with at least one violation counts.
    :param deferrable: wait in the triggerer (default True).
    :param aws_conn_id: Airflow AWS connection.
    :param region_name: AWS region.
    """

    template_fields: Sequence[str] = ("bucket", "prefix", "start_after_key")

    def __init__(self, *, bucket: str, prefix: str, start_after_key: str = "", require_violations: bool = True,
                 deferrable: bool = True, aws_conn_id: str | None = "aws_default", region_name: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.bucket = bucket
        self.prefix = prefix
        self.start_after_key = start_after_key
        self.require_violations = require_violations
        self.deferrable = deferrable
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    suffix = "constraint_violations.json"

    def _find(self) -> dict | None:
        from hybrid_mlops.hooks.drift import DriftHook

        hook = DriftHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        reports = hook.find_reports(self.bucket, self.prefix, suffix=self.suffix, start_after_key=self.start_after_key,
                                    require_violations=self.require_violations)
        if not reports:
            return None
        return {"report_uri": f"s3://{self.bucket}/{reports[-1]['key']}", "violations": reports[-1]["violations"]}

    def poke(self, context) -> Any:
        found = self._find()
        if found:
            self.log.info("Violations report found: %s", found["report_uri"])
            return found
        return False

    def execute(self, context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if found := self._find():
            return found
        self.defer(
            trigger=DriftReportTrigger(
                bucket=self.bucket, prefix=self.prefix, suffix=self.suffix, start_after_key=self.start_after_key,
                require_violations=self.require_violations, deadline=time.time() + float(self.timeout),
                poke_interval=float(self.poke_interval), aws_conn_id=self.aws_conn_id, region_name=self.region_name),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout) + 60),
        )

    def execute_complete(self, context, event: dict | None = None) -> dict:
        if not event or "status" not in event:
            raise AirflowException(f"DriftReportSensor: invalid trigger event {event!r}")
        if event["status"] == "success":
            self.log.info("%s", event["message"])
            return {"report_uri": event["report_uri"], "violations": event["violations"]}
        if event["status"] == "timeout":
            if self.soft_fail:
                raise AirflowSkipException(event["message"])
            raise AirflowSensorTimeout(event["message"])
        raise AirflowException(f"DriftReportSensor: {event['message']}")


class CaptureWindowSensor(DriftReportSensor):
    """Waits for the first capture file (``*.jsonl``) of a window under ``capture/<model>/<yyyy>/<mm>/<dd>/<hh>/``.

    Same deferrable wait as :class:`DriftReportSensor`; returns ``{"report_uri": <first file>}``.

    .. seealso:: https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html

    :param bucket: artifacts bucket (templated).
    :param prefix: the window's capture prefix (templated).
    """

    suffix = ".jsonl"

    def __init__(self, **kwargs):
        kwargs.setdefault("require_violations", False)
        super().__init__(**kwargs)
