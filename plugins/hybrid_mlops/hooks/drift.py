"""I/O of the drift monitor: capture windows and baselines from S3, the registry, reports, signals.

.. seealso::
    https://boto3.amazonaws.com/v1/documentation/api/latest/reference/services/s3.html
    https://duckdb.org/docs/extensions/httpfs/s3api
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from hybrid_mlops import settings
from hybrid_mlops.drift import sql
from hybrid_mlops.layout import split_s3_uri


class AthenaQueryFailed(RuntimeError):
    """An Athena query of the monitor did not succeed; the message quotes Athena's reason."""


class DriftHook(S3Hook):
    """S3, DuckDB/Athena, Model Registry, CloudWatch and SNS calls of the drift monitor.

    .. seealso:: https://boto3.amazonaws.com/v1/documentation/api/latest/reference/services/cloudwatch/client/put_metric_data.html

    :param aws_conn_id: Airflow AWS connection.
    :param region_name: AWS region.
    """

    METRIC_NAMESPACE = "hybrid-mlops/data-metrics"

    def client(self, service: str):
        """A boto3 client of another service with this hook's connection (SageMaker, CloudWatch, SNS)."""
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.aws_conn_id, region_name=self.conn_region_name,
                           client_type=service).get_conn()

    # ------------------------------------------------------------------------------ DuckDB over S3
    def endpoint_url(self) -> str | None:
        url = getattr(self.conn_config, "endpoint_url", None)
        return url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")

    def duckdb(self):
        """A DuckDB connection that reads ``s3://`` through httpfs with this hook's credentials."""
        import duckdb

        con = duckdb.connect()
        try:
            con.execute("LOAD httpfs")
        except duckdb.Error:
            import duckdb_extension_httpfs

            ext = os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions",
                               f"v{duckdb.__version__}", "httpfs.duckdb_extension")
            con.execute(f"INSTALL '{ext}'")
            con.execute("LOAD httpfs")
        creds = self.get_credentials()
        region = self.conn_region_name or settings.region()
        opts = [f"KEY_ID '{creds.access_key}'", f"SECRET '{creds.secret_key}'", f"REGION '{region}'"]
        if creds.token:
            opts.append(f"SESSION_TOKEN '{creds.token}'")
        if endpoint := self.endpoint_url():
            host = endpoint.split("://", 1)[-1].rstrip("/")
            opts += [f"ENDPOINT '{host}'", "URL_STYLE 'path'", f"USE_SSL {str(endpoint.startswith('https')).lower()}"]
        con.execute(f"CREATE OR REPLACE SECRET hybrid_mlops_s3 (TYPE s3, {', '.join(opts)})")
        return con

    def read_capture_window(self, bucket: str, prefix: str, numeric: list[str], categorical: list[str], *,
                            id_column: str | None = None, output: str = "probability") -> dict:
        """Flatten the capture files under ``s3://bucket/prefix`` (DuckDB; Athena on ``aws`` if configured).

        :return: ``{"files", "lines", "malformed", "malformed_sample", "present_features",
            "columns": {name: ndarray}, "invalid": {name: int}, "outputs", "ids", "rows"}``: ``outputs``
            is the model's output per row ([N], or [N, K] for class probabilities), ``ids`` the id column.
        """
        import numpy as np

        keys = self.list_keys(bucket_name=bucket, prefix=prefix)
        empty = {"files": 0, "lines": 0, "malformed": 0, "malformed_sample": [], "present_features": [],
                 "columns": {}, "invalid": {}, "outputs": np.empty(0), "ids": np.empty(0, object), "rows": 0}
        if not keys:
            return empty
        con = self.duckdb()
        try:
            con.execute(sql.duckdb_lines(f"s3://{bucket}/{prefix.rstrip('/')}/*"))
            files, lines, malformed = con.execute(sql.duckdb_summary()).fetchone()
            sample = [dict(zip(("file", "line_no", "line"), r)) for r in con.execute(sql.duckdb_malformed_sample()).fetchall()]
            present = {k for k, n in con.execute(sql.duckdb_keys()).fetchall()}
            out = {**empty, "files": int(files), "lines": int(lines), "malformed": int(malformed),
                   "malformed_sample": sample, "present_features": sorted(present)}
            if lines - malformed == 0:
                return out
            table = con.execute(sql.duckdb_rows(numeric, categorical, present, id_column=id_column,
                                                output=output)).fetch_arrow_table()
        finally:
            con.close()
        return {**out, **self._columns_from_table(table, numeric, categorical, id_column)}

    def iter_capture_batches(self, bucket: str, prefix: str, numeric: list[str], categorical: list[str], *,
                             output: str = "probability", batch_rows: int = 250_000, memory_limit: str = "256MB",
                             threads: int = 1):
        """The window's rows as Arrow record batches, streamed (:func:`sql.duckdb_rows_streamed`: DuckDB's
        JSON reader over the files, nothing materialised, its memory capped), so memory is bounded by the
        batch, not the window; for windows too large to hold, fed to
        :class:`~hybrid_mlops.drift.engine.StreamedWindow`.
        """
        con = self.duckdb()
        try:
            con.execute(f"SET memory_limit = {sql.literal(memory_limit)}")
            con.execute(f"SET threads = {int(threads)}")
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET enable_external_file_cache = false")  # files are read once: caching them only grows memory
            glob = f"s3://{bucket}/{prefix.rstrip('/')}/*"
            # a relation streams its result (execute() would materialise it before the first batch)
            yield from con.sql(sql.duckdb_rows_streamed(glob, numeric, categorical, output=output)
                               ).to_arrow_reader(batch_rows)
        finally:
            con.close()

    @staticmethod
    def _columns_from_table(table, numeric: list[str], categorical: list[str], id_column: str | None) -> dict:
        import numpy as np

        names = set(table.column_names)
        columns, invalid = {}, {}
        for n in numeric:
            if n in names:
                columns[n] = table.column(n).to_numpy(zero_copy_only=False).astype(np.float64)
                invalid[n] = int(np.count_nonzero(table.column(f"{n}__invalid").to_numpy(zero_copy_only=False)))
        for n in categorical:
            if n in names:
                columns[n] = np.asarray(table.column(n).to_pylist(), dtype=object)
        ids = (np.asarray(table.column(id_column).to_pylist(), dtype=object)
               if id_column in names else np.full(table.num_rows, None, dtype=object))
        return {"columns": columns, "invalid": invalid, "outputs": _outputs(table.column("__output").to_pylist()),
                "ids": ids, "rows": int(table.num_rows)}

    def read_parquet_columns(self, uri_prefix: str, columns: list[str]) -> dict:
        """Columns of the Parquet files under an S3 prefix (the training data), as numpy arrays."""
        import numpy as np

        con = self.duckdb()
        try:
            glob = uri_prefix.rstrip("/") + ("" if uri_prefix.endswith(".parquet") else "/**/*.parquet")
            table = con.execute(f"SELECT * FROM read_parquet('{glob}')").fetch_arrow_table()
        finally:
            con.close()
        out = {}
        for name in columns:
            if name not in table.column_names:
                continue
            col = table.column(name)
            if col.type == "string" or str(col.type) in ("string", "large_string"):
                out[name] = np.asarray(col.to_pylist(), dtype=object)
            else:
                out[name] = col.to_numpy(zero_copy_only=False).astype(np.float64)
        return out

    def read_labels(self, bucket: str, prefixes: list[str], id_column: str, label_column: str) -> dict[str, Any]:
        """``id -> label`` from the JSONL ground-truth files under the prefixes (one ``{id, label}``
        object per line, named by the schema's columns; malformed lines skipped)."""
        labels: dict[str, Any] = {}
        for prefix in prefixes:
            for key in self.list_keys(bucket_name=bucket, prefix=prefix) or []:
                for line in self.read_key(key, bucket).splitlines():
                    try:
                        rec = json.loads(line)
                        labels[str(rec[id_column])] = rec[label_column]
                    except (ValueError, KeyError, TypeError):
                        continue
        return labels

    # ------------------------------------------------------------------------------ Athena (aws)
    def athena_capture_window(self, *, database: str, table: str, capture_location: str, hour: str,
                              numeric: list[str], categorical: list[str], output_location: str,
                              workgroup: str = "primary", id_column: str | None = None,
                              output: str = "probability", poll_seconds: int = 5, max_polls: int = 360) -> dict:
        """The ``aws`` path of :meth:`read_capture_window`: Athena flattens, DuckDB reads the result file.

        Three queries in ``workgroup``: the capture table (``CREATE EXTERNAL TABLE IF NOT EXISTS``, hour
        partitions projected, no crawler), the hour's summary (files, lines, malformed lines, records per
        feature) and the rows (skipped when the hour has no valid record). The rows are read from the
        result file where Athena says it wrote it (``GetQueryExecution``'s
        ``ResultConfiguration.OutputLocation``): a workgroup that enforces its own result location
        overrides ``output_location``.

        .. seealso:: https://docs.aws.amazon.com/athena/latest/ug/querying.html

        :param output_location: ``ResultConfiguration.OutputLocation`` of the queries (``s3://.../``).
        :param poll_seconds: seconds between two state checks of a query.
        :param max_polls: state checks before a query counts as failed.
        """
        import numpy as np
        from airflow.providers.amazon.aws.hooks.athena import AthenaHook

        athena = AthenaHook(aws_conn_id=self.aws_conn_id, region_name=self.conn_region_name)
        features = [*numeric, *categorical, *([id_column] if id_column else [])]

        def run(query: str) -> str:
            qid = athena.run_query(query, {"Database": database}, {"OutputLocation": output_location},
                                   workgroup=workgroup)
            state = athena.poll_query_status(qid, max_polling_attempts=max_polls, sleep_time=poll_seconds)
            if state != "SUCCEEDED":
                raise AthenaQueryFailed(f"Athena query {qid} in workgroup {workgroup!r} ended {state}: "
                                        f"{athena.get_state_change_reason(qid)}")
            return qid

        run(sql.athena_capture_table_ddl(database, table, capture_location))
        qid = run(sql.athena_summary(database, table, hour, features))
        rows = athena.get_query_results(qid)["ResultSet"]["Rows"]
        if len(rows) < 2:
            raise AthenaQueryFailed(f"Athena query {qid} (the hour's summary) returned no row")
        header = [c.get("VarCharValue") for c in rows[0]["Data"]]
        summary = {h: int(c.get("VarCharValue") or 0) for h, c in zip(header, rows[1]["Data"])}
        present = sorted(n for i, n in enumerate(features) if summary.get(f"present_{i}"))
        out = {"files": summary["files"], "lines": summary["lines"], "malformed": summary["malformed"],
               "malformed_sample": [], "present_features": present, "columns": {}, "invalid": {},
               "outputs": np.empty(0), "ids": np.empty(0, object), "rows": 0}
        if out["lines"] - out["malformed"] == 0:
            return out
        qid = run(sql.athena_rows(database, table, hour, numeric, categorical, id_column=id_column, output=output))
        location = athena.get_output_location(qid)
        self.log.info("Athena query %s wrote %s", qid, location)
        return {**out, **self._columns_from_table(self.read_athena_csv(location), numeric, categorical, id_column)}

    def read_athena_csv(self, uri: str):
        """An Athena result file of :func:`sql.athena_rows` (CSV, header row, NULL as an empty unquoted field)
        as the Arrow table DuckDB's rows query gives: numeric features DOUBLE, ``<f>__invalid`` BOOLEAN, the
        rest text (nothing inferred: an id of digits stays text)."""
        source = (f"read_csv({sql.literal(uri)}, header = true, all_varchar = true, quote = '\"', "
                  "escape = '\"')")
        con = self.duckdb()
        try:
            names = [d[0] for d in con.execute(f"SELECT * FROM {source} LIMIT 0").description]
            select = []
            for name in names:
                col = '"' + name.replace('"', '""') + '"'
                if name.endswith("__invalid"):
                    select.append(f"coalesce(lower({col}) = 'true', false) AS {col}")
                elif f"{name}__invalid" in names:
                    select.append(f"TRY_CAST({col} AS DOUBLE) AS {col}")
                else:
                    select.append(col)
            return con.execute(f"SELECT {', '.join(select)} FROM {source}").fetch_arrow_table()
        finally:
            con.close()

    # ------------------------------------------------------------------------------ registry, artifacts
    def latest_approved_package(self, group: str) -> dict | None:
        """``describe_model_package`` of the newest Approved version of a package group, or None."""
        sm = self.client("sagemaker")
        listed = sm.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus="Approved",
                                        SortBy="CreationTime", SortOrder="Descending", MaxResults=1)
        summaries = listed.get("ModelPackageSummaryList") or []
        if not summaries:
            return None
        desc = sm.describe_model_package(ModelPackageName=summaries[0]["ModelPackageArn"])
        containers = (desc.get("InferenceSpecification") or {}).get("Containers") or [{}]
        return {
            "ModelPackageArn": desc["ModelPackageArn"],
            "ModelPackageVersion": desc.get("ModelPackageVersion"),
            "ModelDataUrl": containers[0].get("ModelDataUrl"),
            "CustomerMetadataProperties": desc.get("CustomerMetadataProperties") or {},
        }

    def read_model_artifacts(self, model_data_url: str, names: tuple[str, ...]) -> dict[str, Any]:
        """The baseline documents of a version: beside ``model.tar.gz`` (where evaluation writes them),
        else members of the tarball by base name (absent ones are left out)."""
        bucket, key = split_s3_uri(model_data_url)
        out: dict[str, Any] = {}
        base = key.rsplit("/", 1)[0]
        for name in names:
            if self.check_for_key(f"{base}/{name}", bucket):
                out[name] = json.loads(self.read_key(f"{base}/{name}", bucket))
        if len(out) == len(names):
            return out
        body = self.get_key(key, bucket).get()["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if member.isfile() and base in names and base not in out:
                    out[base] = json.loads(tar.extractfile(member).read())
        return out

    # ------------------------------------------------------------------------------ prepared baseline
    PREPARED_DIR = "prepared-baseline"
    PREPARED_MANIFEST = "manifest.json"

    def put_prepared_baseline(self, columns: dict, numeric: list[str], model_data_url: str,
                              train_data_uri: str) -> dict:
        """Write the prepared baseline of the numeric features (``engine.save_prepared``: sorted values and
        grid counts, one pair of ``.npy`` per feature) under ``prepared-baseline/`` beside ``model.tar.gz``,
        the manifest last, so a reader sees all files or none. A retry whose manifest already matches
        reuses the files. Returns the manifest."""
        import tempfile
        from urllib.parse import quote

        from hybrid_mlops.drift import engine

        bucket, key = split_s3_uri(model_data_url)
        prefix = f"{key.rsplit('/', 1)[0]}/{self.PREPARED_DIR}/"
        names = [n for n in numeric if n in columns]
        current = self._prepared_manifest(bucket, prefix)
        if current and current.get("train_data_uri") == train_data_uri and list(current["features"]) == names:
            self.log.info("Prepared baseline s3://%s/%s already written; reused", bucket, prefix)
            return current
        prepared = engine.prepare_baseline({n: columns[n] for n in names})
        files = {n: quote(n, safe="") for n in names}  # a feature name may hold "/"
        manifest = {"format_version": engine.PREPARED_FORMAT_VERSION, "train_data_uri": train_data_uri,
                    "features": {n: {"file": files[n], "rows": int(len(columns[n])),
                                     "present": int(prepared[n].values.size), **_moments(prepared[n])}
                                 for n in names}}
        with tempfile.TemporaryDirectory() as tmp:
            for path in engine.save_prepared({files[n]: prepared[n] for n in names}, tmp):
                self.load_file(path, prefix + os.path.basename(path), bucket, replace=True)
        self.put_json(manifest, bucket, prefix + self.PREPARED_MANIFEST)
        self.log.info("Prepared baseline of %s numeric features written to s3://%s/%s", len(names), bucket, prefix)
        return manifest

    def _prepared_manifest(self, bucket: str, prefix: str) -> dict | None:
        """The manifest under ``prefix`` when it is in this engine's format, else None."""
        from hybrid_mlops.drift import engine

        key = prefix + self.PREPARED_MANIFEST
        if not self.check_for_key(key, bucket):
            return None
        manifest = json.loads(self.read_key(key, bucket))
        return manifest if manifest.get("format_version") == engine.PREPARED_FORMAT_VERSION else None

    def load_prepared_baseline(self, model_data_url: str, numeric: list[str], directory: str,
                               train_data_uri: str | None = None) -> tuple[dict, dict] | None:
        """The version's prepared baseline of ``numeric``, downloaded to ``directory`` and memory-mapped:
        ``({feature: engine.PreparedColumn}, {feature: (mean, std)})``; None when it has none for all of
        them in this engine's format, or it was prepared from other training data than ``train_data_uri``."""
        from hybrid_mlops.drift import engine

        bucket, key = split_s3_uri(model_data_url)
        prefix = f"{key.rsplit('/', 1)[0]}/{self.PREPARED_DIR}/"
        manifest = self._prepared_manifest(bucket, prefix)
        if not manifest or (train_data_uri and manifest.get("train_data_uri") != train_data_uri) \
                or not set(numeric) <= set(manifest["features"]):
            return None
        s3 = self.get_conn()
        files = {n: manifest["features"][n]["file"] for n in numeric}
        for stem in files.values():
            for suffix in (".npy", ".cells.npy"):
                s3.download_file(bucket, prefix + stem + suffix, os.path.join(directory, stem + suffix))
        loaded = engine.load_prepared(directory, list(files.values()))
        moments = {n: (f["mean"], f["std"]) for n, f in manifest["features"].items() if n in files and "mean" in f}
        return {n: loaded[stem] for n, stem in files.items()}, moments

    def put_json(self, obj: Any, bucket: str, key: str) -> str:
        self.load_string(json.dumps(obj, indent=1, default=str), key=key, bucket_name=bucket, replace=True)
        return f"s3://{bucket}/{key}"

    # ------------------------------------------------------------------------------ signals
    def put_drift_metrics(self, model: str, metrics: list[dict], timestamp) -> int:
        """PutMetricData: ``metrics`` = ``[{"feature", "metric", "value"}]`` (dimensions Model, Feature)."""
        cw = self.client("cloudwatch")
        data = [
            {"MetricName": m["metric"], "Dimensions": [{"Name": "Model", "Value": model},
                                                       {"Name": "Feature", "Value": m["feature"]}],
             "Timestamp": timestamp, "Value": float(m["value"]), "Unit": "None"}
            for m in metrics if m.get("value") is not None
        ]
        for i in range(0, len(data), 500):  # PutMetricData takes at most 1000 datums
            cw.put_metric_data(Namespace=self.METRIC_NAMESPACE, MetricData=data[i : i + 500])
        return len(data)

    def publish_violations(self, topic: str, subject: str, message: dict) -> str:
        """Publish to an SNS topic (an ARN, or a name created idempotently); returns the MessageId."""
        sns = self.client("sns")
        arn = topic if topic.startswith("arn:") else sns.create_topic(Name=topic)["TopicArn"]
        return sns.publish(TopicArn=arn, Subject=subject[:100], Message=json.dumps(message, default=str))["MessageId"]

    # ------------------------------------------------------------------------------ report discovery
    def find_reports(self, bucket: str, prefix: str, *, suffix: str = "constraint_violations.json",
                     start_after_key: str = "", require_violations: bool = True) -> list[dict]:
        """Objects under a prefix whose key ends with ``suffix`` (sorted by key, newest window last).

        With ``require_violations`` each is read as ``constraint_violations.json`` and only those with
        at least one violation are kept.
        """
        found = []
        paginator = self.get_conn().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []) or []:
                key = obj["Key"]
                if not key.endswith(suffix) or key <= start_after_key:
                    continue
                violations: list = []
                if require_violations:
                    try:
                        violations = json.loads(self.read_key(key, bucket)).get("violations") or []
                    except (ValueError, AttributeError):
                        continue
                    if not violations:
                        continue
                found.append({"key": key, "violations": violations, "last_modified": obj["LastModified"].isoformat()})
        return sorted(found, key=lambda r: r["key"])


def _moments(col) -> dict:
    """The baseline's mean and std as the monitor computes them (so a run needn't pass over the baseline)."""
    return {"mean": float(col.values.mean()), "std": float(col.values.std())} if col.values.size else {}


def _outputs(values: list):
    """The captured output per row as floats: [N] (probability, prediction) or [N, K] (probabilities)."""
    import numpy as np

    parsed = []
    for v in values:
        try:
            parsed.append(json.loads(v) if isinstance(v, str) else v)
        except ValueError:
            parsed.append(None)
    if any(isinstance(v, list) for v in parsed):
        width = max(len(v) for v in parsed if isinstance(v, list))
        return np.array([v if isinstance(v, list) and len(v) == width else [np.nan] * width for v in parsed], dtype=np.float64)
    return np.array([v if isinstance(v, (int, float)) else np.nan for v in parsed], dtype=np.float64)
