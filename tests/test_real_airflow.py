"""End to end on a real Airflow (``bin/airflow-local``'s stack), through its REST API only.

api-server, scheduler (LocalExecutor task processes), dag-processor (parsing dags/ with plugins/ as the
plugins folder) and triggerer (the deferrable sensors), PostgreSQL, and a moto server as AWS. A person
answers the approval through the human-in-the-loop endpoints; the scheduler itself starts the
drift-triggered retrain from the monitor's asset event. Nothing is patched.

The tests run in file order on one stack: the second redeploys the version the first approved.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from hybrid_mlops.local.demo import _drift_targets
from real_airflow import MODEL, AirflowApiError

SUFFIX = MODEL.replace("-", "_")
RETRAIN, MONITOR, DEPLOY, WATCH = (f"{kind}_{SUFFIX}" for kind in ("retrain", "monitor", "deploy", "watch"))
GROUP = f"{MODEL}-models"


def _spec(real):
    from hybrid_mlops.specs import load_spec

    return load_spec(real.models_dir / f"{MODEL}.yaml")


def _laps():
    """Prints each phase's wall time (``-s`` shows them)."""
    marks = [time.monotonic()]

    def lap(label: str) -> None:
        marks.append(time.monotonic())
        print(f"  {label}: {marks[-1] - marks[-2]:.0f}s (test total {marks[-1] - marks[0]:.0f}s)", flush=True)

    return lap


def _wait_for_new_run(api, dag_id: str, known: set[str], timeout: float = 120.0, **query) -> dict:
    """The first run of ``dag_id`` not in ``known`` (the scheduler creates it)."""
    deadline = time.monotonic() + timeout
    while not (new := [r for r in api.runs(dag_id, **query) if r["dag_run_id"] not in known]):
        if time.monotonic() > deadline:
            raise AirflowApiError(f"the scheduler started no new {dag_id} run ({query}) within {timeout}s")
        time.sleep(1)
    return new[0]


def _send_traffic(real, spec, hour: datetime) -> int:
    """Normal then drifted rows to the served model (the demo's traffic); wait until the capture holds them."""
    from hybrid_mlops import layout
    from hybrid_mlops.local.demo import _drifted, _traffic_rows
    from hybrid_mlops.local.serving import LocalServing
    from hybrid_mlops.local.traffic import captured_rows, send_rows

    url = LocalServing(MODEL, state_dir=real.local_dir / "serving" / MODEL).url
    numeric, category = _drift_targets(spec)
    sent = len(send_rows(url, spec, _traffic_rows(spec, seed=101, rows=400)))
    sent += len(send_rows(url, spec, _drifted(_traffic_rows(spec, seed=202, rows=400), numeric, category)))
    s3, deadline = real.client("s3"), time.monotonic() + 60
    while captured_rows(s3, real.bucket, layout.capture_prefix(MODEL, hour)) < sent:
        assert time.monotonic() < deadline, "the predictor's capture did not reach S3 within 60 s"
        time.sleep(1)
    return sent


