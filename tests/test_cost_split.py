"""Per-model EKS serving cost from split cost allocation data (CUR 2.0 on Athena), on the ``aws`` target.

On AWS no EKS node carries a ``model`` tag, so Cost Explorer reports the serving clusters' cost as
``(unallocated)``. The report then attributes it with the pods' split cost. moto runs no SQL: the
CUR 2.0 query result is queued on moto's Athena (``/moto-api/static/athena/query-results``) in the
shape the query returns over AWS's documented columns, and Cost Explorer's pages are queued on
moto's Cost Explorer; everything else (DAG, operators, hooks, S3, CloudWatch, SNS) runs for real.
"""

from __future__ import annotations

import json
import os
import urllib.request
from datetime import date, datetime, time, timedelta, timezone

import boto3
import pytest
import sqlglot
from sqlglot import exp

from hybrid_mlops.cost import split
from hybrid_mlops.cost.explorer import UNALLOCATED

BUCKET = os.environ["HYBRID_MLOPS_BUCKET"]
WORKGROUP = "hybrid-mlops-cost"
DATABASE = "billing"
TABLE = "cur2_hourly"
DAY = datetime.now(timezone.utc).date() - timedelta(days=3)


def _post(url: str, payload: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def _athena_result(header: list[str], rows: list[list]) -> dict:
    def row(values):
        return {"Data": [{} if v is None else {"VarCharValue": str(v)} for v in values]}

    return {"rows": [row(header), *(row(r) for r in rows)],
            "column_info": [{"CatalogName": "hive", "SchemaName": DATABASE, "TableName": TABLE, "Name": h, "Label": h,
                             "Type": "varchar", "Precision": 0, "Scale": 0, "Nullable": "UNKNOWN",
                             "CaseSensitive": True} for h in header]}


def _ce_pages(start: date, days: int, eks_usd: float) -> list[dict]:
    """One page per query (sagemaker, eks, s3): the EKS clusters' nodes carry no ``model`` tag."""
    def results(groups):
        return [{"TimePeriod": {"Start": (start + timedelta(i)).isoformat(), "End": (start + timedelta(i + 1)).isoformat()},
                 "Total": {}, "Groups": groups, "Estimated": False} for i in range(days)]

    usd = {"UnblendedCost": {"Amount": str(eks_usd), "Unit": "USD"}, "AmortizedCost": {"Amount": str(eks_usd), "Unit": "USD"}}
    return [{"ResultsByTime": results([]), "DimensionValueAttributes": []},
            {"ResultsByTime": results([{"Keys": ["model$", "us-west-2"], "Metrics": usd}]), "DimensionValueAttributes": []},
            {"ResultsByTime": results([]), "DimensionValueAttributes": []}]


# The query's result over CUR 2.0 pod lines: line_item_resource_id arn:aws:eks:...:pod/..., split_line_item_*.
SPLIT_ROWS = [
    [DAY.isoformat(), "fraud-detection", "hybrid-mlops-us-west-2", "us-west-2", "12.0", "3.0"],
    [DAY.isoformat(), "wine-cultivar", "hybrid-mlops-us-west-2", "us-west-2", "5.0", "1.0"],
    [DAY.isoformat(), None, "hybrid-mlops-us-west-2", "us-west-2", "4.0", "0.0"],     # knative, kserve, logger
    [DAY.isoformat(), "retired-model", "hybrid-mlops-us-west-2", "us-west-2", "2.0", "0.0"],
    [(DAY - timedelta(days=1)).isoformat(), "fraud-detection", "hybrid-mlops-us-west-2", "us-west-2", "10.0", "2.0"],
]


@pytest.fixture
def aws_target(monkeypatch, aws):
    boto3.client("athena").create_work_group(Name=WORKGROUP, Configuration={})
    for name, value in {"HYBRID_MLOPS_TARGET": "aws", "HYBRID_MLOPS_ATHENA_DATABASE": "hybrid_mlops",
                        "HYBRID_MLOPS_CUR_DATABASE": DATABASE, "HYBRID_MLOPS_CUR_TABLE": TABLE,
                        "HYBRID_MLOPS_ATHENA_WORKGROUP": WORKGROUP,
                        "HYBRID_MLOPS_ATHENA_OUTPUT": f"s3://{BUCKET}/athena-results/"}.items():
        monkeypatch.setenv(name, value)
    return aws


def test_cost_report_on_aws_attributes_eks_serving_cost_by_pod_split_cost(aws_target, airflow_db):
    from hybrid_mlops.factory import build_dags

    start = DAY - timedelta(days=29)
    for page in _ce_pages(start, 30, eks_usd=50.0):
        _post(aws_target.url + "/moto-api/static/ce/cost-and-usage-results", {"results": [page]})
    _post(aws_target.url + "/moto-api/static/athena/query-results",
          {"region": os.environ["AWS_DEFAULT_REGION"], "results": [_athena_result(list(split.COLUMNS), SPLIT_ROWS)]})

    dag = build_dags("cost_report")["cost_report"]
    assert "eks_split_cost" in dag.task_ids
    run = dag.test(logical_date=datetime.combine(DAY + timedelta(days=1), time(7), tzinfo=timezone.utc))
    assert run.state == "success"
    doc = json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=f"cost-reports/{DAY}/cost.json")["Body"].read())

    models = {m["model"]: m for m in doc["models"]}
    assert models["fraud-detection"]["totals"]["serving_usd"] == pytest.approx(15.0)   # split 12 + its unused 3
    assert models["wine-cultivar"]["totals"]["serving_usd"] == pytest.approx(6.0)
    assert models["diabetes-progression"]["totals"]["serving_usd"] == 0.0
    # Untagged pods and a model no spec has stay unallocated; the day's total is still Cost Explorer's.
    assert doc["unallocated"]["serving_usd"] == pytest.approx(50.0 - 21.0)
    assert doc["totals"]["serving_usd"] == pytest.approx(50.0) and doc["totals"]["total_usd"] == pytest.approx(50.0)
    assert doc["eks_split"]["attributed_usd"]["fraud-detection"] == pytest.approx(15.0)
    assert doc["eks_split"]["table"] == f"{DATABASE}.{TABLE}"
    previous = next(d for d in doc["daily"] if d["day"] == (DAY - timedelta(days=1)).isoformat())
    assert previous["by_model"]["fraud-detection"] == pytest.approx(12.0)

    # The query Athena received: Athena SQL, in the CUR database and workgroup, over the serving clusters.
    athena = boto3.client("athena")
    (qid,) = athena.list_query_executions(WorkGroup=WORKGROUP)["QueryExecutionIds"]
    execution = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
    assert execution["QueryExecutionContext"]["Database"] == DATABASE
    tree = sqlglot.parse_one(execution["Query"], read="athena")
    assert {t.name for t in tree.find_all(exp.Table)} == {TABLE}
    assert tree.named_selects == list(split.COLUMNS)
    columns = {c.name for c in tree.find_all(exp.Column)}
    assert {"split_line_item_split_cost", "split_line_item_unused_cost", "split_line_item_parent_resource_id",
            "line_item_resource_id", "line_item_usage_start_date", "resource_tags"} <= columns
    clusters = {c for m in dag.get_task("eks_split_cost").models for c in m["clusters"]}
    assert clusters and all(f"'{c}'" in execution["Query"] for c in clusters)


