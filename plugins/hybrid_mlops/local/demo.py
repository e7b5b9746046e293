"""The main job end to end on the ``local`` target: ``bin/demo`` runs this (``--model NAME`` for another).

A moto server on 127.0.0.1 stands in for AWS. The model's example data go where its spec's source
reads them (nothing to load for a synthetic source). The retrain DAG runs in-process (``dag.test()``):
data -> SageMaker training job (run locally under the container contract) -> Model Registry ->
approval gate -> deployment to a local KServe model server. Then traffic (normal, then drifted),
drift monitoring, the drift-triggered retrain and the daily cost report, each step printing what it did.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _configure_airflow(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__LOGGING__LOGGING_LEVEL=os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        HYBRID_MLOPS_TARGET="local",
    )
    os.environ.setdefault("HYBRID_MLOPS_BUCKET", "hybrid-mlops-artifacts")
    os.environ.setdefault("HYBRID_MLOPS_LOCAL_DIR", str(ROOT / ".local"))


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fraud-detection", help="model spec name under include/models/")
    parser.add_argument("--epochs", type=int, default=None, help="override the spec's local epochs")
    parser.add_argument("--train-rows", type=int, default=None, help="training rows (generated or sampled)")
    parser.add_argument("--human-answer", choices=["Approve to staging", "Approve to prod", "Reject"],
                        default="Approve to staging",
                        help="what the stand-in reviewer answers if the rules hand a version to a person")
    parser.add_argument("--keep-serving", action="store_true", help="leave the local model server running")
    args = parser.parse_args(argv)

    _configure_airflow(ROOT / ".airflow")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from hybrid_mlops.local.moto import MotoServer

    os.environ.setdefault("HYBRID_MLOPS_CAPTURE_WAIT_SECONDS", "5")
    os.environ.setdefault("HYBRID_MLOPS_CAPTURE_FLUSH_SECONDS", "2")
    state = Path(os.environ["HYBRID_MLOPS_LOCAL_DIR"])
    state.mkdir(parents=True, exist_ok=True)
    banner("local AWS: moto server on 127.0.0.1")
    moto = MotoServer(log_path=state / "moto.log").start()
    moto.apply_environ()
    print(f"moto server at {moto.url} (log {state / 'moto.log'})")
    try:
        return _run(args, moto)
    finally:
        if not args.keep_serving:
            _stop_local_serving(args.model)
        moto.stop()


def _stop_local_serving(model: str) -> None:
    from hybrid_mlops.local.serving import LocalServing

    LocalServing(model).stop()


def _run(args, moto) -> int:
    import boto3

    from airflow.utils import db

    from hybrid_mlops import settings
    from hybrid_mlops.factory import build_dags
    from hybrid_mlops.local.dag_runner import run_dag

    boto3.client("s3").create_bucket(Bucket=settings.bucket(),
                                     CreateBucketConfiguration={"LocationConstraint": settings.region()})
    banner("Airflow metadata database (sqlite)")
    db.resetdb()
    print(f"AIRFLOW_HOME={os.environ['AIRFLOW_HOME']}")

    from hybrid_mlops.local.datasets import load_example_data
    from hybrid_mlops.specs import load_spec

    spec = load_spec(settings.models_dir() / f"{args.model}.yaml")
    suffix = spec.dag_suffix
    banner(f"{spec.name}: {spec.task} model, data from its {spec.data.source.type} source")
    print(f"example data: {load_example_data(spec, boto3.client('sagemaker'), boto3.client('s3'))}")
    dag = build_dags("retrain")[f"retrain_{suffix}"]
    conf = {k: v for k, v in {"epochs": args.epochs, "rows": args.train_rows}.items() if v is not None}
    banner(f"{dag.dag_id}: data -> training -> registry -> approval -> deploy")
    started = time.time()
    run = run_dag(dag, conf=conf, hitl_choice=args.human_answer, responder="demo-reviewer")
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    print(f"run {run.run_id}: {run.state} in {time.time() - started:.0f}s")
    for task_id, state in states.items():
        print(f"  {task_id:<28} {state}")
    summary = run.get_task_instance("summary").xcom_pull(task_ids="summary") if states.get("summary") == "success" else None
    if run.state != "success" or not summary:
        print("the retrain run did not succeed; see the task states above", file=sys.stderr)
        return 1
    banner("registered model version")
    print(json.dumps(summary, indent=2))
    if summary["status"] != "Approved":
        print("the version was not approved, so nothing new is deployed; stopping here")
        return 0

    from hybrid_mlops.local.serving import LocalServing

    serving = LocalServing(args.model)
    served = serving.current()
    banner(f"serving: version {served['version']} behind {serving.url}")
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    rows = _traffic_rows(spec, seed=101)
    sent = _send(serving.url, spec, rows, show=5)
    _put_labels(spec, rows, hour)  # ground truth of these rows arrives: model quality and bias drift use it
    numeric, category = _drift_targets(spec)
    banner(f"drifted traffic: {numeric} shifted by 3 standard deviations"
           + (f", an unseen {category} in 30 % of rows" if category else ""))
    sent += _send(serving.url, spec, _drifted(_traffic_rows(spec, seed=202), numeric, category), show=0)
    _wait_for_capture(args.model, hour, sent)

    monitor = build_dags("monitor")[f"monitor_{suffix}"]
    banner(f"{monitor.dag_id}: drift report of the window {hour:%Y-%m-%d %H}:00")
    run = run_dag(monitor, logical_date=hour + timedelta(hours=1))  # reports the hour before
    print(f"run {run.run_id}: {run.state}")
    _print_violations(args.model, hour)
    _print_other_monitors(args.model, hour)

    from hybrid_mlops.assets import drift_asset_uri

    events = _asset_events(drift_asset_uri(args.model))
    banner("drift asset events (they schedule retrain_%s, outside its cooldown)" % suffix)
    for event in events:
        print(f"  #{event['id']} {event['timestamp']}  {event['extra'].get('violated_features')}  "
              f"{event['extra'].get('report_uri')}")
    if events:
        ids = [e["id"] for e in events]
        banner(f"{dag.dag_id} started by the drift event(s) {ids}, as the scheduler would")
        run = run_dag(dag, conf=conf, asset_events=ids, hitl_choice=args.human_answer, responder="demo-reviewer")
        summary = run.get_task_instance("summary").xcom_pull(task_ids="summary") if run.state == "success" else None
        if not summary:
            print(f"the drift-triggered retrain ended {run.state}", file=sys.stderr)
            return 1
        lineage = _lineage(summary["model_package_arn"])
        print(f"version {summary['version']}: {summary['status']} ({summary['reason']})")
        print(f"  lineage: trigger={lineage.get('trigger')} drift_report_uri={lineage.get('drift_report_uri')} "
              f"drift_violated_features={lineage.get('drift_violated_features')}")
        served = serving.current()
        print(f"  serving now: version {served['version']} behind {serving.url}")
        banner("a second drift-triggered run inside the cooldown (a drift storm): the retrain holds back")
        again = run_dag(dag, conf=conf, asset_events=ids)
        states = {ti.task_id: ti.state for ti in again.get_task_instances()}
        print(f"run {again.run_id}: check_trigger {states['check_trigger']}, train {states['train']} "
              f"(cooldown {spec_cooldown(args.model)} h)")

    banner("cost_report: yesterday's training and serving cost (Cost Explorer on moto)")
    from hybrid_mlops.cost.demo import demo_cost_report

    demo_cost_report(days=1)
    return 0


def _traffic_rows(spec, seed: int, rows: int = 2000) -> dict[str, list]:
    """Rows like the training data: generated for a synthetic source, else the model's example CSV, resampled."""
    import random

    if spec.data.source.type == "synthetic":
        from hybrid_mlops.data.generator import generate

        return {k: v.tolist() for k, v in generate(rows, seed=seed, id_prefix="demo").items()}
    from hybrid_mlops.data.loaders import read_csv
    from hybrid_mlops.local.datasets import dataset_path

    table = read_csv(dataset_path(spec))
    order = list(range(len(table[spec.data_schema.id])))[:rows]
    random.Random(seed).shuffle(order)  # each row once: a small table resampled would look drifted itself
    return {k: [v[i] for i in order] for k, v in table.items()}


