"""Load a model's example dataset (``include/datasets/<model>.csv``) where its spec's source reads it.

Generic: the spec says where (an S3 prefix, the SQL query's table, a feature group); this puts the
CSV there, with the schema's event-time column filled in so the rows fall inside the training window.
"""

from __future__ import annotations

import logging

from hybrid_mlops import settings
from hybrid_mlops.data import loaders
from hybrid_mlops.data.sources import resolve
from hybrid_mlops.specs.model import ModelSpec

log = logging.getLogger(__name__)


def dataset_path(spec: ModelSpec):
    return settings.INCLUDE_DIR / "datasets" / f"{spec.name}.csv"


def load_example_data(spec: ModelSpec, sagemaker, s3, columns: dict[str, list] | None = None) -> str:
    """Put the rows (default: the model's example CSV) where ``spec.data.source`` reads them; where."""
    source, schema = spec.data.source, spec.data_schema
    if source.type == "synthetic":
        return "generated at run time"
    columns = columns if columns is not None else loaders.read_csv(dataset_path(spec))
    if schema.event_time and schema.event_time not in columns:
        columns = loaders.with_event_times(columns, schema.event_time)
    if source.type == "feature_store":
        group = loaders.ensure_feature_group(
            sagemaker, source.feature_group, columns, record_id=schema.id,
            event_time=schema.event_time or "event_time",
            offline_uri=f"s3://{settings.bucket()}/feature-store", role_arn=settings.sagemaker_role_arn())
        n = loaders.ingest(group, columns, s3_client=s3)
        where = f"feature group {source.feature_group} ({n} records)"
    else:
        if source.type == "sql":
            if len(source.tables) != 1:
                raise ValueError(f"{spec.name}: data.source.tables must name one table to load an example into")
            target = next(iter(source.tables.values()))
        else:
            target = source
        if target.format != "csv":
            raise ValueError(f"{spec.name}: the example loader writes CSV; the source's format is {target.format}")
        uri = target.uri
        where = loaders.upload_csv(s3, columns, resolve(uri).rstrip("/") + f"/{spec.name}.csv")
    log.info("%s: example data -> %s", spec.name, where)
    return where
