"""Backup and restore I/O: the versioned backup bucket, checked server-side copies, the registry's export
and re-registration, and clients in a restore target (another region, or another account's role)."""

from __future__ import annotations

import base64
import json
from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.exceptions import ClientError

from hybrid_mlops.hooks.registry import ModelRegistryHook, _jsonable

#: CopyObject copies at most 5 GiB in one request (larger objects need a multipart copy).
COPY_OBJECT_MAX_BYTES = 5 * 1024**3
_MISSING = ("404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchVersion")


def sha256_hex(checksum_b64: str) -> str:
    """S3's ``ChecksumSHA256`` (base64 of the digest) as the usual hex digest."""
    return base64.b64decode(checksum_b64).hex()


def assumed_session(aws_conn_id: str | None, role_arn: str, region: str, session_name: str):
    """A boto3 session as ``role_arn`` (``sts:AssumeRole`` with the connection's credentials).

    .. seealso:: https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
    """
    import boto3

    base = S3Hook(aws_conn_id=aws_conn_id, region_name=region)
    sts = base.get_session(region_name=region).client(
        "sts", endpoint_url=base.conn_config.get_service_endpoint_url("sts"), config=base.config, verify=base.verify)
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
    return boto3.session.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                                 aws_session_token=creds["SessionToken"], region_name=region)


class _SessionClient:
    """Lets a provider hook use the clients of a given boto3 session (an assumed role) instead of its connection's."""

    session = None

    def _session_client(self, service: str):
        return self.session.client(service, region_name=self.region_name,
                                   endpoint_url=self.conn_config.get_service_endpoint_url(service),
                                   config=self.config, verify=self.verify)


