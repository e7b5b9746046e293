"""``promote_<model>``: copy an Approved version from the dev account into the prod account, after a person approves.

Manual (a form: the version, default the newest Approved one, and the prod lifecycle stage). Built for
the models whose spec has a ``promotion`` section::

    plan ── not_yet_promoted ── approve_promotion ── grant_prod_read ── copy_artifacts ── register_in_prod ── record_promotion
     (dev version, metrics,      (Airflow human-in-   (dev group policy:  (prod bucket,      (prod group: Approved,  (dev version:
      stage, objects; prod        the-loop: Approve/   prod may read it)   SSE-KMS prod key,  stage, metadata)        promoted_to)
      version already there?)     Reject, shows plan)                      checksums)

Nothing is written in prod before the approval; a rejection (or no answer before
``promotion.approval_timeout_hours``) writes nothing. A rerun of a promoted version finds its prod
version (``source_package_arn``) and stops after ``plan``. Prod is reached as ``promotion.role_arn``,
assumed with ``sts:AssumeRole`` from the Airflow AWS connection.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

from hybrid_mlops.specs.model import ModelSpec

LATEST = "latest-approved"


def build(specs: list[ModelSpec]) -> list[DAG]:
    return [_build_one(spec.model_copy(deep=True)) for spec in specs if spec.promotion is not None]


def _params(spec: ModelSpec) -> dict:
    p = spec.promotion
    return {
        "version": Param(
            LATEST, type="string", pattern=rf"^({LATEST}|[0-9]+)$",
            description=f"Version of {spec.registry.model_package_group} (dev) to promote, or {LATEST!r} "
                        "(the newest Approved one). It must be Approved.",
        ),
        "stage": Param(
            p.stage, type="string", enum=["staging", "prod"],
            description=f"Lifecycle stage (ModelLifeCycle) of the version in account {p.account_id}.",
        ),
    }


def _build_one(spec: ModelSpec) -> DAG:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    p = spec.promotion
    with DAG(
        dag_id=f"promote_{spec.dag_suffix}",
        description=f"Promote an Approved {spec.name} version to account {p.account_id} ({p.region})",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params=_params(spec),
        tags=["hybrid-mlops", spec.name, "promote", f"team:{spec.team}"],
        default_args={"owner": spec.team, "retries": 2, "retry_delay": timedelta(seconds=30)},
        doc_md=__doc__,
    ) as dag:

        @task
        def plan(**context) -> dict:
            """The dev version to promote (checked: Approved), its metrics, stage and files; the prod version if any."""
            from hybrid_mlops.promotion import plan as run

            params = context["params"]
            return run(spec, params.get("version"), params.get("stage"))

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def not_yet_promoted(planned: dict) -> bool:
            """Stop here (writing nothing) when prod already has this version; record_promotion still runs."""
            if planned["prod_package_arn"]:
                print(f"Version {planned['version']} is already in account {planned['prod_account']}: "
                      f"{planned['prod_package_arn']}; nothing to promote")
                return False
            return True

        @task
        def grant_prod_read(planned: dict) -> dict:
            """The dev group's resource policy lets the prod account read the group and its versions."""
            from hybrid_mlops.promotion import grant_prod_read as run

            return run(spec, planned)

        @task
        def copy_artifacts(planned: dict) -> list[dict]:
            """model.tar.gz and the files beside it into the prod bucket, SSE-KMS with the prod key, verified."""
            from hybrid_mlops.promotion import copy_artifacts as run

            return run(spec, planned)

        @task
        def register_in_prod(planned: dict, copies: list[dict], **context) -> dict:
            """The version in the prod group: Approved, in the chosen stage, pointing at the prod copies."""
            from hybrid_mlops.promotion import register_in_prod as run

            approval = context["ti"].xcom_pull(task_ids="approve_promotion")
            return run(spec, planned, approval, context["run_id"])

        @task(trigger_rule="none_failed")
        def record_promotion(planned: dict, registered: dict | None) -> dict:
            """The dev version's metadata and lifecycle say where it was promoted."""
            from hybrid_mlops.promotion import record_promotion as run

            return run(spec, planned, registered)

        planned = plan()
        approve = ApprovalOperator(
            task_id="approve_promotion",
            subject=(f"Promote {spec.registry.model_package_group} version "
                     "{{ ti.xcom_pull(task_ids='plan')['version'] }} to account "
                     f"{p.account_id} ({p.region})?"),
            body="{{ ti.xcom_pull(task_ids='plan')['summary'] }}",
            defaults="Reject",
            response_timeout=timedelta(hours=p.approval_timeout_hours),
            retries=0,
        )
        not_yet_promoted(planned) >> approve
        granted = grant_prod_read(planned)
        approve >> granted
        copies = copy_artifacts(planned)
        granted >> copies
        registered = register_in_prod(planned, copies)
        record_promotion(planned, registered)
    return dag
