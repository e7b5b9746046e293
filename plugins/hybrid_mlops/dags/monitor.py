"""``monitor_<model>``: hourly drift and model-quality reports of the served model.

    wait_for_capture (deferrable CaptureWindowSensor; soft-fails after the grace period: an empty window
    still gets its report) -> drift_report (DriftReportOperator: DuckDB in the worker on ``local``, Athena
    in the configured database and workgroup on ``aws``) -> signal_drift (Asset event on
    ``drift_asset_uri(model)`` when the window has violations; skipped otherwise)

With ``drift.bias`` in the spec, ``bias_drift`` (BiasDriftOperator: Clarify's bias metrics of the facet vs
the registration's baseline) runs beside drift_report; with ``drift.feature_attribution``,
``attribution_inputs`` -> ``attributions`` (a SageMaker Processing job running the model; a subprocess of
the serving env on ``local``) -> ``feature_attribution_drift`` (nDCG of the SHAP ranking). Their violations
reach signal_drift like the data-quality ones.

Parse time: no I/O, no heavy imports (DuckDB, pyarrow, boto3 and scipy load inside the tasks).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

from hybrid_mlops import settings
from hybrid_mlops.assets import drift_asset_uri
from hybrid_mlops.data.sources import schema_document
from hybrid_mlops.operators.drift import (
    AttributionInputsOperator,
    AttributionsJobOperator,
    BiasDriftOperator,
    DriftReportOperator,
    FeatureAttributionDriftOperator,
)
from hybrid_mlops.sensors.drift import CaptureWindowSensor
from hybrid_mlops.specs.model import CRON_PRESETS

#: The hour a run reports: its data interval's start (the hour that just ended: the schedule is a
#: CronDataIntervalTimetable whatever ``[scheduler] create_cron_data_intervals`` says). A run created
#: without a logical date (REST API, ``logical_date: null``) has no ``data_interval_start`` in its context:
#: it reports the dag run's own interval when it has one, else the hour before ``run_after``.
#: The form's hour field (a manual re-run of a past hour) wins over both.
WINDOW_START = ("(macros.datetime.strptime(params.hour[:13], '%Y-%m-%dT%H') if params.hour "
                "else dag_run.data_interval_start if dag_run.data_interval_start is not none "
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


def params() -> dict:
    """The trigger form: which hour to report, and whether violations may start a retrain."""
    from airflow.sdk import Param

    return {
        "hour": Param("", type="string", title="Hour to report (UTC)",
                      pattern=r"^(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]))?$",
                      description="YYYY-MM-DDTHH, e.g. 2026-11-30T14 (the window 14:00-15:00 UTC); "
                                  "empty = the hour before the run"),
        "signal_drift": Param(True, type="boolean", title="Signal drift",
                              description="Emit the drift asset event on violations (it schedules a retrain); "
                                          "off: report only, e.g. when re-running a past hour"),
    }


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
            params=params(),
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
            common = dict(
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
            report = DriftReportOperator(task_id="drift_report", **common)
            monitors = []
            if spec.drift.bias is not None:
                bias = BiasDriftOperator(task_id="bias_drift", bias_config=spec.drift.bias.model_dump(), **common)
                wait >> bias
                monitors.append(bias.output)
            if (fa := spec.drift.feature_attribution) is not None:
                inputs = AttributionInputsOperator(
                    task_id="attribution_inputs", attribution_config=fa.model_dump(),
                    image_uri=fa.processing_image_uri or spec.serving.image, tags=spec.cost_tags(), **common)
                job = AttributionsJobOperator(task_id="attributions", config=inputs.output,
                                              aws_conn_id=settings.aws_conn_id(), region_name=settings.region())
                attribution = FeatureAttributionDriftOperator(
                    task_id="feature_attribution_drift", attribution_config=fa.model_dump(), job=job.output,
                    **{**common, "trigger_rule": "all_success"})
                wait >> inputs
                monitors.append(attribution.output)

            @task(task_id="signal_drift", outlets=[asset], trigger_rule="none_failed")
            def signal_drift(summary: dict, monitors: list | None = None, *, outlet_events=None, params=None):
                """Emit the drift asset event (extra: report URI, violated features, window) when the data-quality
                report or any other monitor (bias, feature attribution) has violations."""
                from airflow.sdk.exceptions import AirflowSkipException

                found = [s for s in [summary, *(monitors or [])] if s and s.get("violations")]
                if not found:
                    raise AirflowSkipException(f"no violations in the window ({(summary or {}).get('status')})")
                if not (params or {}).get("signal_drift", True):
                    raise AirflowSkipException("violations found, not signalled: the run's signal_drift is off")
                first = found[0]
                outlet_events[asset].extra = {
                    "report_uri": first["report_uri"],
                    "violated_features": sorted({f for s in found for f in s["violated_features"]}),
                    "window_start": first["window_start"],
                    "window_end": first["window_end"],
                    "model_package_arn": first.get("model_package_arn"),
                    "monitors": {s.get("monitor", "data-quality"): {"violations": s["violations"],
                                                                     "report_uri": s["report_uri"]} for s in found},
                }
                return outlet_events[asset].extra

            wait >> report
            signal_drift(report.output, monitors)
        dags.append(dag)
    return dags
