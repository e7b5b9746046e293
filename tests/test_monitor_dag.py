"""The monitor against the moto server: reports in S3, CloudWatch, SNS->SQS, asset event, sensor."""

from __future__ import annotations

import io
import json
import os
import tarfile
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from hybrid_mlops.data.generator import CATEGORICAL_FEATURES, NUMERIC_FEATURES, DriftKnobs, generate, write_parquet
from hybrid_mlops.drift.capture import capture_key, capture_lines
from hybrid_mlops.drift.monitor_format import dataset_statistics, suggest_constraints
from hybrid_mlops.layout import monitoring_prefix

HOUR = datetime(2026, 5, 1, 10, tzinfo=timezone.utc)
FEATURES = [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]


def _bucket():
    return os.environ["HYBRID_MLOPS_BUCKET"]


def _register_baseline(spec, tmp_path):
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    train = generate(50_000, seed=7)
    path = tmp_path / "part-0.parquet"
    write_parquet(train, path)
    s3.upload_file(str(path), _bucket(), "data/fraud-detection/run1/train/part-0.parquet")
    stats = dataset_statistics(train, list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, doc in {"statistics.json": stats, "constraints.json": suggest_constraints(stats),
                          "evaluation.json": {"roc_auc": 0.9, "precision": 0.5, "recall": 0.3}}.items():
            raw = json.dumps(doc).encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    s3.put_object(Bucket=_bucket(), Key="models/fraud-detection/job1/output/model.tar.gz", Body=buf.getvalue())
    group = spec.registry.model_package_group
    sm.create_model_package_group(ModelPackageGroupName=group)
    sm.create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": spec.registry.inference_image,
                                                "ModelDataUrl": f"s3://{_bucket()}/models/fraud-detection/job1/output/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
        CustomerMetadataProperties={"train_data_uri": f"s3://{_bucket()}/data/fraud-detection/run1/train"})


def _put_capture(columns, extra_lines=""):
    body = "\n".join(capture_lines(columns, FEATURES, model="fraud-detection", hour=HOUR, id_column="transaction_id",
                                   outputs=columns.get("true_probability"))) + "\n" + extra_lines
    boto3.client("s3").put_object(Bucket=_bucket(), Key=capture_key("fraud-detection", HOUR), Body=body)


def _subscribe_queue(topic_name):
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    arn = sns.create_topic(Name=topic_name)["TopicArn"]
    url = sqs.create_queue(QueueName="drift-alerts")["QueueUrl"]
    qarn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn)
    return url


def _read(key):
    return json.loads(boto3.client("s3").get_object(Bucket=_bucket(), Key=key)["Body"].read())


def _run(dag, monkeypatch=None):
    from airflow.utils.state import DagRunState

    run = dag.test(logical_date=HOUR + timedelta(hours=1), run_after=HOUR + timedelta(hours=1))
    assert run.state == DagRunState.SUCCESS
    return {ti.task_id: ti for ti in run.get_task_instances()}


@pytest.fixture
def monitor_dag(spec):
    from hybrid_mlops.dags.monitor import build

    (dag,) = build([spec])
    return dag