def test_retrain_approval_monitor_drift_retrain_and_cooldown(airflow_stack):
    real, api = airflow_stack, airflow_stack.api
    print(f"stack started in {real.start_seconds:.1f}s at {real.base_url}")
    api.wait_for_dags([RETRAIN, MONITOR, DEPLOY, WATCH, "cost_report"])
    for dag_id in (RETRAIN, MONITOR):
        api.unpause(dag_id)
    sm, spec, lap = real.client("sagemaker"), _spec(real), _laps()

    # 1. a person's retrain from the form: the conf reaches the training job
    conf = {"epochs": 3, "learning_rate": 0.01, "batch_size": 256, "rows": 3000}
    run = api.trigger(RETRAIN, conf)
    run_id = run["dag_run_id"]
    assert run["logical_date"] is None and run["conf"] == conf and run["run_type"] == "manual"
    detail = api.wait_for_hitl(RETRAIN, run_id)
    assert detail["task_instance"]["task_id"] == "human_review" and "Reject" in detail["options"], detail
    approve = next(o for o in detail["options"] if o.startswith("Approve"))
    request = api.xcom(RETRAIN, run_id, "training_config")
    job = sm.describe_training_job(TrainingJobName=request["TrainingJobName"])
    hyper = {k: json.loads(v) for k, v in job["HyperParameters"].items() if not k.startswith("sagemaker_")}
    assert (hyper["epochs"], hyper["learning-rate"], hyper["batch-size"]) == (3, 0.01, 256), hyper
    assert api.xcom(RETRAIN, run_id, "prepare_data")["rows"]["train"] == 3000
    registered = api.xcom(RETRAIN, run_id, "register")
    assert sm.describe_model_package(ModelPackageName=registered["ModelPackageArn"])[
        "ModelApprovalStatus"] == "PendingManualApproval"

    lap("retrain up to the person's review")

    # 2. the person approves through the REST API; the registry records it, the version is deployed
    answered = api.answer_hitl(detail, [approve])
    assert answered["chosen_options"] == [approve] and answered["responded_by"]["name"] == real.username
    run = api.wait_for_run(RETRAIN, run_id, timeout=240)
    states = api.task_states(RETRAIN, run_id)
    assert run["state"] == "success", states
    assert states["human_review"] == states["serve_locally"] == states["record_deployment"] == "success", states
    package = sm.describe_model_package(ModelPackageName=registered["ModelPackageArn"])
    assert package["ModelApprovalStatus"] == "Approved"
    assert f"by {real.username}" in package["ApprovalDescription"], package["ApprovalDescription"]
    assert api.xcom(RETRAIN, run_id, "summary")["status"] == "Approved"
    assert not api.hitl_details(RETRAIN, run_id)  # nothing left pending

    lap("approval, registry, deploy")

    # 3. drifted traffic to the served model, then the monitor over that hour
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    sent = _send_traffic(real, spec, hour)
    known_retrains = {r["dag_run_id"] for r in api.runs(RETRAIN)}
    mon = api.trigger(MONITOR, logical_date=hour.isoformat(), data_interval_start=hour.isoformat(),
                      data_interval_end=(hour + timedelta(hours=1)).isoformat())
    mon = api.wait_for_run(MONITOR, mon["dag_run_id"])
    states = api.task_states(MONITOR, mon["dag_run_id"])
    assert mon["state"] == "success" and states["signal_drift"] == "success", states
    drift = api.xcom(MONITOR, mon["dag_run_id"], "signal_drift")
    numeric, category = _drift_targets(spec)
    assert {numeric, category} <= set(drift["violated_features"]), drift
    report = json.loads(real.client("s3").get_object(Bucket=real.bucket, Key=drift["report_uri"].split("/", 3)[3])[
        "Body"].read())
    assert {v["feature_name"] for v in report["violations"]} >= {numeric, category}
    stats_key = drift["report_uri"].rsplit("/", 1)[0].split("/", 3)[3] + "/statistics.json"
    stats = json.loads(real.client("s3").get_object(Bucket=real.bucket, Key=stats_key)["Body"].read())
    assert stats["dataset"]["item_count"] >= sent  # with the deploy's smoke-test rows

    lap("traffic and monitor")

    # 4. the scheduler starts the drift retrain from the asset event; the person rejects this one
    drift_run = _wait_for_new_run(api, RETRAIN, known_retrains, run_type="asset_triggered")
    assert drift_run["triggered_by"] == "asset", drift_run
    detail = api.wait_for_hitl(RETRAIN, drift_run["dag_run_id"])
    api.answer_hitl(detail, ["Reject"])
    drift_run = api.wait_for_run(RETRAIN, drift_run["dag_run_id"], timeout=240)
    states = api.task_states(RETRAIN, drift_run["dag_run_id"])
    assert drift_run["state"] == "success" and states["train"] == "success", states
    version = api.xcom(RETRAIN, drift_run["dag_run_id"], "register")
    package = sm.describe_model_package(ModelPackageName=version["ModelPackageArn"])
    assert package["ModelApprovalStatus"] == "Rejected"
    assert package["CustomerMetadataProperties"]["trigger"] == "drift"
    assert package["CustomerMetadataProperties"]["drift_report_uri"] == drift["report_uri"]
    assert states["serve_locally"] == "skipped", states  # the approved version keeps serving

    lap("drift-triggered retrain")

    # 5. a drift storm: the next drift event (an external producer's, through the REST API) is held
    known_retrains |= {drift_run["dag_run_id"]}
    api.post_asset_event(f"hybrid-mlops://{MODEL}/drift", {k: drift[k] for k in (
        "report_uri", "violated_features", "window_start", "window_end")})
    held = _wait_for_new_run(api, RETRAIN, known_retrains, run_type="asset_triggered")
    held = api.wait_for_run(RETRAIN, held["dag_run_id"])
    states = api.task_states(RETRAIN, held["dag_run_id"])
    assert held["state"] == "success" and states["check_trigger"] == "success" and states["train"] == "skipped", states
    assert "skipping this run" in api.task_log(RETRAIN, held["dag_run_id"], "check_trigger")
    packages = sm.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]
    assert len(packages) == 2
    lap("cooldown")


