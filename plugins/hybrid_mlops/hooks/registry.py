"""SageMaker Model Registry: package groups, versions, approval and metadata."""

from __future__ import annotations

import unicodedata
from typing import Any

from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from botocore.exceptions import ClientError

APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")

# CustomerMetadataProperties (botocore's sagemaker model): at most 50 entries; keys 1..128 and values
# 1..256 characters of [\p{L}\p{Z}\p{N}_.:/=+\-@]. A comma, a parenthesis or an apostrophe is rejected.
METADATA_MAX_ENTRIES = 50
METADATA_KEY_MAX = 128
METADATA_VALUE_MAX = 256
#: Joins list values (regions, feature names): a space is within the pattern, a comma is not.
LIST_SEPARATOR = " "


def metadata_text(value: Any) -> str:
    """``value`` as text within the metadata pattern: characters outside it become ``-``."""
    text = LIST_SEPARATOR.join(map(str, value)) if isinstance(value, (list, tuple, set, frozenset)) else str(value)
    # A comma in a value is a list (regions, features): it becomes the list separator, not a dash.
    return "".join(c if _metadata_char(c) else LIST_SEPARATOR if c == "," else "-" for c in text)


def _metadata_char(c: str) -> bool:
    # \p{L} and \p{N} are exactly str.isalnum()'s categories; \p{Z} are the separators (not \n or \t).
    return c.isalnum() or c in "_.:/=+-@" or unicodedata.category(c).startswith("Z")


def metadata_list(values) -> str:
    """A list of names (regions, features) as one metadata value."""
    return metadata_text(sorted({str(v) for v in values if str(v)}))


def split_metadata_list(value: str | None) -> list[str]:
    """The names of a :func:`metadata_list` value (comma-joined values written before are read too)."""
    return [v for v in (value or "").replace(",", LIST_SEPARATOR).split() if v]


def encode_metadata(properties: dict[str, Any]) -> dict[str, str]:
    """``CustomerMetadataProperties`` AWS accepts: keys and values within the pattern, lists joined
    with :data:`LIST_SEPARATOR`, empty values left out (the minimum length is 1).

    Never truncates: a value longer than 256 characters (a URI, say) is an error naming the key.
    """
    encoded: dict[str, str] = {}
    for key, value in properties.items():
        k = metadata_text(key)
        if not 1 <= len(k) <= METADATA_KEY_MAX:
            raise ValueError(f"CustomerMetadataProperties key {key!r} must have 1..{METADATA_KEY_MAX} characters")
        if value is None:
            continue
        v = metadata_text(value)
        if not v:
            continue
        if len(v) > METADATA_VALUE_MAX:
            raise ValueError(
                f"CustomerMetadataProperties[{key!r}] has {len(v)} characters, SageMaker allows {METADATA_VALUE_MAX}: "
                f"{v[:80]}...; shorten it (e.g. record a shorter URI) rather than lose its end"
            )
        encoded[k] = v
    if len(encoded) > METADATA_MAX_ENTRIES:
        raise ValueError(f"CustomerMetadataProperties has {len(encoded)} entries, SageMaker allows {METADATA_MAX_ENTRIES}")
    return encoded


class ModelRegistryHook(SageMakerHook):
    """Model package groups and versions, idempotent by the metadata a run stamps on them.

    .. seealso::
        https://docs.aws.amazon.com/sagemaker/latest/dg/model-registry.html

    Returns plain JSON-safe dicts (datetimes as ISO strings).
    """

    hook_name = "Hybrid MLOps Model Registry"

    def ensure_group(self, group: str, description: str, tags: dict[str, str]) -> str:
        """The group's ARN, creating the group (tagged) when it does not exist yet."""
        try:
            return self.conn.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupArn"]
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
                raise
        self.log.info("Creating model package group %s (tags %s)", group, tags)
        arn = self.conn.create_model_package_group(
            ModelPackageGroupName=group,
            ModelPackageGroupDescription=description[:1024],
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )["ModelPackageGroupArn"]
        return arn

    def _summaries(self, group: str, status: str | None = None, limit: int = 100):
        kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "SortBy": "CreationTime",
                                  "SortOrder": "Descending", "MaxResults": min(limit, 100)}
        if status:
            kwargs["ModelApprovalStatus"] = status
        seen = 0
        while True:
            page = self.conn.list_model_packages(**kwargs)
            for summary in page.get("ModelPackageSummaryList", []):
                yield summary
                seen += 1
                if seen >= limit:
                    return
            if not page.get("NextToken"):
                return
            kwargs["NextToken"] = page["NextToken"]

    def describe_package(self, arn: str) -> dict:
        return _jsonable(self.conn.describe_model_package(ModelPackageName=arn))

    def find_package(self, group: str, key: str, value: str, scan: int = 50) -> dict | None:
        """The newest package whose CustomerMetadataProperties[key] == value (among the ``scan`` newest)."""
        for summary in self._summaries(group, limit=scan):
            described = self.describe_package(summary["ModelPackageArn"])
            if (described.get("CustomerMetadataProperties") or {}).get(key) == value:
                return described
        return None

    def latest_package(self, group: str, status: str | None = "Approved") -> dict | None:
        """The newest package of the group with that approval status (any status when None)."""
        for summary in self._summaries(group, status=status, limit=1):
            return self.describe_package(summary["ModelPackageArn"])
        return None

    def package_by_version(self, group: str, version: int) -> dict | None:
        for summary in self._summaries(group, limit=1000):
            if summary.get("ModelPackageVersion") == version:
                return self.describe_package(summary["ModelPackageArn"])
        return None

    def create_package(self, request: dict) -> str:
        """``CreateModelPackage``; its ``CustomerMetadataProperties`` are encoded within AWS's pattern."""
        if "CustomerMetadataProperties" in request:
            request = {**request, "CustomerMetadataProperties": encode_metadata(request["CustomerMetadataProperties"])}
        return self.conn.create_model_package(**request)["ModelPackageArn"]

    def update_package(
        self,
        arn: str,
        *,
        status: str | None = None,
        reason: str | None = None,
        properties: dict[str, str] | None = None,
    ) -> dict:
        """Set the approval status and/or merge metadata properties; returns the described package.

        CustomerMetadataProperties, the status and its description are always re-sent whole (merged
        with what is there): a partial update must never drop lineage or a decision recorded earlier.
        """
        if status is not None and status not in APPROVAL_STATUSES:
            raise ValueError(f"status={status!r} must be one of {APPROVAL_STATUSES}")
        current = self.describe_package(arn)
        merged = encode_metadata({**(current.get("CustomerMetadataProperties") or {}), **(properties or {})})
        request: dict[str, Any] = {
            "ModelPackageArn": arn,
            "CustomerMetadataProperties": merged,
            "ModelApprovalStatus": status or current["ModelApprovalStatus"],
        }
        description = reason if status is not None else current.get("ApprovalDescription")
        if description:
            request["ApprovalDescription"] = description[:1024]
        self.conn.update_model_package(**request)
        return self.describe_package(arn)

    def update_metadata(self, package_arn: str, properties: dict[str, str]) -> dict:
        """Merge ``properties`` into the package's CustomerMetadataProperties."""
        return self.update_package(package_arn, properties=properties)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
