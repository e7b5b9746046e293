"""I/O of data preparation: DuckDB over S3, the Feature Store's offline store, Athena UNLOAD.

.. seealso::
    https://docs.aws.amazon.com/sagemaker/latest/dg/feature-store-offline.html
    https://docs.aws.amazon.com/athena/latest/ug/unload.html
"""

from __future__ import annotations

import logging

from hybrid_mlops import settings
from hybrid_mlops.hooks.drift import DriftHook

log = logging.getLogger(__name__)


class DataSourceHook(DriftHook):
    """S3 (DuckDB), SageMaker Feature Store and Athena calls of ``prepare_data``.

    :param aws_conn_id: Airflow AWS connection.
    :param region_name: AWS region.
    """

    def head_rows(self, uri_prefix: str, columns: list[str], rows: int) -> dict[str, list]:
        """The first ``rows`` rows of the Parquet files under a prefix, as ``{column: [values]}``."""
        from hybrid_mlops.data.sources import files_sql, quote

        con = self.duckdb()
        try:
            table = con.execute(f"SELECT {', '.join(quote(c) for c in columns)} FROM {files_sql(uri_prefix, 'parquet')} "
                                f"LIMIT {int(rows)}").fetch_arrow_table()
        finally:
            con.close()
        return {c: table.column(c).to_pylist() for c in columns}

    def describe_feature_group(self, name: str) -> dict:
        from botocore.exceptions import ClientError

        from hybrid_mlops.data.sources import DataSourceError

        try:
            return self.client("sagemaker").describe_feature_group(FeatureGroupName=name)
        except ClientError as err:
            raise DataSourceError(f"data.source.feature_group={name!r}: {err.response['Error'].get('Message', err)}") \
                from None

    def offline_store_uri(self, name: str) -> str:
        """The S3 prefix of a feature group's offline store (``ResolvedOutputS3Uri``)."""
        from hybrid_mlops.data.sources import DataSourceError

        group = self.describe_feature_group(name)
        store = (group.get("OfflineStoreConfig") or {}).get("S3StorageConfig") or {}
        uri = store.get("ResolvedOutputS3Uri") or store.get("S3Uri")
        if not uri:
            raise DataSourceError(f"data.source.feature_group={name!r} has no offline store; "
                                  "enable OfflineStoreConfig to train from it")
        return uri

    def athena_unload(self, spec, destination: str, run_key: str) -> str:
        """Run the source's query on Athena as ``UNLOAD ... TO destination`` (Parquet); the prefix."""
        from airflow.providers.amazon.aws.hooks.athena import AthenaHook

        from hybrid_mlops.data import sources

        source = spec.data.source
        if source.type == "feature_store":
            group = self.describe_feature_group(source.feature_group)
            catalog = group["OfflineStoreConfig"]["DataCatalogConfig"]
            database = catalog["Database"]
            table = f"{sources.quote(catalog['Database'])}.{sources.quote(catalog['TableName'])}"
            query = sources.point_in_time_sql(table, group["RecordIdentifierFeatureName"], group["EventTimeFeatureName"])
        else:
            database, query = source.database, source.query.strip().rstrip(";")
        athena = AthenaHook(aws_conn_id=self.aws_conn_id, region_name=self.conn_region_name)
        statement = f"UNLOAD ({query}) TO {sources.literal(destination)} WITH (format = 'PARQUET')"
        query_id = athena.run_query(
            statement, query_context={"Database": database},
            result_configuration={"OutputLocation": f"{destination.rstrip('/')}-results/"},
            client_request_token=f"{run_key}-unload"[-128:].rjust(32, "0"),
            workgroup=settings.athena_workgroup(),
        )
        state = athena.poll_query_status(query_id)
        if state != "SUCCEEDED":
            reason = athena.get_state_change_reason(query_id)
            raise sources.DataSourceError(f"{sources.describe_source(spec)}: Athena query {query_id} {state}: {reason}")
        log.info("Athena query %s unloaded the source to %s", query_id, destination)
        return destination