def test_monitor_dag_reports_signals_and_asset(aws, airflow_db, spec, monitor_dag, tmp_path):
    _register_baseline(spec, tmp_path)
    queue = _subscribe_queue("hybrid-mlops-drift-fraud-detection")
    window = generate(3000, seed=31, drift=DriftKnobs(shift={"amount": 0.6}, new_category={"channel": ("crypto", 0.1)}))
    _put_capture(window, extra_lines='{"broken json\nplain text\n{"inputs": 3}\n')
    labels = "\n".join(json.dumps({"transaction_id": t, "label": int(y)})
                       for t, y in zip(window["transaction_id"].tolist(), window["label"].tolist()))
    boto3.client("s3").put_object(Bucket=_bucket(), Key="labels/fraud-detection/2026/05/01/part-0.jsonl", Body=labels)

    tis = _run(monitor_dag)
    assert tis["signal_drift"].state == "success"
    prefix = monitoring_prefix("fraud-detection", HOUR)
    violations = _read(prefix + "constraint_violations.json")["violations"]
    assert {v["feature_name"] for v in violations} == {"amount", "channel"}
    assert {v["constraint_check_type"] for v in violations} == {"baseline_drift_check", "categorical_values_check"}
    stats = _read(prefix + "statistics.json")
    assert stats["dataset"]["item_count"] == 3000 and len(stats["features"]) == len(FEATURES)
    report = _read(prefix + "report.json")
    assert report["numeric_baseline"] == "training_data"  # no prepared baseline beside this version
    assert report["malformed_lines"] == 3 and report["lines"] == 60 + 3 and report["rows"] == 3000
    quality = _read(prefix + "model-quality/statistics.json")
    assert quality["dataset"]["item_count"] == 3000
    assert quality["binary_classification_metrics"]["auc"]["value"] > 0.8

    cw = boto3.client("cloudwatch").list_metrics(Namespace="hybrid-mlops/data-metrics")["Metrics"]
    names = {(m["MetricName"], {d["Name"]: d["Value"] for d in m["Dimensions"]}["Feature"]) for m in cw}
    assert ("feature_baseline_drift_psi", "amount") in names and ("feature_baseline_drift_linf", "channel") in names

    msgs = boto3.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(json.loads(msgs[0]["Body"])["Message"])
    assert body["violated_features"] == ["amount", "channel"] and body["report_uri"].endswith("constraint_violations.json")

    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = [e for e in session.query(AssetEvent).all() if e.asset.uri == "hybrid-mlops://fraud-detection/drift"]
    assert events and events[-1].extra["violated_features"] == ["amount", "channel"]
    assert events[-1].extra["report_uri"] == f"s3://{_bucket()}/{prefix}constraint_violations.json"


def test_monitor_uses_prepared_baseline_with_identical_figures(aws, airflow_db, spec, monitor_dag, tmp_path):
    """The prepared baseline evaluate writes beside model.tar.gz: the monitor compares the numeric features
    with it, and its KS, p-value, PSI and JS are those of the raw training data's path, bit for bit."""
    from hybrid_mlops import layout
    from hybrid_mlops.drift import engine
    from hybrid_mlops.hooks.drift import DriftHook
    from hybrid_mlops.serving.smoke import OUTPUTS

    _register_baseline(spec, tmp_path)
    hook = DriftHook(aws_conn_id=None)
    model_url = f"s3://{_bucket()}/models/fraud-detection/job1/output/model.tar.gz"
    train_uri = f"s3://{_bucket()}/data/fraud-detection/run1/train"
    train = hook.read_parquet_columns(train_uri, list(NUMERIC_FEATURES))
    manifest = hook.put_prepared_baseline(train, list(NUMERIC_FEATURES), model_url, train_uri)
    key = "models/fraud-detection/job1/output/prepared-baseline/manifest.json"
    written = boto3.client("s3").head_object(Bucket=_bucket(), Key=key)["ETag"]
    assert hook.put_prepared_baseline(train, list(NUMERIC_FEATURES), model_url, train_uri) == manifest  # a retry
    assert boto3.client("s3").head_object(Bucket=_bucket(), Key=key)["ETag"] == written
    assert manifest["format_version"] == engine.PREPARED_FORMAT_VERSION
    assert manifest["features"]["amount"]["rows"] == 50_000

    window = generate(3000, seed=31, drift=DriftKnobs(shift={"amount": 0.6}))
    _put_capture(window)
    _run(monitor_dag)
    prefix = monitoring_prefix("fraud-detection", HOUR)
    assert _read(prefix + "report.json")["numeric_baseline"] == "prepared"
    got = {f["feature"]: f for f in _read(prefix + "drift_metrics.json")["features"] if f["kind"] == "numeric"}
    cur = hook.read_capture_window(_bucket(), layout.capture_prefix("fraud-detection", HOUR), list(NUMERIC_FEATURES),
                                   list(CATEGORICAL_FEATURES), id_column="transaction_id", output=OUTPUTS["binary"])
    assert set(got) == set(NUMERIC_FEATURES)
    for name in NUMERIC_FEATURES:  # the current path: the raw training column, sorted in the run
        want = engine.numeric_drift(name, train[name], cur["columns"][name]).to_dict()
        for k in ("ks_statistic", "ks_pvalue", "psi", "js", "baseline_count", "window_count", "window_missing",
                  "baseline_mean", "baseline_std"):  # the baseline's moments: from the manifest
            assert got[name][k] == want[k], (name, k)
        for k in ("window_mean", "window_std"):  # the window unsorted here: summation order only
            assert got[name][k] == pytest.approx(want[k], rel=1e-12), (name, k)
    assert _read(prefix + "constraint_violations.json")["violations"][0]["feature_name"] == "amount"


