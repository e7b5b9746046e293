"""The ``backup_ml_assets`` DAG: one DAG for the whole fleet, one snapshot per day.

    backup_bucket ─┬─ registry ── artifacts ─┬─ manifest (written last)
                   └─ configuration ─────────┘

The snapshot goes to ``HYBRID_MLOPS_BACKUP_BUCKET`` (versioned; created with versioning on when missing,
refused when it is not versioned) in ``HYBRID_MLOPS_BACKUP_REGION``, another region than the artifacts'.
What it holds and how a snapshot is laid out: :mod:`hybrid_mlops.backup`. ``restore_ml_assets`` rebuilds one.
The schedule comes from ``HYBRID_MLOPS_BACKUP_SCHEDULE`` (cron, UTC; default ``0 1 * * *``). Nothing here
does I/O at parse time.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, CronTriggerTimetable, task

from hybrid_mlops.specs.model import ModelSpec

DAG_ID = "backup_ml_assets"
DEFAULT_SCHEDULE = "0 1 * * *"


def schedule() -> str:
    return os.environ.get("HYBRID_MLOPS_BACKUP_SCHEDULE", DEFAULT_SCHEDULE)


def build(specs: list[ModelSpec]) -> list[DAG]:
    """One ``backup_ml_assets`` DAG covering every spec (none when there is no spec)."""
    if not specs:
        return []
    groups = sorted(s.registry.model_package_group for s in specs)
    names = sorted(s.name for s in specs)
    regions = sorted({r for s in specs for r in s.serving.regions})
    with DAG(
        dag_id=DAG_ID,
        description="Daily snapshot of the registry, the model artifacts and the configuration in another region",
        schedule=CronTriggerTimetable(schedule(), timezone="UTC"),
        start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
        tags=["hybrid-mlops", "backup"],
        doc_md=__doc__,
    ) as dag:

        @task
        def backup_bucket(**context) -> dict:
            from hybrid_mlops import backup

            return backup.prepare_backup(context)

        @task
        def registry(prepared: dict) -> dict:
            from hybrid_mlops import backup

            return backup.backup_registry(groups, prepared)

        @task
        def artifacts(prepared: dict, exported: dict) -> list[dict]:
            from hybrid_mlops import backup

            return backup.backup_artifacts(prepared, exported)

        @task
        def configuration(prepared: dict) -> dict:
            from hybrid_mlops import backup

            return backup.backup_configuration(names, regions, prepared)

        @task
        def manifest(prepared: dict, exported: dict, copied: list[dict], config: dict) -> dict:
            from hybrid_mlops import backup

            return backup.write_manifest(prepared, exported, copied, config)

        prepared = backup_bucket()
        exported = registry(prepared)
        manifest(prepared, exported, artifacts(prepared, exported), configuration(prepared))
    return [dag]