class BackupStoreHook(_SessionClient, S3Hook):
    """S3 for backups: a versioned bucket in its own region, JSON documents and server-side copies that
    S3 checksums with SHA-256 (``ChecksumAlgorithm=SHA256``; the manifest keeps them in hex).

    .. seealso::
        https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html

    :param session: a boto3 session to use instead of the connection's (a restore as another account's role).
    """

    hook_name = "Hybrid MLOps backup store"

    def __init__(self, *args, session=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.session = session

    @cached_property
    def conn(self):
        return self._session_client("s3") if self.session else super().conn

    # -- buckets -----------------------------------------------------------------------------------

    def bucket_region(self, bucket: str) -> str | None:
        """The bucket's region, or None when there is no such bucket."""
        try:
            location = self.conn.get_bucket_location(Bucket=bucket).get("LocationConstraint")
        except ClientError as err:
            if err.response["Error"]["Code"] in _MISSING:
                return None
            raise
        return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)

    def create_bucket_in(self, bucket: str, region: str, *, versioned: bool = False, tags: dict | None = None) -> None:
        """Create ``bucket`` in ``region`` (us-east-1 takes no LocationConstraint), versioned and tagged if asked."""
        request: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self.log.info("Creating bucket %s in %s%s", bucket, region, " (versioned)" if versioned else "")
        self.conn.create_bucket(**request)
        if versioned:
            self.conn.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        if tags:
            tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
            self.conn.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_set})

    def ensure_versioned_bucket(self, bucket: str, region: str) -> str:
        """The backup bucket, created in ``region`` with versioning on when missing; an existing bucket must
        be in ``region`` and versioned (else a :class:`ValueError` says what to do). Returns what was done."""
        found = self.bucket_region(bucket)
        if found is None:
            self.create_bucket_in(bucket, region, versioned=True)
            return "created"
        if found != region:
            raise ValueError(f"backup bucket {bucket} is in {found}, not in HYBRID_MLOPS_BACKUP_REGION={region}; "
                             "set the bucket's region or choose another bucket")
        status = self.conn.get_bucket_versioning(Bucket=bucket).get("Status")
        if status != "Enabled":
            raise ValueError(
                f"backup bucket {bucket} is not versioned (versioning {status or 'never enabled'}): an overwritten or "
                "deleted backup could not be recovered. Enable it (aws s3api put-bucket-versioning --bucket "
                f"{bucket} --versioning-configuration Status=Enabled) or choose another bucket")
        return "verified"

    def bucket_tags(self, bucket: str) -> dict[str, str]:
        try:
            tag_set = self.conn.get_bucket_tagging(Bucket=bucket)["TagSet"]
        except ClientError as err:
            if err.response["Error"]["Code"] in ("NoSuchTagSet", *_MISSING):
                return {}
            raise
        return {t["Key"]: t["Value"] for t in tag_set}

    def first_keys(self, bucket: str, limit: int = 5) -> list[str]:
        """Up to ``limit`` keys of the bucket ([] when it is empty or missing)."""
        try:
            page = self.conn.list_objects_v2(Bucket=bucket, MaxKeys=limit)
        except ClientError as err:
            if err.response["Error"]["Code"] in _MISSING:
                return []
            raise
        return [o["Key"] for o in page.get("Contents", [])]

    # -- objects -----------------------------------------------------------------------------------

    def head(self, bucket: str, key: str, version_id: str | None = None) -> dict | None:
        """HeadObject (of that version) with its checksum (``ChecksumMode=ENABLED``); None when there is none."""
        request = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            request["VersionId"] = version_id
        try:
            return self.conn.head_object(**request)
        except ClientError as err:
            if err.response["Error"]["Code"] in _MISSING:
                return None
            raise

    def put_json(self, bucket: str, key: str, document: Any) -> dict:
        """Write ``document`` as JSON with a SHA-256 checksum; returns ``{key, size, sha256, version_id}``."""
        body = json.dumps(document, indent=1, sort_keys=True, default=str).encode()
        answer = self.conn.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                                      ChecksumAlgorithm="SHA256")
        return {"key": key, "size": len(body), "sha256": sha256_hex(answer["ChecksumSHA256"]),
                "version_id": answer.get("VersionId")}

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.conn.get_object(Bucket=bucket, Key=key)["Body"].read()

    def delete(self, bucket: str, key: str) -> None:
        self.conn.delete_object(Bucket=bucket, Key=key)

    def get_json(self, bucket: str, key: str, sha256: str | None = None) -> Any:
        """Read a JSON document; with ``sha256``, fail naming the key when its bytes do not match it."""
        import hashlib

        body = self.get_bytes(bucket, key)
        if sha256 is not None and hashlib.sha256(body).hexdigest() != sha256:
            raise ValueError(f"s3://{bucket}/{key} has SHA-256 {hashlib.sha256(body).hexdigest()}, the manifest "
                             f"recorded {sha256}: the backup is corrupt")
        return json.loads(body)

    def copy_with_checksum(self, source: dict, bucket: str, key: str, *, content_type: str | None = None,
                           metadata: dict[str, str] | None = None, if_match: str | None = None) -> dict:
        """Server-side copy of ``source`` (``{"Bucket", "Key"[, "VersionId"]}``) to ``bucket/key``; S3 computes
        the copy's SHA-256 from the bytes it wrote. Returns ``{sha256, version_id}``.

        :param if_match: the source's ETag: the copy fails if the object changed since it was listed.
        """
        from urllib.parse import quote

        # The x-amz-copy-source header's form (what boto3 makes of a dict): bucket/url-encoded key[?versionId=].
        copy_source = f"{source['Bucket']}/{quote(source['Key'], safe='/~')}"
        if source.get("VersionId"):
            copy_source += f"?versionId={quote(source['VersionId'])}"
        request: dict[str, Any] = {"Bucket": bucket, "Key": key, "CopySource": copy_source, "ChecksumAlgorithm": "SHA256",
                                   "MetadataDirective": "REPLACE", "Metadata": metadata or {}}
        if content_type:
            request["ContentType"] = content_type
        if if_match:
            request["CopySourceIfMatch"] = if_match
        answer = self.conn.copy_object(**request)
        return {"sha256": sha256_hex(answer["CopyObjectResult"]["ChecksumSHA256"]), "version_id": answer.get("VersionId")}

    def list_keys_under(self, bucket: str, prefix: str) -> list[dict]:
        """``[{Key, Size, ETag}]`` of every object under ``prefix``."""
        found, kwargs = [], {"Bucket": bucket, "Prefix": prefix}
        while True:
            page = self.conn.list_objects_v2(**kwargs)
            found += [{"Key": o["Key"], "Size": o["Size"], "ETag": o["ETag"]} for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return found
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def folders(self, bucket: str, prefix: str) -> list[str]:
        """The names of the "folders" right under ``prefix`` (ListObjectsV2 with a delimiter)."""
        names, kwargs = [], {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
        while True:
            page = self.conn.list_objects_v2(**kwargs)
            names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                return names
            kwargs["ContinuationToken"] = page["NextContinuationToken"]


class RegistryBackupHook(_SessionClient, ModelRegistryHook):
    """The Model Registry's export (a group, its tags, every version described) and re-registration.

    .. seealso::
        https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeModelPackage.html
        https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackage.html

    :param session: a boto3 session to use instead of the connection's (a restore as another account's role).
    :param mirror_bucket: where the local target keeps ModelLifeCycle (moto drops it, see
        :class:`ModelRegistryHook`): a restore keeps it in the restored artifacts bucket, the deployment's
        bucket from then on. Default: ``HYBRID_MLOPS_BUCKET``.
    """

    hook_name = "Hybrid MLOps registry backup"

    def __init__(self, *args, session=None, mirror_bucket: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.session = session
        self.mirror_bucket = mirror_bucket

    @cached_property
    def conn(self):
        return self._session_client("sagemaker") if self.session else super().conn

    def _mirror_s3(self):
        return BackupStoreHook(aws_conn_id=self.aws_conn_id, region_name=self.conn_region_name, session=self.session).conn

    def lifecycle_mirror_location(self, arn: str) -> tuple[str, str]:
        bucket, key = ModelRegistryHook.lifecycle_mirror_location(arn)
        return self.mirror_bucket or bucket, key

    # -- export ------------------------------------------------------------------------------------

    def export_group(self, group: str) -> dict | None:
        """``{"group", "description", "tags", "versions"}`` (versions oldest first, each as
        DescribeModelPackage returns it, ModelLifeCycle included); None when the group does not exist."""
        described = self.describe_group(group)
        if described is None:
            return None
        return {"group": group, "arn": described["ModelPackageGroupArn"],
                "description": described.get("ModelPackageGroupDescription", ""),
                "tags": self.tags(described["ModelPackageGroupArn"]), "versions": self._described_versions(group)}

    def describe_group(self, group: str) -> dict | None:
        try:
            return _jsonable(self.conn.describe_model_package_group(ModelPackageGroupName=group))
        except ClientError as err:
            if err.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                return None
            raise

    def tags(self, arn: str) -> dict[str, str]:
        tags, kwargs = {}, {"ResourceArn": arn, "MaxResults": 100}
        while True:
            page = self.conn.list_tags(**kwargs)
            tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
            if not page.get("NextToken"):
                return tags
            kwargs["NextToken"] = page["NextToken"]

    def has_versions(self, group: str) -> bool:
        """Whether the group exists and holds at least one version."""
        return self.describe_group(group) is not None and next(self._summaries(group, limit=1), None) is not None

    def versions(self, group: str) -> list[dict]:
        """Every version of the group, described (oldest first); [] when the group does not exist."""
        return [] if self.describe_group(group) is None else self._described_versions(group)

    def _described_versions(self, group: str) -> list[dict]:
        found = [self.describe_package(s["ModelPackageArn"]) for s in self._summaries(group, limit=100_000)]
        return sorted(found, key=lambda v: v["ModelPackageVersion"])

    # -- re-registration ---------------------------------------------------------------------------

    def create_request(self, described: dict) -> dict:
        """The CreateModelPackage request that re-creates a described version: every member the request
        takes (botocore's model of this client), except the name (versioned packages have none)."""
        members = self.conn.meta.service_model.operation_model("CreateModelPackage").input_shape.members
        return {k: v for k, v in described.items()
                if k in members and k not in ("ModelPackageName", "ClientToken") and v not in (None, "", [], {})}