def test_monitor_dag_empty_window_reports_clearly(aws, airflow_db, spec, monitor_dag, tmp_path, monkeypatch):
    _register_baseline(spec, tmp_path)
    monitor_dag.get_task("wait_for_capture").timeout = 2
    monitor_dag.get_task("wait_for_capture").poke_interval = 0.5
    tis = _run(monitor_dag)
    assert tis["wait_for_capture"].state == "skipped"
    assert tis["signal_drift"].state == "skipped"
    report = _read(monitoring_prefix("fraud-detection", HOUR) + "report.json")
    assert report["status"] == "empty_window" and "No valid capture records" in report["message"]
    assert _read(monitoring_prefix("fraud-detection", HOUR) + "constraint_violations.json") == {"violations": []}


def test_malformed_only_window(aws, airflow_db, spec, monitor_dag, tmp_path):
    _register_baseline(spec, tmp_path)
    boto3.client("s3").put_object(Bucket=_bucket(), Key=capture_key("fraud-detection", HOUR),
                                  Body="garbage\n{\"no\": \"inputs\"}\n\n[1,2]\n")
    tis = _run(monitor_dag)
    report = _read(monitoring_prefix("fraud-detection", HOUR) + "report.json")
    assert report["status"] == "empty_window" and report["malformed_lines"] == 3 and report["lines"] == 3
    assert tis["signal_drift"].state == "skipped"


def _sensor(**kw):
    from hybrid_mlops.sensors.drift import DriftReportSensor

    return DriftReportSensor(task_id="wait_report", bucket=_bucket(), prefix="mm-output/endpoint/schedule/",
                             poke_interval=0.2, timeout=3, aws_conn_id=None, **kw)


def test_report_sensor_fires_on_model_monitor_output(aws):
    import asyncio

    key = "mm-output/endpoint/schedule/2026/05/01/10/constraint_violations.json"
    boto3.client("s3").put_object(Bucket=_bucket(), Key="mm-output/endpoint/schedule/2026/05/01/09/constraint_violations.json",
                                  Body=json.dumps({"violations": []}))
    sensor = _sensor()
    assert not sensor.poke({})  # a report without violations does not count
    boto3.client("s3").put_object(Bucket=_bucket(), Key=key, Body=json.dumps({"violations": [
        {"feature_name": "amount", "constraint_check_type": "baseline_drift_check", "description": "x"}]}))
    found = sensor.poke({}).xcom_value
    assert found["report_uri"] == f"s3://{_bucket()}/{key}"

    from hybrid_mlops.triggers.drift import DriftReportTrigger
    import time

    trigger = DriftReportTrigger(bucket=_bucket(), prefix="mm-output/", deadline=time.time() + 5, poke_interval=0.1,
                                 aws_conn_id=None)
    classpath, kwargs = trigger.serialize()
    assert classpath == "hybrid_mlops.triggers.drift.DriftReportTrigger" and json.dumps(kwargs)

    async def first():
        async for ev in trigger.run():
            return ev.payload

    event = asyncio.run(first())
    assert event["status"] == "success" and event["report_uri"].endswith(key)
    assert sensor.execute_complete({}, event)["violations"][0]["feature_name"] == "amount"


def test_report_sensor_times_out_cleanly(aws):
    import asyncio
    import time

    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

    from hybrid_mlops.triggers.drift import DriftReportTrigger

    trigger = DriftReportTrigger(bucket=_bucket(), prefix="monitoring/none/", deadline=time.time() + 0.5,
                                 poke_interval=0.1, aws_conn_id=None)

    async def first():
        async for ev in trigger.run():
            return ev.payload

    started = time.monotonic()
    event = asyncio.run(first())
    assert event["status"] == "timeout" and time.monotonic() - started < 5
    with pytest.raises(AirflowSensorTimeout):
        _sensor().execute_complete({}, event)
    with pytest.raises(AirflowSkipException):
        _sensor(soft_fail=True).execute_complete({}, event)
