"""``monitor_<model>``: hourly drift and model-quality reports of the served model.

    wait_for_capture (deferrable CaptureWindowSensor; soft-fails after the grace period: an empty window
    still gets its report) -> drift_report (DriftReportOperator: DuckDB in the worker on ``local``, Athena
    in the configured database and workgroup on ``aws``) -> signal_drift (Asset event on
    ``drift_asset_uri(model)`` when the window has violations; skipped otherwise)

Parse time: no I/O, no heavy imports (DuckDB, pyarrow, boto3 and scipy load inside the tasks).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

from hybrid_mlops import settings
from hybrid_mlops.assets import drift_asset_uri
from hybrid_mlops.data.sources import schema_document
from hybrid_mlops.operators.drift import DriftReportOperator
from hybrid_mlops.sensors.drift import CaptureWindowSensor
from hybrid_mlops.specs.model import CRON_PRESETS

#: The hour a run reports: its data interval's start (the hour that just ended: the schedule is a
#: CronDataIntervalTimetable whatever ``[scheduler] create_cron_data_intervals`` says). A run created
#: without a logical date (REST API, ``logical_date: null``) has no ``data_interval_start`` in its context:
#: it reports the dag run's own interval when it has one, else the hour before ``run_after``.
WINDOW_START = ("(dag_run.data_interval_start if dag_run.data_interval_start is not none "
                "else dag_run.run_after - macros.timedelta(hours=1))")
WINDOW = "{{ " + WINDOW_START + ".strftime('%Y/%m/%d/%H') }}"


def capture_wait_seconds() -> float:
    """How long after the hour the monitor waits for the first capture file (env override)."""
    return float(os.environ.get("HYBRID_MLOPS_CAPTURE_WAIT_SECONDS", 1800))


def athena_settings() -> dict:
    """On ``aws`` the capture is flattened by Athena: its database, workgroup and result location from the
    settings; on ``local`` none (DuckDB in the worker). A setting missing here is left out so the DAG file
    still parses: the drift_report task then fails naming the variable."""
    if settings.is_local():
        return {}
    out = {}
    for name, read in (("athena_database", settings.athena_database), ("athena_workgroup", settings.athena_workgroup),
                       ("athena_output_location", settings.athena_output_location)):
        try:
            out[name] = read()
        except settings.SettingMissing:
            continue
    return out


def build(specs) -> list[DAG]:
    dags = []
    for spec in specs:
        if spec.schedule.monitor is None:
            continue
        asset = Asset(drift_asset_uri(spec.name))
        with DAG(
            dag_id=f"monitor_{spec.dag_suffix}",
            description=f"Hourly drift and model-quality reports of {spec.name}",
            schedule=CronDataIntervalTimetable(CRON_PRESETS.get(spec.schedule.monitor, spec.schedule.monitor),
                                               timezone="UTC"),
            start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
            catchup=False,
            max_active_runs=3,
            tags=["hybrid-mlops", "monitor", spec.name],
            doc_md=__doc__,
        ) as dag:
            wait = CaptureWindowSensor(
                task_id="wait_for_capture",
                bucket=settings.bucket(),
                prefix=f"capture/{spec.name}/{WINDOW}/",
                deferrable=True,
                poke_interval=60,
                timeout=capture_wait_seconds(),
                soft_fail=True,
                aws_conn_id=settings.aws_conn_id(),
            )
            report = DriftReportOperator(
                task_id="drift_report",
                model=spec.name,
                bucket=settings.bucket(),
                window_start="{{ " + WINDOW_START + ".isoformat() }}",
                drift_config=spec.drift.model_dump(),
                schema=schema_document(spec),
                model_package_group=spec.registry.model_package_group,
                sns_topic=f"hybrid-mlops-drift-{spec.name}",
                aws_conn_id=settings.aws_conn_id(),
                region_name=settings.region(),
                trigger_rule="none_failed",
                **athena_settings(),
            )

            @task(task_id="signal_drift", outlets=[asset])
            def signal_drift(summary: dict, *, outlet_events=None):
                """Emit the drift asset event (extra: report URI, violated features, window) on violations."""
                from airflow.sdk.exceptions import AirflowSkipException

                if not summary or not summary.get("violations"):
                    raise AirflowSkipException(f"no violations in the window ({(summary or {}).get('status')})")
                outlet_events[asset].extra = {
                    "report_uri": summary["report_uri"],
                    "violated_features": summary["violated_features"],
                    "window_start": summary["window_start"],
                    "window_end": summary["window_end"],
                    "model_package_arn": summary.get("model_package_arn"),
                }
                return outlet_events[asset].extra

            wait >> report
            signal_drift(report.output)
        dags.append(dag)
    return dags