def _drift_targets(spec) -> tuple[str, str | None]:
    """The first numeric feature, and the first categorical one (one with a declared domain first)."""
    schema = spec.data_schema
    with_domain = [n for n in schema.categorical if schema.features[n].domain]
    return schema.numeric[0], (with_domain or schema.categorical or [None])[0]


def _drifted(rows: dict[str, list], numeric: str, category: str | None) -> dict[str, list]:
    import random

    from hybrid_mlops.local.traffic import shifted

    out = shifted(rows, numeric, 3.0)
    if category:
        r = random.Random(7)
        out[category] = ["never-seen" if r.random() < 0.3 else v for v in out[category]]
    return out


def _send(url: str, spec, rows: dict[str, list], *, show: int) -> int:
    """Send the rows as v2 requests of 50; print a few outputs."""
    from hybrid_mlops.local.traffic import send_rows

    started = time.time()
    outputs = send_rows(url, spec, rows)
    print(f"{len(outputs)} rows scored in {time.time() - started:.2f}s ({(len(outputs) + 49) // 50} requests)")
    for i in range(show):
        shown = [round(x, 4) for x in outputs[i]] if isinstance(outputs[i], list) else round(outputs[i], 4)
        print(f"  {rows[spec.data_schema.id][i]:<16} {spec.task} output: {shown}")
    return len(outputs)


