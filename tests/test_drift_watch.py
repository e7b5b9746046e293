"""DriftReportSensor in both modes and ``watch_<model>`` against the moto server (real S3 listing/reads).

The violations report is the SageMaker Python SDK's own test file
(tests/data/model_monitor/sdk_constraint_violations.json), put where a Model Monitor schedule writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

DATA = Path(__file__).parent / "data" / "model_monitor"
HOUR = datetime(2026, 5, 1, 10, tzinfo=timezone.utc)
MM_PREFIX = "mm-output/fraud-endpoint/hourly-schedule/"


def _bucket():
    return os.environ["HYBRID_MLOPS_BUCKET"]


def _put_report(key: str, body: dict | str):
    boto3.client("s3").put_object(Bucket=_bucket(), Key=key, Body=body if isinstance(body, str) else json.dumps(body))


def _sdk_violations() -> dict:
    return json.loads((DATA / "sdk_constraint_violations.json").read_text())


def _sensor(**kw):
    from hybrid_mlops.sensors.drift import DriftReportSensor

    kw.setdefault("timeout", 3)
    return DriftReportSensor(task_id="wait_report", bucket=_bucket(), prefix=MM_PREFIX, poke_interval=0.2,
                             aws_conn_id=None, **kw)


def test_poke_returns_poke_return_value_with_violations(aws):
    from airflow.sdk import PokeReturnValue

    _put_report(MM_PREFIX + "2026/05/01/09/constraint_violations.json", {"violations": []})
    sensor = _sensor()
    empty = sensor.poke({})
    assert isinstance(empty, PokeReturnValue) and not empty and empty.xcom_value is None

    key = MM_PREFIX + "2026/05/01/10/constraint_violations.json"
    _put_report(key, _sdk_violations())
    _put_report(MM_PREFIX + "2026/05/01/11/constraint_violations.json", "not json")  # skipped, not fatal
    done = sensor.poke({})
    assert done and done.xcom_value["report_uri"] == f"s3://{_bucket()}/{key}"
    assert len(done.xcom_value["violations"]) == 7
    assert "fare_amount" in done.xcom_value["violated_features"]
    # non-deferrable execute returns the same value (BaseSensorOperator pushes it as the task's XCom)
    assert _sensor(deferrable=False).execute({})["report_uri"] == done.xcom_value["report_uri"]


def test_deferrable_path_yields_violations(aws):
    from airflow.sdk.exceptions import TaskDeferred

    from hybrid_mlops.triggers.drift import DriftReportTrigger

    sensor = _sensor(timeout=5)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, DriftReportTrigger)
    classpath, kwargs = trigger.serialize()
    assert json.dumps(kwargs) and classpath == "hybrid_mlops.triggers.drift.DriftReportTrigger"

    async def first():
        async for ev in trigger.run():
            return ev.payload

    async def write_then_wait():
        task = asyncio.create_task(first())
        await asyncio.sleep(0.3)  # the report lands while the trigger waits
        await asyncio.to_thread(_put_report, MM_PREFIX + "2026/05/01/10/constraint_violations.json", _sdk_violations())
        return await task

    event = asyncio.run(write_then_wait())
    result = getattr(sensor, deferred.value.method_name)({}, event)
    assert result["violations"] == _sdk_violations()["violations"]
    assert result["violated_features"][0] == "congestion_surcharge"


def test_modified_after_ignores_old_reports(aws):
    _put_report(MM_PREFIX + "2026/05/01/10/constraint_violations.json", _sdk_violations())
    future = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()
    assert not _sensor(modified_after=future).poke({})
    past = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
    assert _sensor(modified_after=past).poke({})


def _serialize(dag) -> None:
    """Write ``dag`` to the metadata DB as the DAG processor would: ``dag.test()`` needs a serialized
    version, and no DAG file builds this one (the reference spec watches no external schedule)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=os.devnull)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def _watching(spec):
    drift = spec.drift.model_copy(update={"external_report_prefix": f"s3://{_bucket()}/{MM_PREFIX}"})
    return spec.model_copy(update={"drift": drift})


def test_watch_dags_only_for_specs_with_an_external_prefix(spec):
    from hybrid_mlops.dags.watch import build

    assert build([spec.model_copy(update={"drift": spec.drift.model_copy(update={"external_report_prefix": None})})]) == []
    (dag,) = build([_watching(spec)])
    assert dag.dag_id == f"watch_{spec.dag_suffix}"
    assert dag.get_task("signal_drift").outlets[0].uri == f"hybrid-mlops://{spec.name}/drift"
    sensor = dag.get_task("wait_for_report")
    assert (sensor.bucket, sensor.prefix, sensor.deferrable) == (_bucket(), MM_PREFIX, True)
    # retrain_<model> is scheduled on the same asset: a watched violation starts a retrain
    from hybrid_mlops.dags.retrain import build as build_retrain

    (retrain,) = build_retrain([_watching(spec)])
    assert f"hybrid-mlops://{spec.name}/drift" in repr(retrain.timetable.asset_condition)


def test_watch_dag_emits_drift_asset_on_model_monitor_violations(aws, airflow_db, spec):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    from hybrid_mlops.dags.watch import build

    key = MM_PREFIX + "2026/05/01/11/constraint_violations.json"
    _put_report(key, _sdk_violations())
    (dag,) = build([_watching(spec)])
    _serialize(dag)
    run = dag.test(logical_date=HOUR + timedelta(hours=1), run_after=HOUR + timedelta(hours=1))
    assert run.state == DagRunState.SUCCESS
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["signal_drift"].state == "success"
    with create_session() as session:
        events = [e for e in session.query(AssetEvent).all() if e.asset.uri == f"hybrid-mlops://{spec.name}/drift"]
    assert events[-1].extra["report_uri"] == f"s3://{_bucket()}/{key}"
    assert events[-1].extra["source"] == "external_model_monitor"
    assert "data_type_check" in events[-1].extra["check_types"]
    assert "tip_amount" in events[-1].extra["violated_features"]

    # the next run does not act on the same report again
    dag.get_task("wait_for_report").timeout = 1
    again = dag.test(logical_date=HOUR + timedelta(hours=2), run_after=HOUR + timedelta(hours=2))
    assert {ti.task_id: ti.state for ti in again.get_task_instances()}["signal_drift"] == "skipped"


def test_watch_dag_skips_when_no_new_report(aws, airflow_db, spec):
    from airflow.utils.state import DagRunState

    from hybrid_mlops.dags.watch import build

    _put_report(MM_PREFIX + "2026/05/01/09/constraint_violations.json", _sdk_violations())
    (dag,) = build([_watching(spec).model_copy(update={"name": "watch-first-run"})])  # no earlier run of this DAG
    sensor = dag.get_task("wait_for_report")
    sensor.timeout, sensor.poke_interval = 1, 0.2
    _serialize(dag)
    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)  # the report predates the interval
    run = dag.test(logical_date=later, run_after=later)
    assert run.state == DagRunState.SUCCESS
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["wait_for_report"].state == "skipped" and tis["signal_drift"].state == "skipped"
