"""``retrain_<model>``: data -> SageMaker training -> Model Registry -> approval gate -> deploy.

Runs daily at the spec's cron *or* as soon as the monitor reports drift (asset-or-time schedule,
with a cooldown so a drift storm starts one retrain). Triggerable from the UI with a typed form.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hybrid_mlops import clarify_steps, settings
from hybrid_mlops.specs import ModelSpec

INSTANCE_TYPES = ["ml.g5.xlarge", "ml.g5.2xlarge", "ml.g5.4xlarge", "ml.g5.12xlarge", "ml.p4d.24xlarge",
                  "ml.m5.xlarge", "ml.c5.2xlarge"]


def build(specs: list[ModelSpec]) -> list:
    return [build_retrain_dag(spec) for spec in specs]


def _params(spec: ModelSpec) -> dict:
    from airflow.sdk import Param

    t = spec.training
    types = sorted({*INSTANCE_TYPES, t.instance_type})
    return {
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=1000,
                        description="Training epochs (empty: the spec's value for this target)."),
        "learning_rate": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=1,
                               description="Adam learning rate (empty: the spec's)."),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, maximum=65536,
                            description="Mini-batch size (empty: the spec's)."),
        "instance_type": Param(t.instance_type, type="string", enum=types,
                               description="SageMaker training instance type."),
        "instance_count": Param(None, type=["null", "integer"], minimum=1, maximum=64,
                                description="Training instances (>1 = distributed; empty: the spec's)."),
        "spot": Param(t.spot, type="boolean", description="Managed spot training (checkpoints make it resumable)."),
        "rows": Param(_default_rows(spec), type=["null", "integer"], minimum=100, maximum=50_000_000,
                      description="Training rows: generated (synthetic source) or sampled from the window "
                                  "(empty: every row)."),
        "data_window_days": Param(spec.data.window_days, type=["null", "integer"], minimum=1, maximum=3650,
                                  description="Days of data (by the event-time column) the training set covers "
                                              "(empty: all)."),
        "deploy": Param(True, type="boolean", description="Deploy the version if it is approved."),
    }


def _default_rows(spec: ModelSpec) -> int | None:
    source = spec.data.source
    return source.rows if source.type == "synthetic" else spec.data.max_rows


def build_retrain_dag(spec: ModelSpec):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, task

    from hybrid_mlops.assets import approved_asset_uri, drift_asset_uri
    from hybrid_mlops.dags.deploy import deploy_tasks
    from hybrid_mlops.operators.registry import RegisterModelVersionOperator, RegistryApprovalOperator
    from hybrid_mlops.operators.sagemaker import TrainModelOperator

    drift = Asset(drift_asset_uri(spec.name))
    schedule = (
        AssetOrTimeSchedule(timetable=CronTriggerTimetable(spec.schedule.retrain, timezone="UTC"), assets=drift)
        if spec.schedule.retrain
        else [drift]
    )
    conn = settings.aws_conn_id()
    with DAG(
        dag_id=f"retrain_{spec.dag_suffix}",
        description=f"Retrain {spec.name} on SageMaker, register, gate, deploy",
        schedule=schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params=_params(spec),
        tags=["hybrid-mlops", spec.name, "retrain"],
        default_args={"owner": spec.team, "retries": 2, "retry_delay": timedelta(seconds=30)},
        render_template_as_native_obj=True,
        doc_md=__doc__,
    ) as dag:

        @task.short_circuit
        def check_trigger(**context) -> bool:
            """Let a drift-triggered run through only outside the cooldown; time and manual runs always."""
            from hybrid_mlops.retrain_trigger import should_run

            return should_run(spec, context)

        @task
        def prepare_data(**context) -> dict:
            """Training and validation channels (Parquet) and the source bundle, named from the run."""
            from hybrid_mlops.retrain_steps import prepare_data as run

            return run(spec, context)

        @task
        def training_config(prepared: dict, **context) -> dict:
            """The ``CreateTrainingJob`` request: the same on both targets."""
            from hybrid_mlops.retrain_steps import training_config as run

            return run(spec, prepared, context)

        @task(multiple_outputs=True)
        def evaluate(training: dict, prepared: dict, **context) -> dict:
            """Read ``evaluation.json`` and the baseline out of ``model.tar.gz``; publish them as ModelMetrics."""
            from hybrid_mlops.retrain_steps import evaluate as run

            return run(spec, training, prepared, context)

        @task.branch
        def approval_gate(registered: dict, evaluation: dict) -> str:
            """Auto-approve / auto-reject by the spec's rules (recorded in the registry), else ask a person."""
            from hybrid_mlops.retrain_steps import apply_approval_rules

            return apply_approval_rules(spec, registered, evaluation)

        @task(trigger_rule="none_failed")
        def summary(registered: dict, evaluation: dict) -> dict:
            """The version, its metrics and the registry's decision, as the run's last word."""
            from hybrid_mlops.retrain_steps import summarize

            return summarize(spec, registered, evaluation)

        gate = check_trigger()
        prepared = prepare_data()
        gate >> prepared
        config = training_config(prepared)
        train = TrainModelOperator(
            task_id="train",
            config=config,
            aws_conn_id=conn,
            check_interval=60,
            # The job's own bound (run + spot wait + margin); the operator also derives the number of
            # polls from it, so the deferred wait never gives up on a job SageMaker still runs.
            max_ingestion_time=TrainModelOperator.wait_bound_seconds({"StoppingCondition": {
                "MaxRuntimeInSeconds": spec.training.max_run_seconds,
                "MaxWaitTimeInSeconds": spec.training.max_wait_seconds or 0}}),
            print_log=False,
        )
        evaluation = evaluate(train.output, prepared)
        model_metrics = evaluation["model_metrics"]
        if clarify_steps.enabled(spec):  # drift.bias / drift.feature_attribution: their baselines, where the model runs
            model_metrics = clarify_steps.baseline_tasks(spec, evaluation, prepared)
        register = RegisterModelVersionOperator(
            task_id="register",
            aws_conn_id=conn,
            model_package_group=spec.registry.model_package_group,
            group_description=spec.registry.description,
            group_tags=spec.cost_tags(),
            model_data_url=evaluation["model_data_url"],
            inference_image=spec.registry.inference_image,
            model_metrics=model_metrics,
            customer_metadata=evaluation["lineage"],
            metadata_properties=evaluation["metadata_properties"],
            description=f"{spec.description} (run {{{{ run_id }}}})",
            content_types=spec.registry.content_types,
            response_types=spec.registry.response_types,
            realtime_instance_types=spec.registry.realtime_instance_types,
        )
        evaluation["lineage"] >> register
        branch = approval_gate(register.output, evaluation["metrics"])
        human = RegistryApprovalOperator(
            task_id="human_review",
            aws_conn_id=conn,
            package_arn="{{ ti.xcom_pull(task_ids='register')['ModelPackageArn'] }}",
            subject=f"Approve {spec.name} version {{{{ ti.xcom_pull(task_ids='register')['ModelPackageVersion'] }}}}?",
            # The approval gate's markdown: candidate vs production, reference figures, drift, links.
            body="{{ ti.xcom_pull(task_ids='approval_gate', key='review') }}",
            defaults=spec.approval.human_default,
            response_timeout=timedelta(hours=spec.approval.human_timeout_hours),
            stage_on_approval=spec.approval.stage_on_approval,
        )
        approved = EmptyOperator(
            task_id="approved", trigger_rule="none_failed_min_one_success",
            outlets=[Asset(approved_asset_uri(spec.name))],
        )
        rejected = EmptyOperator(task_id="rejected")
        branch >> [approved, human, rejected]
        human >> approved
        done = summary(register.output, evaluation["metrics"])
        [approved, rejected] >> done

        deploy_first, deploy_last = deploy_tasks(spec)
        approved >> _deploy_switch() >> deploy_first
        deploy_last >> done
    return dag


def _deploy_switch():
    from airflow.sdk import task

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def deploy_requested(**context) -> bool:
        """The ``deploy`` param: False registers and approves without deploying."""
        return bool(context["params"].get("deploy", True))

    return deploy_requested()


