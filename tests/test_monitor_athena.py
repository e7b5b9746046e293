"""The monitor's ``aws`` path: Athena flattens the capture, the report is built from Athena's rows.

Athena runs no SQL on moto: moto's server records every query sent (text, database, workgroup, result
location) and answers with result sets queued through its ``/moto-api/static/athena/query-results``
endpoint, which it also writes as CSV where ``GetQueryExecution`` says the result is. So the tests
(a) parse every query the monitor sent in the Athena/Trino dialect (sqlglot), and (b) queue the rows
Athena would return for the captured hour and check the report built from them.
"""

from __future__ import annotations

import json
import math
import os
import urllib.request
from datetime import timedelta

import boto3
import pytest
import sqlglot
from sqlglot import exp

from hybrid_mlops.data.generator import DriftKnobs, generate
from hybrid_mlops.drift import sql
from hybrid_mlops.layout import monitoring_prefix
from test_monitor_dag import HOUR, _put_capture, _read, _register_baseline

DATABASE = "hybrid_mlops_monitor"
WORKGROUP = "hybrid-mlops-monitor"
HOUR_PATH = HOUR.strftime("%Y/%m/%d/%H")


def _bucket():
    return os.environ["HYBRID_MLOPS_BUCKET"]


def parse_athena(query: str) -> exp.Expression:
    """One statement in the Athena dialect (Hive DDL, Trino DML); a parse error fails the test."""
    (tree,) = sqlglot.parse(query, read="athena", error_level=sqlglot.ErrorLevel.RAISE)
    assert tree is not None
    return tree


@pytest.fixture
def aws_target(monkeypatch, aws):
    """The target switched to ``aws`` (the AWS endpoint stays the moto server), Athena settings set."""
    boto3.client("athena").create_work_group(Name=WORKGROUP, Configuration={
        "ResultConfiguration": {"OutputLocation": f"s3://{_bucket()}/athena-results/"}})
    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "aws")
    monkeypatch.setenv("HYBRID_MLOPS_ATHENA_DATABASE", DATABASE)
    monkeypatch.setenv("HYBRID_MLOPS_ATHENA_WORKGROUP", WORKGROUP)
    monkeypatch.setenv("HYBRID_MLOPS_ATHENA_OUTPUT", f"s3://{_bucket()}/athena-results/monitor/")
    return aws


