"""Each data source of the spec, on the moto S3: windows, splits, point-in-time reads, clear errors."""

from __future__ import annotations

import copy
import io
from datetime import datetime, timedelta, timezone

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import ROOT

END = datetime(2026, 11, 30, tzinfo=timezone.utc)
WINE = yaml.safe_load((ROOT / "include" / "models" / "wine-cultivar.yaml").read_text())


def _spec(**changes):
    from hybrid_mlops.specs import parse_spec

    data = copy.deepcopy(WINE)
    data["schema"]["features"] = {"x": "numeric", "colour": "categorical"}
    data["schema"].pop("classes")
    data["task"] = "regression"
    data["approval"]["rules"] = {"rmse": {"approve_at": 1.0, "reject_above": 2.0}}
    data["schema"].update(id="row_id", label="y", event_time="ts")
    for key, value in changes.items():
        data[key] = value
    return parse_spec(data, "test.yaml")


def _rows(n: int, days: int = 20, age_days: int = 0) -> dict:
    """``n`` rows, the newest ``age_days`` old, spread over ``days``."""
    times = [(END - timedelta(days=age_days) - timedelta(days=days) * (i / n)).isoformat() for i in range(n)]
    return {"row_id": [f"r{i}" for i in range(n)], "ts": times,
            "x": [float(i) for i in range(n)], "colour": ["red" if i % 2 else "blue" for i in range(n)],
            "y": [i * 0.5 for i in range(n)]}


def _put_parquet(key: str, columns: dict) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    boto3.client("s3").put_object(Bucket="hybrid-mlops-test", Key=key, Body=buf.getvalue())


def _channels(spec, window_days=None, max_rows=None):
    from hybrid_mlops.data import sources
    from hybrid_mlops.hooks.data import DataSourceHook

    hook = DataSourceHook(aws_conn_id=None)
    offline = hook.offline_store_uri(spec.data.source.feature_group) if spec.data.source.type == "feature_store" else None
    setup, query = sources.local_source_sql(spec, offline_store_uri=offline)
    con = hook.duckdb()
    for statement in setup:
        con.execute(statement)
    rows = sources.write_channels(con, spec, query, "s3://hybrid-mlops-test/out", window_end=END,
                                  window_days=window_days, max_rows=max_rows, where=sources.describe_source(spec))
    read = {c: con.execute(f"SELECT * FROM read_parquet('s3://hybrid-mlops-test/out/{c}/part-0.parquet')").fetch_arrow_table()
            for c in ("train", "validation")}
    return rows, read


def test_s3_parquet_window_split_and_sample(aws):
    _put_parquet("src/a/part-1.parquet", _rows(1000, days=20))
    spec = _spec(data={"source": {"type": "s3", "uri": "s3://{bucket}/src/a/"}, "validation_fraction": 0.25})
    rows, read = _channels(spec, window_days=10)
    assert 450 <= rows["train"] + rows["validation"] <= 510  # the last 10 of 20 days
    assert 0.18 < rows["validation"] / (rows["train"] + rows["validation"]) < 0.32
    assert set(read["train"].column_names) == {"row_id", "ts", "y", "x", "colour"}
    assert not set(read["train"].column("row_id").to_pylist()) & set(read["validation"].column("row_id").to_pylist())
    again, _ = _channels(spec, window_days=10)
    assert again == rows  # the split is stable: a hash of the id
    capped, read = _channels(spec, window_days=None, max_rows=100)
    assert capped["train"] == 100 and read["train"].num_rows == 100


