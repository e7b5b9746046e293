"""``watch_<model>``: retrain on an external SageMaker Model Monitor schedule's violations.

Built only for a spec that sets ``drift.external_report_prefix`` (the schedule's
``MonitoringOutputConfig`` S3 URI, or any prefix above its ``constraint_violations.json`` files):

    wait_for_report (deferrable DriftReportSensor; soft-fails when no new report has violations) ->
    signal_drift (Asset event on ``drift_asset_uri(model)``, which schedules ``retrain_<model>``)

A report counts once: only objects written after the previous successful run ended (the first run:
after its data interval's start) are read, so an old report never starts a retrain and a new one does.

Parse time: no I/O (the prefix is split, never listed).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from airflow.sdk import DAG, Asset, task

from hybrid_mlops import settings
from hybrid_mlops.assets import drift_asset_uri
from hybrid_mlops.layout import split_s3_uri
from hybrid_mlops.sensors.drift import DriftReportSensor

#: Reports written after the previous successful run ended are new (that run saw only older ones); the
#: first run reads from its data interval's start, or, created without a logical date (REST API, the UI's
#: trigger: no ``data_interval_start`` in the context), from the hour before it was triggered.
SINCE = ("{{ params.since or (prev_end_date_success or dag_run.data_interval_start "
         "or dag_run.run_after - macros.timedelta(hours=1)).isoformat() }}")


def params() -> dict:
    """The trigger form: from when reports count (a manual re-check of an older report)."""
    from airflow.sdk import Param

    return {"since": Param(
        "", type="string", title="Reports written after (UTC)",
        pattern=r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?(\.\d+)?(Z|[+-]\d{2}:\d{2})?)?$",
        description="ISO 8601 time, e.g. 2026-11-30T14:00:00+00:00; empty = after the previous successful run")}


def report_wait_seconds() -> float:
    """How long a run waits for a new violations report before it skips (env override)."""
    return float(os.environ.get("HYBRID_MLOPS_REPORT_WAIT_SECONDS", 600))


def build(specs) -> list[DAG]:
    dags = []
    for spec in specs:
        uri = getattr(spec.drift, "external_report_prefix", None)
        if not uri:
            continue
        bucket, prefix = split_s3_uri(uri)
        asset = Asset(drift_asset_uri(spec.name))
        with DAG(
            dag_id=f"watch_{spec.dag_suffix}",
            description=f"Retrain {spec.name} on the Model Monitor violations under {uri}",
            schedule=spec.schedule.monitor or "@hourly",
            start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
            catchup=False,
            max_active_runs=1,
            tags=["hybrid-mlops", "watch", spec.name],
            params=params(),
            doc_md=__doc__,
        ) as dag:
            wait = DriftReportSensor(
                task_id="wait_for_report",
                bucket=bucket,
                prefix=prefix.lstrip("/"),
                modified_after=SINCE,
                deferrable=True,
                poke_interval=60,
                timeout=report_wait_seconds(),
                soft_fail=True,
                aws_conn_id=settings.aws_conn_id(),
            )

            @task(task_id="signal_drift", outlets=[asset])
            def signal_drift(found: dict, *, outlet_events=None):
                """Emit the drift asset event (extra: report URI, violated features, check types)."""
                outlet_events[asset].extra = {
                    "report_uri": found["report_uri"],
                    "violated_features": found["violated_features"],
                    "check_types": sorted({v.get("constraint_check_type", "") for v in found["violations"]
                                           if isinstance(v, dict)} - {""}),
                    "source": "external_model_monitor",
                }
                return outlet_events[asset].extra

            signal_drift(wait.output)
        dags.append(dag)
    return dags
