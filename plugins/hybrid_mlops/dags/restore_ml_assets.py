"""The ``restore_ml_assets`` DAG: rebuild a backup snapshot into an empty region or account (manual).

    plan ── go (not a dry run) ── artifacts ── registry ── variables ── verify

``plan`` resolves the snapshot (default: the newest complete one), checks the snapshot's parts against its
manifest, names the restored buckets (``target_bucket``, default ``{bucket}-{region}``: bucket names are
global) and refuses a target that already holds objects or versions unless ``overwrite`` is set. A dry run
stops there, having logged the plan. ``artifacts`` checks every copy's SHA-256 against the manifest,
``registry`` re-registers the versions oldest first with their status, lifecycle stage and metadata (model
data URLs pointed at the restored buckets), ``variables`` sets the project's Variables, and ``verify`` fails
naming any mismatch. A rerun continues what an earlier try restored. See :mod:`hybrid_mlops.backup`.

With ``target_role_arn`` the restore runs as that role (``sts:AssumeRole`` from the AWS connection), i.e. in
its account; the role must be allowed to read the backup bucket (a bucket policy in the backup account).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from airflow.sdk import DAG, Param, task

from hybrid_mlops import settings
from hybrid_mlops.backup import DEFAULT_TARGET_BUCKET, LATEST, SNAPSHOT_ID
from hybrid_mlops.specs.model import ModelSpec

DAG_ID = "restore_ml_assets"
ROLE_ARN = r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}"


def params() -> dict:
    return {
        "snapshot_id": Param(LATEST, type="string", pattern=rf"^({LATEST}|{SNAPSHOT_ID})$", title="Snapshot",
                             description=f"{LATEST!r} (the newest complete snapshot) or a snapshot id, e.g. "
                                         "20261201T010000Z-1a2b3c4d (the folders under snapshots/ of the backup bucket)"),
        "target_region": Param(type="string", pattern=settings.REGION_PATTERN, title="Target region",
                               description="The region to rebuild in (e.g. the backup's region when the artifacts' "
                                           "region is lost)"),
        "target_bucket": Param(DEFAULT_TARGET_BUCKET, type="string", minLength=3, maxLength=120,
                               pattern=r"^[a-z0-9.{}-]+$", title="Restored bucket name",
                               description="Name of each restored bucket; {bucket} is the source bucket's name and "
                                           "{region} the target region"),
        "target_role_arn": Param("", type="string", pattern=rf"^({ROLE_ARN})?$", title="Target account role ARN",
                                 description="Optional: restore into the account of this role (sts:AssumeRole); "
                                             "empty: the AWS connection's own account"),
        "overwrite": Param(False, type="boolean", title="Restore over a non-empty target",
                           description="Off: refuse when the target already holds objects or model versions"),
        "dry_run": Param(True, type="boolean", title="Dry run",
                         description="Only resolve, check and log the plan; change nothing"),
    }


def build(specs: list[ModelSpec]) -> list[DAG]:
    """One ``restore_ml_assets`` DAG for the fleet (none when there is no spec)."""
    if not specs:
        return []
    with DAG(
        dag_id=DAG_ID,
        description="Rebuild a backup snapshot (registry, artifacts, Variables) into an empty region or account",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        tags=["hybrid-mlops", "backup"],
        params=params(),
        doc_md=__doc__,
    ) as dag:

        @task
        def plan(**context) -> dict:
            from hybrid_mlops import backup

            return backup.plan_restore(dict(context["params"]))

        @task.short_circuit
        def go(**context) -> bool:
            if context["params"]["dry_run"]:
                logging.getLogger(__name__).info("Dry run: the plan is in the log of 'plan'; nothing was changed")
                return False
            return True

        @task
        def artifacts(planned: dict) -> dict:
            from hybrid_mlops import backup

            return backup.restore_artifacts(planned)

        @task
        def registry(planned: dict) -> list[dict]:
            from hybrid_mlops import backup

            return backup.restore_registry(planned)

        @task
        def variables(planned: dict) -> dict:
            from hybrid_mlops import backup

            return backup.restore_variables(planned)

        @task
        def verify(planned: dict) -> dict:
            from hybrid_mlops import backup

            return backup.verify_restore(planned)

        planned = plan()
        restored_artifacts = artifacts(planned)
        restored_registry = registry(planned)
        restored_variables = variables(planned)
        planned >> go() >> restored_artifacts >> restored_registry >> restored_variables >> verify(planned)
    return [dag]
