"""The spec's data source -> one SQL query over S3 files -> train / validation channels (Parquet).

Every source reduces to a query whose rows carry the schema's columns:

``s3``            the Parquet or CSV files under a prefix
``sql``           the team's query (Athena on ``aws``; DuckDB on ``local``, its tables mapped to files)
``feature_store`` a point-in-time training set from a feature group's offline store: per record id,
                  the newest record (event time, then write order), deleted records left out

Then the same steps on both targets: keep the rows of the data window (``data.window_days`` back
from the run's end, by the schema's event-time column), split train/validation by a hash of the id
(stable across runs and engines), sample ``max_rows`` training rows, write both channels.
The synthetic generator is the fourth source; it writes its channels itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hybrid_mlops.drift.sql import literal
from hybrid_mlops.specs.model import FeatureStoreSource, ModelSpec, S3Source, SqlSource

#: Offline-store columns SageMaker Feature Store adds to every record.
OFFLINE_STORE_COLUMNS = ("write_time", "api_invocation_time", "is_deleted")


class DataSourceError(ValueError):
    """The source cannot give the schema's training data; the message names the field."""


def quote(name: str) -> str:
    """A quoted SQL identifier (DuckDB and Athena/Trino both quote with double quotes)."""
    return '"' + name.replace('"', '""') + '"'


def resolve(uri: str) -> str:
    """A spec's S3 URI with ``{bucket}`` replaced by the deployment's artifacts bucket."""
    from hybrid_mlops import settings

    return uri.replace("{bucket}", settings.bucket())


def files_sql(uri: str, fmt: str) -> str:
    """DuckDB table function over every file of a format under an S3 prefix."""
    uri = resolve(uri)
    if fmt == "csv":
        return f"read_csv({literal(uri.rstrip('/') + '/**/*.csv*')}, header = true, union_by_name = true)"
    return f"read_parquet({literal(uri.rstrip('/') + '/**/*.parquet')}, union_by_name = true)"


def point_in_time_sql(table: str, id_column: str, event_time_column: str) -> str:
    """The newest non-deleted record per id of an offline store table (DuckDB and Athena alike)."""
    return (
        "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY " + quote(id_column) + " ORDER BY "
        + quote(event_time_column) + " DESC, " + quote("api_invocation_time") + " DESC, " + quote("write_time")
        + " DESC) AS " + quote("__rank") + f" FROM {table}) WHERE " + quote("__rank") + " = 1 AND NOT "
        + quote("is_deleted")
    )


def local_source_sql(spec: ModelSpec, *, offline_store_uri: str | None = None) -> tuple[list[str], str]:
    """``(setup statements, query)`` reading the source with DuckDB over S3."""
    source = spec.data.source
    if isinstance(source, S3Source):
        return [], f"SELECT * FROM {files_sql(source.uri, source.format)}"
    if isinstance(source, SqlSource):
        views = [f"CREATE OR REPLACE VIEW {quote(name)} AS SELECT * FROM {files_sql(t.uri, t.format)}"
                 for name, t in source.tables.items()]
        return views, source.query.strip().rstrip(";")
    if isinstance(source, FeatureStoreSource):
        if offline_store_uri is None:
            raise DataSourceError(f"data.source.feature_group={source.feature_group!r}: no offline store")
        table = files_sql(offline_store_uri, "parquet")
        return [], point_in_time_sql(table, spec.data_schema.id, spec.data_schema.event_time or "event_time")
    raise DataSourceError(f"data.source.type={source.type!r} is not read through SQL")


def selected_columns(spec: ModelSpec) -> list[str]:
    schema = spec.data_schema
    return [schema.id, *([schema.event_time] if schema.event_time else []), schema.label, *schema.features]


