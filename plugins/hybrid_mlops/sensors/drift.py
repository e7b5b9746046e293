"""Sensor on drift reports in S3, from this project's monitor or a SageMaker Model Monitor schedule."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, AirflowSkipException
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from hybrid_mlops.triggers.drift import DriftReportTrigger, latest_report


class DriftReportSensor(BaseSensorOperator):
    """Waits for a ``constraint_violations.json`` with violations under an S3 prefix.

    Deferrable by default: one listing in ``execute``, then the wait moves to
    :class:`DriftReportTrigger` (async client). On timeout it raises ``AirflowSensorTimeout``
    (or skips with ``soft_fail``). Both modes return (XCom) the newest matching report:
    ``{"report_uri", "key", "violations", "violated_features"}``; ``poke`` wraps it in a
    ``PokeReturnValue``.

    .. seealso:: https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-violations.html

    :param bucket: bucket of the reports (templated).
    :param prefix: key prefix, e.g. ``monitoring/<model>/`` or a Model Monitor output path (templated).
    :param start_after_key: ignore keys sorting at or before this one (templated).
    :param modified_after: ignore objects written at or before this ISO 8601 time, e.g. the run's
        ``data_interval_end``, so each report is acted on once (templated).
    :param require_violations: only a report with at least one violation counts.
    :param deferrable: wait in the triggerer (default True).
    :param aws_conn_id: Airflow AWS connection.
    :param region_name: AWS region.
    """

    template_fields: Sequence[str] = ("bucket", "prefix", "start_after_key", "modified_after")

    def __init__(self, *, bucket: str, prefix: str, start_after_key: str = "", modified_after: str = "",
                 require_violations: bool = True, deferrable: bool = True, aws_conn_id: str | None = "aws_default", region_name: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.bucket = bucket
        self.prefix = prefix
        self.start_after_key = start_after_key
        self.modified_after = modified_after
        self.require_violations = require_violations
        self.deferrable = deferrable
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    suffix = "constraint_violations.json"

    def _find(self) -> dict | None:
        from hybrid_mlops.hooks.drift import DriftHook

        hook = DriftHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        return latest_report(hook, self.bucket, self.prefix, suffix=self.suffix, start_after_key=self.start_after_key,
                             modified_after=self.modified_after, require_violations=self.require_violations)

    def poke(self, context) -> PokeReturnValue:
        found = self._find()
        if found:
            self.log.info("Report found: %s (%d violations)", found["report_uri"], len(found["violations"]))
        return PokeReturnValue(is_done=bool(found), xcom_value=found)

    def execute(self, context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if found := self._find():
            return found
        self.defer(
            trigger=DriftReportTrigger(
                bucket=self.bucket, prefix=self.prefix, suffix=self.suffix, start_after_key=self.start_after_key,
                modified_after=self.modified_after, require_violations=self.require_violations, deadline=time.time() + float(self.timeout),
                poke_interval=float(self.poke_interval), aws_conn_id=self.aws_conn_id, region_name=self.region_name),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout) + 60),
        )

    def execute_complete(self, context, event: dict | None = None) -> dict:
        if not event or "status" not in event:
            raise AirflowException(f"DriftReportSensor: invalid trigger event {event!r}")
        if event["status"] == "success":
            self.log.info("%s", event["message"])
            return {k: event.get(k) for k in ("report_uri", "key", "violations", "violated_features")}
        if event["status"] == "timeout":
            if self.soft_fail:
                raise AirflowSkipException(event["message"])
            raise AirflowSensorTimeout(event["message"])
        raise AirflowException(f"DriftReportSensor: {event['message']}")


class CaptureWindowSensor(DriftReportSensor):
    """Waits for the first capture file (``*.jsonl``) of a window under ``capture/<model>/<yyyy>/<mm>/<dd>/<hh>/``.

    Same deferrable wait as :class:`DriftReportSensor`; returns ``{"report_uri": <newest file>, ...}``.

    .. seealso:: https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html

    :param bucket: artifacts bucket (templated).
    :param prefix: the window's capture prefix (templated).
    """

    suffix = ".jsonl"

    def __init__(self, **kwargs):
        kwargs.setdefault("require_violations", False)
        super().__init__(**kwargs)