def test_every_dag_runs_without_a_logical_date(airflow_stack):
    """What the UI's trigger without a date and ``logical_date: null`` create: every generated DAG runs.

    retrain_* is covered above (triggered that way); this redeploys the approved version, reports an
    empty monitor window (the hour before now), waits for an external report that never comes and
    writes yesterday's cost report. A DAG whose form needs a value is refused naming it; another kind may
    stop at a person's approval, or fail for lack of an input in its own words, never while rendering.
    """
    api = airflow_stack.api
    dags = api.wait_for_dags([RETRAIN, MONITOR, DEPLOY, WATCH, "cost_report"])
    generated = sorted(d for d, dag in dags.items() if any(t["name"] == "hybrid-mlops" for t in dag["tags"]))
    assert {RETRAIN, MONITOR, DEPLOY, WATCH, "cost_report"} <= set(generated), generated
    runs, forms = {}, {}
    for dag_id in sorted(set(generated) - {RETRAIN}):
        if required := _required_params(api, dag_id):  # a form a person must fill: refused, naming the field
            with pytest.raises(AirflowApiError, match="|".join(required)):
                api.trigger(dag_id)
            forms[dag_id] = required
            continue
        api.unpause(dag_id)
        runs[dag_id] = api.trigger(dag_id)
        assert runs[dag_id]["logical_date"] is None
    assert {MONITOR, DEPLOY, WATCH, "cost_report"} <= set(runs), (runs, forms)
    for dag_id, run in runs.items():
        done, states = _settled(api, dag_id, run["dag_run_id"])
        if dag_id in (MONITOR, DEPLOY, WATCH, "cost_report"):
            assert done["state"] == "success", (dag_id, states)
        else:  # other kinds may refuse a run without their input, in their own words; never in rendering
            for task_id in (t for t, state in states.items() if state == "failed"):
                log = api.task_log(dag_id, run["dag_run_id"], task_id.split("[")[0])
                assert "jinja2" not in log and "UndefinedError" not in log, (dag_id, task_id, log[-2000:])
    print(f"  {len(runs)} DAGs run without a logical date: {sorted(runs)}; refused without their form: {forms}")


def _settled(api, dag_id: str, run_id: str, timeout: float = 300.0) -> tuple[dict, dict]:
    """The run once it has ended or a task of it waits for a person (a kind that asks one)."""
    deadline = time.monotonic() + timeout
    while True:
        run, states = api.run(dag_id, run_id), api.task_states(dag_id, run_id)
        if run["state"] in ("success", "failed") or "awaiting_input" in states.values():
            return run, states
        assert time.monotonic() < deadline, f"{dag_id} run {run_id} is {run['state']} after {timeout}s: {states}"
        time.sleep(1)


def _required_params(api, dag_id: str) -> list[str]:
    """Params with no default that cannot be null: the trigger form needs them."""
    params = api.request("GET", f"/dags/{dag_id}/details")["params"] or {}

    def nullable(schema: dict) -> bool:
        types = schema.get("type")
        return not schema or "null" in (types if isinstance(types, list) else [types])

    return [name for name, p in params.items() if p.get("value") is None and not nullable(p.get("schema") or {})]
