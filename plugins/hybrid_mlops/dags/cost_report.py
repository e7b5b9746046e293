"""The ``cost_report`` DAG: one DAG for every model spec, one run per day.

A run with logical date ``L`` reports the day before (``L - 1``, in UTC): the morning report of
yesterday. The ``day`` param overrides it for a manual run; a backfill
(``airflow backfill create --dag-id cost_report --from-date ... --to-date ...``) re-runs a range, and
each run overwrites only its own day's ``cost-reports/<day>/``.

The schedule comes from ``HYBRID_MLOPS_COST_REPORT_SCHEDULE`` (a cron expression in UTC, default
``0 7 * * *``: Cost Explorer has usually caught up with yesterday by then). Nothing here does I/O.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from airflow.sdk import DAG, CronTriggerTimetable, Param

from hybrid_mlops import settings
from hybrid_mlops.cost.explorer import DEFAULT_MAX_PAGES
from hybrid_mlops.operators.cost import (
    CapturePredictionsOperator,
    CostExplorerOperator,
    EksSplitCostOperator,
    CostReportOperator,
    CostSignalsOperator,
    TrainingJobCostOperator,
)
from hybrid_mlops.specs.model import ModelSpec

DAG_ID = "cost_report"
DEFAULT_SCHEDULE = "0 7 * * *"
#: The reported day: the ``day`` param, else the day before the logical date; a run created without a
#: logical date (REST API, ``logical_date: null``) has no ``ds``: the day before its ``run_after`` (UTC).
DAY = ("{{ params.day or macros.ds_add(ds if ds is defined "
       "else dag_run.run_after.strftime('%Y-%m-%d'), -1) }}")


def schedule() -> str:
    return os.environ.get("HYBRID_MLOPS_COST_REPORT_SCHEDULE", DEFAULT_SCHEDULE)


def model_settings(spec: ModelSpec) -> dict:
    """What the cost tasks need from a spec, as primitives (they travel through templates and XCom)."""
    return {
        "name": spec.name,
        "budget_usd": spec.cost.daily_budget_usd,
        "anomaly_sigma": spec.cost.anomaly_sigma,
        "trailing_days": spec.cost.trailing_days,
        "restate_days": spec.cost.restate_days,
        "tags": spec.cost_tags(),
        "regions": list(spec.serving.regions),
        "clusters": sorted({spec.serving.cluster_name.format(region=r) for r in spec.serving.regions}),
    }


def build(specs: list[ModelSpec]) -> list[DAG]:
    """One ``cost_report`` DAG covering every spec (none when there is no spec)."""
    if not specs:
        return []
    models = [model_settings(s) for s in specs]
    names = [m["name"] for m in models]
    history_days = max(30, max(m["trailing_days"] for m in models) + 1)
    with DAG(
        dag_id=DAG_ID,
        description="Daily cost: training vs serving per model and version, budgets and anomalies",
        # A trigger timetable whatever ``[scheduler] create_cron_data_intervals`` says: logical date = run time.
        schedule=CronTriggerTimetable(schedule(), timezone="UTC"),
        start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        tags=["hybrid-mlops", "cost"],
        params={
            "day": Param("", type="string", title="Day to report",
                         description="YYYY-MM-DD; empty = the day before the logical date",
                         pattern=r"^(\d{4}-\d{2}-\d{2})?$"),
            "notify": Param(True, type="boolean", title="Send alerts (SNS, Slack)",
                            description="Publish budget and anomaly alerts; off: write the report only"),
            "max_pages_per_query": Param(DEFAULT_MAX_PAGES, type="integer", minimum=1, maximum=100,
                                         title="Cost Explorer pages per query (each page is a billed request)",
                                         description="Stop paging a Cost Explorer query after this many pages"),
        },
        doc_md=__doc__,
    ) as dag:
        conn = {"aws_conn_id": settings.aws_conn_id()}
        bucket = settings.bucket()
        ce = CostExplorerOperator(task_id="cost_explorer", day=DAY, models=models, history_days=history_days,
                                  max_pages_per_query="{{ params.max_pages_per_query }}", **conn)
        jobs = TrainingJobCostOperator(task_id="training_jobs", day=DAY, models=names, **conn)
        preds = CapturePredictionsOperator(task_id="predictions", day=DAY, models=names, bucket=bucket, **conn)
        # On aws each model's EKS serving cost comes from split cost allocation data (pods' cost in the CUR,
        # their InferenceService's ``model`` label as a cost allocation tag); local has no CUR: the seeded
        # Cost Explorer carries model-tagged rows instead.
        eks_split = (None if settings.is_local() else
                     EksSplitCostOperator(task_id="eks_split_cost", day=DAY, models=models,
                                          history_days=history_days, **conn).output)
        report = CostReportOperator(task_id="report", day=DAY, models=models, bucket=bucket,
                                    cost_explorer=ce.output, training_jobs=jobs.output, predictions=preds.output,
                                    eks_split=eks_split, **conn)
        signals = CostSignalsOperator(task_id="signals", day=DAY, bucket=bucket, notify="{{ params.notify }}",
                                      **conn)
        report >> signals
    return [dag]