def test_split_query_parses_and_filters_pod_lines():
    query = split.split_cost_query(DATABASE, TABLE, "2026-05-01", "2026-05-31", ["serving-us-west-2", "o'brien"])
    tree = sqlglot.parse_one(query, read="athena")
    assert tree.named_selects == list(split.COLUMNS)
    keys = {lit.this for lit in tree.find_all(exp.Literal) if lit.is_string}
    assert {split.MODEL_TAG, split.CLUSTER_TAG, "arn:aws:eks:%:pod/%", "o'brien"} <= keys
    with pytest.raises(ValueError):
        split.split_cost_query("bad-db; drop", TABLE, "2026-05-01", "2026-05-02", ["c"])


def test_attribution_never_exceeds_the_bill():
    ce = {"rows": [{"day": "2026-05-01", "source": "eks", "model": UNALLOCATED, "category": "serving",
                    "usage_type": "", "region": "us-west-2", "unblended": 10.0, "amortized": 9.0, "estimated": True}]}
    rows = split.parse_result([list(split.COLUMNS), ["2026-05-01", "a", "c", "us-west-2", "12.0", "3.0"],
                               ["2026-05-01", "b", "c", "us-west-2", "5.0", None]], ["a", "b"])
    out, warnings = split.attribute(ce, rows)
    by_model: dict[str, float] = {}
    for r in out["rows"]:
        by_model[r["model"]] = by_model.get(r["model"], 0.0) + r["unblended"]
    assert by_model["a"] == pytest.approx(7.5) and by_model["b"] == pytest.approx(2.5)
    assert by_model[UNALLOCATED] == pytest.approx(0.0) and len(warnings) == 1 and "in proportion" in warnings[0]
    assert len(ce["rows"]) == 1  # the input is left as it was
    with pytest.raises(ValueError, match="columns"):
        split.parse_result([["day", "model"]], ["a"])