def _queue_results(server, results: list[dict]) -> None:
    """Queue result sets on moto's Athena, taken in order by the next queries started."""
    body = json.dumps({"region": os.environ["AWS_DEFAULT_REGION"], "results": results}).encode()
    req = urllib.request.Request(f"{server.url}/moto-api/static/athena/query-results", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    assert urllib.request.urlopen(req, timeout=10).status == 201


def _result(header: list[str], rows: list[list]) -> dict:
    """A result set shaped as Athena returns a SELECT's: the header row first, NULL as a missing value."""
    def row(values):
        return {"Data": [{} if v is None else {"VarCharValue": str(v)} for v in values]}

    return {"rows": [row(header), *(row(r) for r in rows)],
            "column_info": [{"CatalogName": "hive", "SchemaName": DATABASE, "TableName": "", "Name": h, "Label": h,
                             "Type": "varchar", "Precision": 0, "Scale": 0, "Nullable": "UNKNOWN",
                             "CaseSensitive": True} for h in header]}


def _athena_rows(window: dict, numeric: list[str], categorical: list[str], id_column: str) -> dict:
    """What :func:`sql.athena_rows` returns for the window: its columns, in its order."""
    header = [c for n in numeric for c in (n, f"{n}__invalid")] + [*categorical, id_column, "__output"]
    rows = []
    for i in range(len(window[id_column])):
        values = []
        for n in numeric:
            v = float(window[n][i])
            values += [None if math.isnan(v) else repr(v), "false"]
        values += [None if window[c][i] is None else str(window[c][i]) for c in categorical]
        values += [str(window[id_column][i]), repr(float(window["true_probability"][i]))]
        rows.append(values)
    return _result(header, rows)


def _executions() -> list[dict]:
    """Every query the workgroup ran, oldest first, as moto recorded it."""
    athena = boto3.client("athena")
    ids = athena.list_query_executions(WorkGroup=WORKGROUP)["QueryExecutionIds"]
    found = [athena.get_query_execution(QueryExecutionId=q)["QueryExecution"] for q in ids]
    return sorted(found, key=lambda e: e["Status"]["SubmissionDateTime"])


def test_monitor_dag_on_aws_reads_athena_rows_and_flags_the_shift(aws_target, airflow_db, spec, tmp_path):
    from airflow.utils.state import DagRunState

    from hybrid_mlops.dags.monitor import build
    from hybrid_mlops.data.sources import schema_document

    schema = schema_document(spec)
    numeric, categorical, id_column = schema["numeric"], schema["categorical"], schema["id"]
    _register_baseline(spec, tmp_path)
    window = generate(3000, seed=31, drift=DriftKnobs(shift={"amount": 0.6}))
    _put_capture(window)  # what the sensor waits for and what Athena's table would read
    features = [*numeric, *categorical, id_column]
    _queue_results(aws_target, [
        {"rows": [], "column_info": []},  # CREATE EXTERNAL TABLE: no rows
        _result(["files", "lines", "malformed", *(f"present_{i}" for i in range(len(features)))],
                [["1", "60", "0", *(["60"] * len(features))]]),
        _athena_rows(window, numeric, categorical, id_column),
    ])

    (dag,) = build([spec])
    report_task = dag.get_task("drift_report")
    assert (report_task.athena_database, report_task.athena_workgroup) == (DATABASE, WORKGROUP)
    run = dag.test(logical_date=HOUR + timedelta(hours=1), run_after=HOUR + timedelta(hours=1))
    assert run.state == DagRunState.SUCCESS
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["signal_drift"].state == "success"

    prefix = monitoring_prefix("fraud-detection", HOUR)
    report = _read(prefix + "report.json")
    assert report["rows"] == 3000 and report["lines"] == 60 and report["malformed_lines"] == 0
    violations = _read(prefix + "constraint_violations.json")["violations"]
    assert {v["feature_name"] for v in violations} == {"amount"}
    stats = _read(prefix + "statistics.json")
    assert stats["dataset"]["item_count"] == 3000

    # (a) what the monitor sent: three queries, in the configured database and workgroup, each Athena SQL.
    executions = _executions()
    assert len(executions) == 3
    trees = [parse_athena(e["Query"]) for e in executions]
    assert isinstance(trees[0], exp.Create) and all(isinstance(t, exp.Select) for t in trees[1:])
    assert all(e["QueryExecutionContext"]["Database"] == DATABASE for e in executions)
    table = f"capture_{spec.name.replace('-', '_')}"
    assert {t.name for tree in trees for t in tree.find_all(exp.Table)} == {table}
    assert f"s3://{_bucket()}/capture/fraud-detection/" in executions[0]["Query"]
    assert all(f"'{HOUR_PATH}'" in e["Query"] for e in executions[1:])
    unnested = {c.name for c in trees[2].find(exp.Unnest).args["alias"].columns}
    assert unnested == {f"{n}_j" for n in features} | {"__output_j"}
    # The rows were read from where Athena said it wrote them.
    location = executions[2]["ResultConfiguration"]["OutputLocation"]
    assert location.startswith(f"s3://{_bucket()}/athena-results/monitor/") and location.endswith(".csv")


def test_athena_window_without_valid_records_sends_no_rows_query(aws_target):
    from hybrid_mlops.hooks.drift import DriftHook

    _queue_results(aws_target, [
        {"rows": [], "column_info": []},
        _result(["files", "lines", "malformed", "present_0", "present_1"], [["2", "7", "7", "0", "0"]]),
    ])
    window = DriftHook(aws_conn_id="aws_default").athena_capture_window(
        database=DATABASE, table="capture_churn", capture_location=f"s3://{_bucket()}/capture/churn/",
        hour=HOUR_PATH, numeric=["monthly charges"], categorical=["payment method"],
        output_location=f"s3://{_bucket()}/athena-results/", workgroup=WORKGROUP, poll_seconds=1)
    assert (window["files"], window["lines"], window["malformed"], window["rows"]) == (2, 7, 7, 0)
    assert window["present_features"] == []
    assert len(_executions()) == 2


def test_athena_csv_read_as_the_rows_query_types(aws):
    """Athena's CSV (all quoted, NULL an empty unquoted field, ``""`` inside quotes) read with the types
    the DuckDB path gives: a numeric DOUBLE, ``__invalid`` BOOLEAN, an id of digits kept as text."""
    from hybrid_mlops.hooks.drift import DriftHook

    body = ('"monthly charges","monthly charges__invalid","payment method","customer_id","__output"\n'
            '"12.5","false","card ""gold""","007","0.25"\n'
            ',"true",,"008","0.75"\n')
    boto3.client("s3").put_object(Bucket=_bucket(), Key="athena-results/q.csv", Body=body)
    hook = DriftHook(aws_conn_id="aws_default")
    table = hook.read_athena_csv(f"s3://{_bucket()}/athena-results/q.csv")
    cols = hook._columns_from_table(table, ["monthly charges"], ["payment method"], "customer_id")
    assert cols["rows"] == 2 and cols["invalid"] == {"monthly charges": 1}
    assert cols["columns"]["monthly charges"][0] == 12.5 and math.isnan(cols["columns"]["monthly charges"][1])
    assert cols["columns"]["payment method"].tolist() == ['card "gold"', None]
    assert cols["ids"].tolist() == ["007", "008"] and cols["outputs"].tolist() == [0.25, 0.75]


@pytest.mark.parametrize("numeric,categorical,id_column,output", [
    (["amount", "hour_of_day"], ["channel", "merchant_category"], "transaction_id", "probability"),
    (["monthly charges", "tenure months", "2nd score"], ["payment method", "contract"], "customer id", "probabilities"),
    ([], ["payment method"], None, "prediction"),
    (["total sulfur dioxide"], [], "sample id", "prediction"),
])
def test_every_athena_statement_parses_in_the_athena_dialect(numeric, categorical, id_column, output):
    """Feature names with spaces (and leading digits) stay quoted identifiers and JSON path members."""
    features = [*numeric, *categorical, *([id_column] if id_column else [])]
    ddl = parse_athena(sql.athena_capture_table_ddl(DATABASE, "capture_churn", "s3://b/capture/churn"))
    props = {p.name: p.text("value") for p in ddl.find_all(exp.Property) if p.name.startswith("projection")}
    assert props["projection.hour.format"] == "yyyy/MM/dd/HH"
    summary = parse_athena(sql.athena_summary(DATABASE, "capture_churn", HOUR_PATH, features))
    assert summary.named_selects == ["files", "lines", "malformed", *(f"present_{i}" for i in range(len(features)))]
    rows = parse_athena(sql.athena_rows(DATABASE, "capture_churn", HOUR_PATH, numeric, categorical,
                                        id_column=id_column, output=output))
    expected = [c for n in numeric for c in (n, f"{n}__invalid")] + [*categorical, *([id_column] if id_column else []),
                                                                     "__output"]
    assert rows.named_selects == expected
    # Each JSON path parsed as Athena reads it: one member per feature, the name whole (spaces included).
    members = {key.this for key in rows.find_all(exp.JSONPathKey)}
    assert {"inputs", "outputs", output, *features} <= members


def test_monitor_on_aws_needs_the_athena_settings(monkeypatch, spec):
    """The DAG file parses without them (MWAA imports every DAG); the report task fails naming the variable."""
    from airflow.sdk.exceptions import AirflowFailException

    from hybrid_mlops.dags.monitor import build

    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "aws")
    monkeypatch.setenv("HYBRID_MLOPS_ATHENA_WORKGROUP", WORKGROUP)
    monkeypatch.delenv("HYBRID_MLOPS_ATHENA_DATABASE", raising=False)
    (dag,) = build([spec])
    task = dag.get_task("drift_report")
    assert task.athena_database is None and task.athena_workgroup == WORKGROUP
    with pytest.raises(AirflowFailException, match="HYBRID_MLOPS_ATHENA_DATABASE"):
        task.athena_config()
    monkeypatch.setenv("HYBRID_MLOPS_ATHENA_DATABASE", DATABASE)
    assert task.athena_config() == {"database": DATABASE, "workgroup": WORKGROUP,
                                    "output_location": f"s3://{_bucket()}/athena-results/"}
    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "local")
    assert build([spec])[0].get_task("drift_report").athena_config() is None