def _wait_for_capture(model: str, hour, rows: int, timeout: float = 90.0) -> None:
    """The predictor batches capture records to S3; wait until this hour's rows are there."""
    import boto3

    from hybrid_mlops import layout, settings
    from hybrid_mlops.local.traffic import captured_rows

    s3, deadline, prefix = boto3.client("s3"), time.time() + timeout, layout.capture_prefix(model, hour)
    while time.time() < deadline:
        got = captured_rows(s3, settings.bucket(), prefix)
        if got >= rows:
            print(f"capture: {got} rows under s3://{settings.bucket()}/{prefix}")
            return
        time.sleep(2)
    print("capture: not all records landed in time; the monitor reports what is there")


def _print_violations(model: str, hour) -> None:
    import boto3

    from hybrid_mlops import layout, settings

    key = layout.monitoring_prefix(model, hour) + "constraint_violations.json"
    body = json.loads(boto3.client("s3").get_object(Bucket=settings.bucket(), Key=key)["Body"].read())
    violations = body.get("violations", [])
    print(f"s3://{settings.bucket()}/{key}: {len(violations)} violation(s)")
    for v in violations:
        print(f"  {v['feature_name']:<20} {v['constraint_check_type']:<26} {v['description'][:90]}")


def _put_labels(spec, rows: dict[str, list], hour) -> None:
    """Ground truth of the rows (one ``{id, label}`` line each) where the monitor joins it with the capture."""
    import boto3

    from hybrid_mlops import layout, settings

    schema = spec.data_schema
    body = "\n".join(json.dumps({schema.id: i, schema.label: y}, default=str)
                     for i, y in zip(rows[schema.id], rows[schema.label]))
    boto3.client("s3").put_object(Bucket=settings.bucket(), Key=f"{layout.labels_prefix(spec.name, hour)}demo.jsonl",
                                  Body=body.encode())


def _print_other_monitors(model: str, hour) -> None:
    """The bias and feature-attribution monitors' verdicts (when the spec enables them)."""
    import boto3

    from hybrid_mlops import layout, settings

    s3 = boto3.client("s3")
    for monitor in ("model-bias", "feature-attribution"):
        key = f"{layout.monitoring_prefix(model, hour)}{monitor}/report.json"
        try:
            report = json.loads(s3.get_object(Bucket=settings.bucket(), Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            continue
        print(f"{monitor}: {report['status']}: {report['message'][:160]}")


def spec_cooldown(model: str) -> float:
    from hybrid_mlops import settings
    from hybrid_mlops.specs import load_spec

    return load_spec(settings.models_dir() / f"{model}.yaml").schedule.drift_retrain_cooldown_hours


def _lineage(package_arn: str) -> dict:
    import boto3

    return boto3.client("sagemaker").describe_model_package(ModelPackageName=package_arn)["CustomerMetadataProperties"]


def _asset_events(uri: str) -> list[dict]:
    from sqlalchemy import select

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.uri == uri)
        ).scalars().all()
        return [{"id": e.id, "timestamp": e.timestamp.isoformat(), "extra": e.extra or {}} for e in rows]


if __name__ == "__main__":
    sys.exit(main())
