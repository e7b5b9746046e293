"""Cross-account promotion: hooks that act in another AWS account (``sts:AssumeRole``), the package
group's resource policy, and artifact copies verified by checksum and encrypted with that account's key."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cached_property
from typing import Any
from urllib.parse import quote

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.exceptions import ClientError

from hybrid_mlops.hooks.registry import ModelRegistryHook

#: What the prod account may read of the dev group: the group, its versions and their list.
GROUP_READ_ACTIONS = ("sagemaker:DescribeModelPackageGroup",)
VERSION_READ_ACTIONS = ("sagemaker:DescribeModelPackage", "sagemaker:ListModelPackages")
#: Where the local target keeps a group's resource policy (moto 5.2.5 has no Put/GetModelPackageGroupPolicy):
#: s3://<bucket>/<prefix><region>/<account>/<group>.json, the PutModelPackageGroupPolicy request as it would be sent.
POLICY_MIRROR_PREFIX = "local-registry-mirror/ModelPackageGroupPolicy/"
#: CopyObject copies objects of up to 5 GiB in one request.
COPY_OBJECT_MAX_BYTES = 5 * 1024**3
#: CopyObject's ChecksumAlgorithm values: a source checksum of one of these is compared without reading the object.
COPY_CHECKSUMS = ("CRC64NVME", "CRC32", "CRC32C", "SHA1", "SHA256")


class AssumeRoleMixin:
    """Makes an Amazon provider hook act as a role of another account.

    The role is set where the provider reads it from a connection's extra (``role_arn``,
    ``assume_role_method: assume_role``, ``assume_role_kwargs``), so the provider's session factory calls
    ``sts:AssumeRole`` with the connection's own credentials and endpoint, and refreshes the credentials
    before they expire. The connection stays the dev account's; the spec names the role.

    .. seealso::
        https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html

    :param role_arn: the role to assume.
    :param role_session_name: the session name CloudTrail records (2..64 of ``[\\w+=,.@-]``).
    :param external_id: the ``ExternalId`` the role's trust policy requires, if any.
    """

    def __init__(self, *args, role_arn: str, role_session_name: str, external_id: str | None = None, **kwargs):
        self.assume_role_arn = role_arn
        self.role_session_name = role_session_name[:64]
        self.external_id = external_id
        super().__init__(*args, **kwargs)

    @cached_property
    def conn_config(self):
        config = super().conn_config
        config.role_arn = self.assume_role_arn
        config.assume_role_method = "assume_role"
        config.assume_role_kwargs = {"RoleSessionName": self.role_session_name,
                                     **({"ExternalId": self.external_id} if self.external_id else {})}
        return config


class CrossAccountRegistryHook(AssumeRoleMixin, ModelRegistryHook):
    """The Model Registry of another account, as the assumed role (see :class:`AssumeRoleMixin`)."""

    def find_in_group(self, group: str, key: str, value: str) -> dict | None:
        """:meth:`find_package`, and None when the group does not exist yet."""
        try:
            return self.find_package(group, key, value)
        except ClientError as err:
            if err.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                return None
            raise


class PromotionRegistryHook(ModelRegistryHook):
    """The dev registry's side of a promotion: the package group's resource policy.

    .. seealso::
        https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_PutModelPackageGroupPolicy.html
        https://docs.aws.amazon.com/sagemaker/latest/dg/model-registry-ram.html

    On ``aws`` the policy is read and written with ``GetModelPackageGroupPolicy`` /
    ``PutModelPackageGroupPolicy``. moto 5.2.5 has neither (it answers 500), so on the local target,
    like ModelLifeCycle (see :class:`ModelRegistryHook`), the request is built the same way and kept in
    the artifacts bucket instead of being sent: ``s3://<bucket>/local-registry-mirror/
    ModelPackageGroupPolicy/<region>/<account>/<group>.json`` holds ``{"ModelPackageGroupName": ...,
    "ResourcePolicy": "<the JSON document>"}``.
    """

    def group_arn(self, group: str) -> str:
        return self.conn.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupArn"]

    def _policy_mirror_location(self, group_arn: str) -> tuple[str, str]:
        from hybrid_mlops import settings

        _, _, _, region, account, resource = group_arn.split(":", 5)
        return settings.bucket(), f"{POLICY_MIRROR_PREFIX}{region}/{account}/{resource.split('/', 1)[1]}.json"

    def group_policy(self, group: str) -> dict | None:
        """The group's resource policy document, or None when it has none."""
        if self._mirrors_lifecycle():
            bucket, key = self._policy_mirror_location(self.group_arn(group))
            try:
                body = self._mirror_s3().get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as err:
                if err.response["Error"]["Code"] in ("NoSuchKey", "404"):
                    return None
                raise
            return json.loads(json.loads(body)["ResourcePolicy"])
        try:
            return json.loads(self.conn.get_model_package_group_policy(ModelPackageGroupName=group)["ResourcePolicy"])
        except ClientError as err:
            if err.response["Error"]["Code"] in ("ResourceNotFound", "ValidationException"):
                return None
            raise

    def put_group_policy(self, group: str, policy: dict) -> dict:
        """Set the group's resource policy; returns the request (what the local target keeps)."""
        request = {"ModelPackageGroupName": group, "ResourcePolicy": json.dumps(policy, sort_keys=True)}
        if self._mirrors_lifecycle():
            bucket, key = self._policy_mirror_location(self.group_arn(group))
            self._mirror_s3().put_object(Bucket=bucket, Key=key, Body=json.dumps(request).encode(),
                                         ContentType="application/json")
        else:
            self.conn.put_model_package_group_policy(**request)
        return request


