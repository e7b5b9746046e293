"""Put a team's CSV where a spec's source reads it: an S3 prefix, or a SageMaker Feature Store group.

The demo and the tests load the shipped datasets (``include/datasets/``) this way; a team on AWS
loads its own data with its own pipelines, into the same places.

Feature Store: the group is created through the SageMaker API (record id, event time, feature
definitions, an offline store in S3). Records go in with ``PutRecord`` on ``aws``; the service then
writes them to the offline store as Parquet under ``ResolvedOutputS3Uri/year=/month=/day=/hour=/``
with ``write_time``, ``api_invocation_time`` and ``is_deleted`` added. moto has no Feature Store
runtime, so on ``local`` the loader writes those offline-store files itself, in that layout: the
training query reads them exactly as it reads the real offline store.

.. seealso:: https://docs.aws.amazon.com/sagemaker/latest/dg/feature-store-offline.html
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

log = logging.getLogger(__name__)


def read_csv(path: str | Path) -> dict[str, list]:
    """A CSV with a header row as ``{column: [text values]}``."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    return {name: [r[i] for r in body] for i, name in enumerate(header)}


def with_event_times(columns: dict[str, list], column: str, *, days: int = 28, end: datetime | None = None) -> dict:
    """Adds ``column``: ISO-8601 times spread over the ``days`` before ``end`` (now), oldest first."""
    n = len(next(iter(columns.values())))
    end = end or datetime.now(timezone.utc)
    step = timedelta(days=days) / max(n, 1)
    times = [(end - step * (n - i)).isoformat(timespec="seconds") for i in range(n)]
    return {**columns, column: times}


def to_csv(columns: dict[str, list]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    names = list(columns)
    writer.writerow(names)
    writer.writerows(zip(*(columns[n] for n in names)))
    return out.getvalue().encode()


def upload_csv(s3_client, columns: dict[str, list], uri: str) -> str:
    """Writes the columns as one CSV object at ``uri`` (a key ending in ``.csv``)."""
    from hybrid_mlops.layout import split_s3_uri

    bucket, key = split_s3_uri(uri)
    s3_client.put_object(Bucket=bucket, Key=key, Body=to_csv(columns))
    return uri


def _feature_type(values: list) -> str:
    """Feature Store's type of a column: CSV text is tried as an integer, then a number; else its Python type."""
    if all(isinstance(v, int) for v in values):
        return "Integral"
    if all(isinstance(v, (int, float)) for v in values):
        return "Fractional"
    for kind, cast in (("Integral", int), ("Fractional", float)):
        try:
            for v in values:
                cast(str(v))
            return kind
        except ValueError:
            continue
    return "String"


def ensure_feature_group(sagemaker, name: str, columns: dict[str, list], *, record_id: str, event_time: str,
                         offline_uri: str, role_arn: str) -> dict:
    """Create the feature group unless it exists; its ``describe_feature_group``."""
    definitions = [{"FeatureName": c, "FeatureType": "String" if c == event_time else _feature_type(v)}
                   for c, v in columns.items()]
    try:  # create-or-reuse by the create call (moto has no ListFeatureGroups, and answers a missing describe 500)
        sagemaker.create_feature_group(
            FeatureGroupName=name, RecordIdentifierFeatureName=record_id, EventTimeFeatureName=event_time,
            FeatureDefinitions=definitions, RoleArn=role_arn,
            OfflineStoreConfig={"S3StorageConfig": {"S3Uri": offline_uri}, "DisableGlueTableCreation": False},
        )
    except sagemaker.exceptions.ResourceInUse:
        return sagemaker.describe_feature_group(FeatureGroupName=name)
    log.info("Created feature group %s (offline store %s)", name, offline_uri)
    return sagemaker.describe_feature_group(FeatureGroupName=name)


def ingest(group: dict, columns: dict[str, list], *, s3_client=None, runtime_client=None) -> int:
    """Puts every row into the feature group: ``PutRecord`` (``aws``), or the offline-store files (``local``)."""
    names = list(columns)
    rows = list(zip(*(columns[n] for n in names)))
    if runtime_client is not None:
        for row in rows:
            runtime_client.put_record(FeatureGroupName=group["FeatureGroupName"],
                                      Record=[{"FeatureName": n, "ValueAsString": str(v)} for n, v in zip(names, row)])
        return len(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hybrid_mlops.layout import split_s3_uri

    types = {d["FeatureName"]: d["FeatureType"] for d in group["FeatureDefinitions"]}
    cast = {"Integral": int, "Fractional": float, "String": str}
    now = datetime.now(timezone.utc)
    table = {n: [cast[types.get(n, "String")](v) for v in columns[n]] for n in names}
    table |= {"write_time": [now] * len(rows), "api_invocation_time": [now] * len(rows),
              "is_deleted": [False] * len(rows)}
    buf = io.BytesIO()
    pq.write_table(pa.table(table), buf)
    base = group["OfflineStoreConfig"]["S3StorageConfig"]["ResolvedOutputS3Uri"].rstrip("/")
    bucket, prefix = split_s3_uri(f"{base}/year={now:%Y}/month={now:%m}/day={now:%d}/hour={now:%H}/")
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}{now:%Y%m%dT%H%M%SZ}_{uuid.uuid4().hex[:16]}.parquet",
                         Body=buf.getvalue())
    return len(rows)