def event_time_expr(column: str, duckdb_type: str) -> str:
    """The event time as a TIMESTAMPTZ, whatever the source stored (epoch seconds, ISO text, timestamp)."""
    c = quote(column)
    if any(t in duckdb_type.upper() for t in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL")):
        return f"to_timestamp(CAST({c} AS DOUBLE))"
    if "TIMESTAMP" in duckdb_type.upper():
        return f"CAST({c} AS TIMESTAMPTZ)"
    return f"CAST(CAST({c} AS VARCHAR) AS TIMESTAMPTZ)"


def split_bucket(id_column: str) -> str:
    """0..999 from the md5 of the id: the same split on every run and every engine."""
    return f"(CAST(('0x' || substr(md5(CAST({quote(id_column)} AS VARCHAR)), 1, 8)) AS BIGINT) % 1000)"


def write_channels(con, spec: ModelSpec, query: str, prefix: str, *, window_end: datetime,
                   window_days: int | None, max_rows: int | None, where: str) -> dict[str, int]:
    """Window, split and write ``<prefix>/{train,validation}/part-0.parquet``; rows per channel.

    :param con: a DuckDB connection that reaches S3.
    :param where: the source, named in errors (``data.source.uri=...``).
    """
    schema = spec.data_schema
    con.execute(f"CREATE OR REPLACE TEMP VIEW source AS {query}")
    types = {row[0]: row[1] for row in con.execute("DESCRIBE SELECT * FROM source").fetchall()}
    wanted = selected_columns(spec)
    missing = [c for c in wanted if c not in types]
    if missing:
        raise DataSourceError(
            f"{where}: column(s) {missing} of the spec's schema are not in the data; "
            f"its columns are {sorted(types)[:50]}"
        )
    filters = []
    if schema.event_time and window_days:
        start = window_end - timedelta(days=window_days)
        t = event_time_expr(schema.event_time, types[schema.event_time])
        filters.append(f"{t} >= {literal(start.isoformat())}::TIMESTAMPTZ AND {t} < {literal(window_end.isoformat())}::TIMESTAMPTZ")
    filters.append(f"{quote(schema.label)} IS NOT NULL AND {quote(schema.id)} IS NOT NULL")
    cols = ", ".join(quote(c) for c in wanted)
    con.execute(f"CREATE OR REPLACE TEMP TABLE windowed AS SELECT {cols}, {split_bucket(schema.id)} AS __bucket "
                f"FROM source WHERE {' AND '.join(filters)}")
    cut = int(round(spec.data.validation_fraction * 1000))
    rows = {}
    for channel, condition, limit in (("train", f"__bucket >= {cut}", max_rows), ("validation", f"__bucket < {cut}", None)):
        order = f" ORDER BY md5(CAST({quote(schema.id)} AS VARCHAR)) LIMIT {int(limit)}" if limit else ""
        select = f"SELECT {cols} FROM windowed WHERE {condition}{order}"
        rows[channel] = int(con.execute(f"SELECT count(*) FROM ({select})").fetchone()[0])
        if rows[channel] == 0:
            span = f"in the last {window_days} day(s) before {window_end.isoformat()}" if schema.event_time and window_days \
                else "at all"
            raise DataSourceError(f"{where}: no {channel} rows {span}; check the source and data.window_days")
        con.execute(f"COPY ({select}) TO {literal(f'{prefix}/{channel}/part-0.parquet')} (FORMAT parquet)")
    return rows


def describe_source(spec: ModelSpec) -> str:
    """The source as the spec names it, for errors and logs."""
    s = spec.data.source
    if isinstance(s, S3Source):
        return f"data.source.uri={s.uri!r}"
    if isinstance(s, SqlSource):
        return "data.source.query"
    if isinstance(s, FeatureStoreSource):
        return f"data.source.feature_group={s.feature_group!r}"
    return f"data.source.generator={s.generator!r}"


def schema_document(spec: ModelSpec) -> dict:
    """``schema.json`` of the config channel: what any trainer needs to know of the model."""
    schema = spec.data_schema
    return {
        "model": spec.name, "task": spec.task, "id": schema.id, "label": schema.label,
        "event_time": schema.event_time, "numeric": schema.numeric, "categorical": schema.categorical,
        "domains": {n: f.domain for n, f in schema.features.items() if f.domain},
        "classes": schema.classes,
    }