def cross_account_read_statements(group_arn: str, account_id: str) -> list[dict]:
    """Statements letting ``account_id`` read the group and its versions (the AWS guide's shape:
    the group ARN for the group action, ``model-package/<group>/*`` for the version actions)."""
    partition, region, owner = group_arn.split(":")[1], group_arn.split(":")[3], group_arn.split(":")[4]
    group = group_arn.split("/", 1)[1]
    principal = {"AWS": f"arn:{partition}:iam::{account_id}:root"}
    return [
        {"Sid": f"ReadModelPackageGroup{account_id}", "Effect": "Allow", "Principal": principal,
         "Action": list(GROUP_READ_ACTIONS), "Resource": group_arn},
        {"Sid": f"ReadModelPackages{account_id}", "Effect": "Allow", "Principal": principal,
         "Action": list(VERSION_READ_ACTIONS),
         "Resource": f"arn:{partition}:sagemaker:{region}:{owner}:model-package/{group}/*"},
    ]


def merge_statements(policy: dict | None, statements: list[dict]) -> dict:
    """``policy`` with ``statements`` added, replacing those of the same ``Sid``; the others are kept."""
    sids = {s["Sid"] for s in statements}
    kept = [s for s in (policy or {}).get("Statement", []) if s.get("Sid") not in sids]
    return {"Version": "2012-10-17", "Statement": kept + statements}


class CopyFailed(RuntimeError):
    """A copy was refused (access, bucket, key) or its checksum differs from its source's."""


class ChecksumMismatch(CopyFailed):
    """A copy's checksum differs from its source's."""