def test_missing_column_and_empty_window_name_the_source(aws):
    from hybrid_mlops.data.sources import DataSourceError

    cols = _rows(200)
    del cols["colour"]
    _put_parquet("src/b/part-1.parquet", cols)
    spec = _spec(data={"source": {"type": "s3", "uri": "s3://{bucket}/src/b/"}})
    with pytest.raises(DataSourceError, match=r"data.source.uri='s3://\{bucket\}/src/b/': column\(s\) \['colour'\] of the spec's schema are not in the data"):
        _channels(spec)
    _put_parquet("src/c/part-1.parquet", _rows(200, days=20, age_days=40))  # all older than the window
    spec = _spec(data={"source": {"type": "s3", "uri": "s3://{bucket}/src/c/"}})
    with pytest.raises(DataSourceError, match=r"no train rows in the last 30 day\(s\) before 2026-11-30"):
        _channels(spec, window_days=30)


def test_sql_source_over_csv_tables(aws):
    from hybrid_mlops.data.loaders import to_csv

    cols = _rows(400)
    boto3.client("s3").put_object(Bucket="hybrid-mlops-test", Key="tables/t/x.csv", Body=to_csv(cols))
    spec = _spec(data={"source": {"type": "sql", "query": "SELECT * FROM obs WHERE x >= 100",
                                  "tables": {"obs": {"uri": "s3://{bucket}/tables/t/", "format": "csv"}}}})
    rows, read = _channels(spec)
    assert rows["train"] + rows["validation"] == 300
    assert min(read["train"].column("x").to_pylist() + read["validation"].column("x").to_pylist()) >= 100


def test_feature_store_point_in_time(aws):
    """Per record id the newest record counts, and a deleted record's id is left out."""
    from hybrid_mlops.data.loaders import ensure_feature_group, ingest

    sm, s3 = boto3.client("sagemaker"), boto3.client("s3")
    cols = _rows(300)
    group = ensure_feature_group(sm, "obs-features", cols, record_id="row_id", event_time="ts",
                                 offline_uri="s3://hybrid-mlops-test/fs", role_arn="arn:aws:iam::123456789012:role/r")
    assert ensure_feature_group(sm, "obs-features", cols, record_id="row_id", event_time="ts",
                                offline_uri="s3://hybrid-mlops-test/fs", role_arn="arn:aws:iam::123456789012:role/r"
                                )["FeatureGroupArn"] == group["FeatureGroupArn"]  # reused, not created twice
    ingest(group, cols, s3_client=s3)
    newer = {k: v[:10] for k, v in cols.items()}
    newer["ts"] = [END.isoformat()] * 10
    newer["y"] = [-1.0] * 10  # the newest value of the first ten ids
    ingest(group, newer, s3_client=s3)
    spec = _spec(data={"source": {"type": "feature_store", "feature_group": "obs-features"}})
    rows, read = _channels(spec, window_days=None)
    assert rows["train"] + rows["validation"] == 300
    values = dict(zip(read["train"].column("row_id").to_pylist() + read["validation"].column("row_id").to_pylist(),
                      read["train"].column("y").to_pylist() + read["validation"].column("y").to_pylist()))
    assert all(values[f"r{i}"] == -1.0 for i in range(10)) and values["r11"] == 5.5


def test_athena_unload_request_is_valid(aws):
    """On aws an SQL source runs as Athena UNLOAD (checked against botocore's model by the strict checks;
    moto runs no query, so the state is all this can show)."""
    from hybrid_mlops.hooks.data import DataSourceHook

    spec = _spec(data={"source": {"type": "sql", "database": "clinical", "query": "SELECT * FROM obs"}})
    assert DataSourceHook(aws_conn_id=None).athena_unload(spec, "s3://hybrid-mlops-test/raw/", "run-1") == \
        "s3://hybrid-mlops-test/raw/"
    (execution,) = boto3.client("athena").list_query_executions()["QueryExecutionIds"][:1]
    query = boto3.client("athena").get_query_execution(QueryExecutionId=execution)["QueryExecution"]
    assert query["Query"].startswith("UNLOAD (SELECT * FROM obs) TO 's3://hybrid-mlops-test/raw/' WITH (format = 'PARQUET')")
    assert query["QueryExecutionContext"]["Database"] == "clinical"
