"""The main job end to end on the ``local`` target: ``bin/demo`` runs this.

A moto server on 127.0.0.1 stands in for AWS. The retrain DAG runs in-process (``dag.test()``):
synthetic data -> SageMaker training job (run locally under the container contract) -> Model
Registry -> approval gate -> deployment to a local KServe model server. Then traffic, drift
monitoring and the daily cost report, each step printing what it did.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
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
    parser.add_argument("--train-rows", type=int, default=None, help="override the spec's training rows")
    parser.add_argument("--human-answer", choices=["Approve", "Reject"], default="Approve",
                        help="what the stand-in reviewer answers if the rules hand a version to a person")
    parser.add_argument("--keep-serving", action="store_true", help="leave the local model server running")
    args = parser.parse_args(argv)

    _configure_airflow(ROOT / ".airflow")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from hybrid_mlops.local.moto import MotoServer

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
            _stop_local_serving()
        moto.stop()


def _stop_local_serving() -> None:
    try:
        from hybrid_mlops.local.serving import stop_all
    except ImportError:
        return
    stop_all()


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

    suffix = args.model.replace("-", "_")
    dag = build_dags("retrain")[f"retrain_{suffix}"]
    conf = {k: v for k, v in {"epochs": args.epochs, "train_rows": args.train_rows}.items() if v is not None}
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