class ArtifactCopyHook(AssumeRoleMixin, S3Hook):
    """Copies objects into another account's bucket as its role, SSE-KMS with its key, verified.

    .. seealso::
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html
        https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html

    The role reads the source through the source bucket's policy (``s3:GetObject`` on the models) and
    the source key's policy when it is SSE-KMS (``kms:Decrypt``).
    """

    def _head(self, bucket: str, key: str, owner: str | None) -> dict | None:
        try:
            return self.conn.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED",
                                         **({"ExpectedBucketOwner": owner} if owner else {}))
        except ClientError as err:
            if err.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _sha256(self, bucket: str, key: str, owner: str | None) -> str:
        digest = hashlib.sha256()
        body = self.conn.get_object(Bucket=bucket, Key=key, **({"ExpectedBucketOwner": owner} if owner else {}))["Body"]
        for chunk in body.iter_chunks(8 * 1024 * 1024):
            digest.update(chunk)
        return base64.b64encode(digest.digest()).decode()

    def copy_verified(self, source: str, target: str, kms_key_arn: str, *, source_owner: str | None = None,
                      target_owner: str | None = None) -> dict:
        """Copy ``source`` to ``target`` (S3 URIs) with ``ServerSideEncryption=aws:kms`` and ``kms_key_arn``.

        The source's full-object checksum (when it has one of CopyObject's algorithms) is what the copy
        must have; otherwise the source is read once and its SHA-256 is. S3 computes the copy's checksum
        with that algorithm (``ChecksumAlgorithm``), and ``CopySourceIfMatch`` pins the source version
        that was checked. A target already holding the same bytes (same checksum and size) under the
        same key is reused: a retry copies nothing twice.
        """
        try:
            return self._copy_verified(source, target, kms_key_arn, source_owner, target_owner)
        except ClientError as err:
            error = err.response["Error"]
            raise CopyFailed(f"copy {source} -> {target} failed: {error.get('Code')}: {error.get('Message')}") from None

    def _copy_verified(self, source, target, kms_key_arn, source_owner, target_owner) -> dict:
        src_bucket, src_key = self.parse_s3_url(source)
        dst_bucket, dst_key = self.parse_s3_url(target)
        head = self._head(src_bucket, src_key, source_owner)
        if head is None:
            raise CopyFailed(f"{source} does not exist")
        size = head["ContentLength"]
        if size > COPY_OBJECT_MAX_BYTES:
            raise CopyFailed(f"{source} has {size} bytes; CopyObject copies up to {COPY_OBJECT_MAX_BYTES} "
                             "(a larger artifact needs a multipart copy)")
        algorithm, expected = _full_object_checksum(head)
        if algorithm is None:
            algorithm, expected = "SHA256", self._sha256(src_bucket, src_key, source_owner)
        existing = self._head(dst_bucket, dst_key, target_owner)
        if existing and existing["ContentLength"] == size and existing.get(f"Checksum{algorithm}") == expected \
                and _encrypted_with(existing, kms_key_arn):
            self.log.info("%s already holds %s (%s %s): kept", target, source, algorithm, expected)
            return {"source": source, "target": target, "bytes": size, "checksum": f"{algorithm}:{expected}",
                    "copied": False}
        # CopySource as the API takes it (boto3's dict form is a client-side convenience): bucket/key, URL-encoded
        copy_source = quote(f"{src_bucket}/{src_key}", safe="/-._~")
        if head.get("VersionId") and head["VersionId"] != "null":
            copy_source += f"?versionId={quote(head['VersionId'], safe='')}"
        request: dict[str, Any] = {
            "Bucket": dst_bucket, "Key": dst_key, "CopySource": copy_source, "CopySourceIfMatch": head["ETag"],
            "MetadataDirective": "COPY", "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_arn,
            "ChecksumAlgorithm": algorithm,
        }
        if source_owner:
            request["ExpectedSourceBucketOwner"] = source_owner
        if target_owner:
            request["ExpectedBucketOwner"] = target_owner
        response = self.conn.copy_object(**request)
        got = response.get("CopyObjectResult", {}).get(f"Checksum{algorithm}")
        if got != expected:
            raise ChecksumMismatch(f"{target}: {algorithm} {got} after the copy, the source {source} has {expected}")
        after = self._head(dst_bucket, dst_key, target_owner) or {}
        if after.get("ContentLength") != size or not _encrypted_with(after, kms_key_arn):
            raise ChecksumMismatch(
                f"{target}: {after.get('ContentLength')} bytes, {after.get('ServerSideEncryption')} "
                f"{after.get('SSEKMSKeyId')}; expected {size} bytes, aws:kms {kms_key_arn}")
        self.log.info("Copied %s -> %s (%d bytes, %s %s, SSE-KMS %s)", source, target, size, algorithm, expected,
                      kms_key_arn)
        return {"source": source, "target": target, "bytes": size, "checksum": f"{algorithm}:{expected}", "copied": True}


def _full_object_checksum(head: dict) -> tuple[str | None, str | None]:
    """The (algorithm, value) of a full-object checksum S3 returned, else (None, None): a composite
    checksum of a multipart upload (``<value>-<parts>``) is not the object's and is not compared."""
    if head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None, None
    for algorithm in COPY_CHECKSUMS:
        value = head.get(f"Checksum{algorithm}")
        if value and "-" not in value:
            return algorithm, value
    return None, None


def _encrypted_with(head: dict, kms_key_arn: str) -> bool:
    """SSE-KMS with that key (S3 reports the key ARN: an alias ARN is only checked for SSE-KMS)."""
    if head.get("ServerSideEncryption") != "aws:kms":
        return False
    return ":alias/" in kms_key_arn or head.get("SSEKMSKeyId") == kms_key_arn
