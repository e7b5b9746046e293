"""SageMaker Model Registry: package groups, versions, approval and metadata."""

from __future__ import annotations

import json
import re
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

# ModelLifeCycle (botocore's sagemaker model, CreateModelPackage / UpdateModelPackage / DescribeModelPackage
# and ModelPackageSummary): Stage and StageStatus required, 1..63 characters of [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62};
# StageDescription optional, 0..1024 characters of .{0,1024} (one line: '.' matches no line break).
STAGE_DEV = "dev"  #: a new version, at registration (and a rejected one stays there)
STAGE_STAGING = "staging"  #: approved, not served yet (approval.stage_on_approval: staging, the default)
STAGE_PROD = "prod"  #: approved to prod, and any version the deploy records as served
STAGE_ARCHIVED = "archived"  #: replaced in prod by another version in every region it served
LIFECYCLE_STAGES = (STAGE_DEV, STAGE_STAGING, STAGE_PROD, STAGE_ARCHIVED)
#: The stages an approval (the rules or a person) may move a version to.
APPROVAL_STAGES = (STAGE_STAGING, STAGE_PROD)
STAGE_DESCRIPTION_MAX = 1024
_ENTITY_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
#: The metadata property where the approval gate leaves the stage a person's approval moves a version to.
STAGE_ON_APPROVAL_KEY = "stage_on_approval"
#: Where the local target keeps ModelLifeCycle (moto drops the field): s3://<bucket>/<prefix><region>/<account>/<group>/<version>.json
LIFECYCLE_MIRROR_PREFIX = "local-registry-mirror/ModelLifeCycle/"
#: What the registry index keeps of each version (DescribeModelPackage's names).
INDEX_FIELDS = ("ModelPackageArn", "ModelPackageVersion", "CreationTime", "ModelApprovalStatus",
                "ApprovalDescription", "ModelLifeCycle", "CustomerMetadataProperties")
#: Read-modify-write attempts of the index when another writer changed it in between.
INDEX_WRITE_ATTEMPTS = 5


def model_life_cycle(stage: str, status: str, description: str = "") -> dict[str, str]:
    """A ``ModelLifeCycle`` block AWS accepts: ``Stage`` and ``StageStatus`` checked against the
    model's pattern (an error names the field), the description made one line and cut to 1024 characters."""
    block: dict[str, str] = {}
    for field, value in (("Stage", stage), ("StageStatus", status)):
        if not isinstance(value, str) or not _ENTITY_NAME.fullmatch(value):
            raise ValueError(f"ModelLifeCycle.{field}={value!r} must be 1..63 characters of "
                             "letters, digits and inner hyphens ([a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})")
        block[field] = value
    text = " ".join(str(description or "").split())
    if text:
        block["StageDescription"] = text[:STAGE_DESCRIPTION_MAX]
    return block


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
        https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ModelLifeCycle.html

    Returns plain JSON-safe dicts (datetimes as ISO strings).

    **Lifecycle stages** live in the registry's own field, ``ModelLifeCycle`` (``Stage``,
    ``StageStatus``, ``StageDescription``), sent as AWS takes it in ``CreateModelPackage`` and
    ``UpdateModelPackage`` (:func:`model_life_cycle` builds it): ``dev`` at registration, ``staging`` or
    ``prod`` on approval, ``prod`` when a deploy records the version as served, ``archived`` when another
    version replaced it in prod. On ``aws`` SageMaker keeps the field and returns it from
    ``DescribeModelPackage`` and ``ListModelPackages``; nothing else is involved.

    **The local target's mirror.** moto accepts ``ModelLifeCycle`` in the requests but keeps nothing
    of it. When the target is ``local`` (``mirror_lifecycle`` None and ``HYBRID_MLOPS_TARGET=local``, or
    ``mirror_lifecycle`` True) the hook still sends the field, and after each successful create or update
    that carries it also writes the block, unchanged, to the artifacts bucket on the same moto server::

        s3://<HYBRID_MLOPS_BUCKET>/local-registry-mirror/ModelLifeCycle/<region>/<account>/<group>/<version>.json
        {"ModelPackageArn": "...", "ModelLifeCycle": {"Stage": "...", "StageStatus": "...", "StageDescription": "..."}}

    **The registry index.** After each create or update, the hook also records the version, as
    DescribeModelPackage then returns it (:data:`INDEX_FIELDS`), in one JSON document per package group
    (:func:`hybrid_mlops.layout.registry_index_key`, in the bucket the mirror uses, on both targets),
    so a reader gets every version's status, stage and metadata in one GET, and describes only the
    versions ListModelPackages shows differently (changed outside the project) or the index lacks. Writers
    of one group do not lose each other's entries: the write is conditional on the ETag read (S3's
    ``If-Match`` / ``If-None-Match``), and read again on a conflict.

    :meth:`describe_package` puts it back where DescribeModelPackage has it (``ModelLifeCycle``,
    only when the server returned none), and :meth:`packages_in_stage` reads it where
    ListModelPackages' summaries lack it, so callers see the real API's shape on both targets. The
    mirror lives and is reset with the moto server's other state (a reset server forgets both), and
    nothing writes or reads it on ``aws``.
    """

    hook_name = "Hybrid MLOps Model Registry"
    #: Keep ModelLifeCycle in the local mirror: None = when the target is ``local``.
    mirror_lifecycle: bool | None = None

    # -- the local mirror of ModelLifeCycle ------------------------------------------------------

    def _mirrors_lifecycle(self) -> bool:
        if self.mirror_lifecycle is not None:
            return bool(self.mirror_lifecycle)
        from hybrid_mlops import settings

        return settings.is_local()

    def _mirror_s3(self):
        """The mirror's S3 client, built once per hook (building a client costs far more than a request)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        if "_mirror_client" not in self.__dict__:
            self.__dict__["_mirror_client"] = S3Hook(aws_conn_id=self.aws_conn_id,
                                                     region_name=self.conn_region_name).conn
        return self.__dict__["_mirror_client"]

    @staticmethod
    def lifecycle_mirror_location(arn: str) -> tuple[str, str]:
        """``(bucket, key)`` of a package's mirrored ModelLifeCycle on the local target."""
        from hybrid_mlops import settings

        parts = arn.split(":", 5)  # arn:<partition>:sagemaker:<region>:<account>:model-package/<group>/<version>
        if len(parts) != 6 or not parts[5].startswith("model-package/"):
            raise ValueError(f"{arn!r} is not a model package ARN")
        return settings.bucket(), f"{LIFECYCLE_MIRROR_PREFIX}{parts[3]}/{parts[4]}/{parts[5].removeprefix('model-package/')}.json"

    def _mirror_write(self, arn: str, lifecycle: dict) -> None:
        bucket, key = self.lifecycle_mirror_location(arn)
        body = json.dumps({"ModelPackageArn": arn, "ModelLifeCycle": lifecycle}, sort_keys=True)
        self._mirror_s3().put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/json")

    def _mirror_read(self, arn: str) -> dict | None:
        bucket, key = self.lifecycle_mirror_location(arn)
        try:
            body = self._mirror_s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as err:
            if err.response["Error"]["Code"] in ("NoSuchKey", "NoSuchBucket", "404"):
                return None
            raise
        return json.loads(body).get("ModelLifeCycle") or None

    # -- the registry index -----------------------------------------------------------------------

    def registry_index_location(self, arn: str) -> tuple[str, str]:
        """``(bucket, key)`` of the index of a package's group (the bucket the mirror uses)."""
        from hybrid_mlops import layout

        bucket, _ = self.lifecycle_mirror_location(arn)  # checks the ARN
        _, _, _, region, account, resource = arn.split(":", 5)
        return bucket, layout.registry_index_key(region, account, resource.split("/")[1])

    def registry_index(self, any_version_arn: str) -> dict[str, dict]:
        """``{version (text): entry}`` of the group's index (empty when there is none yet)."""
        bucket, key = self.registry_index_location(any_version_arn)
        try:
            body = self._mirror_s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as err:
            if err.response["Error"]["Code"] in ("NoSuchKey", "NoSuchBucket", "404"):
                return {}
            raise
        return json.loads(body).get("versions") or {}

    def _index_write(self, described: dict) -> None:
        """Record the described version in its group's index (read, merge, conditional write)."""
        arn = described["ModelPackageArn"]
        bucket, key = self.registry_index_location(arn)
        entry = {k: described[k] for k in INDEX_FIELDS if described.get(k) is not None}
        s3 = self._mirror_s3()
        for _attempt in range(INDEX_WRITE_ATTEMPTS):
            try:
                current = s3.get_object(Bucket=bucket, Key=key)
                doc, condition = json.loads(current["Body"].read()), {"IfMatch": current["ETag"]}
            except ClientError as err:
                if err.response["Error"]["Code"] not in ("NoSuchKey", "404"):
                    raise
                doc, condition = {"ModelPackageGroupName": key.rsplit("/", 1)[1].removesuffix(".json"),
                                  "versions": {}}, {"IfNoneMatch": "*"}
            doc["versions"][str(described["ModelPackageVersion"])] = entry
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, sort_keys=True).encode(),
                              ContentType="application/json", **condition)
                return
            except ClientError as err:
                # 412: changed since read; 409: a concurrent conditional write; NoSuchKey: deleted since read
                if err.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                    raise
                self.log.info("Registry index s3://%s/%s changed meanwhile; merging again", bucket, key)
        raise RuntimeError(f"s3://{bucket}/{key} kept changing: {INDEX_WRITE_ATTEMPTS} attempts to record {arn}")

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

    def describe_package(self, arn: str, *, with_mirror: bool = True) -> dict:
        """``DescribeModelPackage``; on the local target ModelLifeCycle put back from the mirror
        (``with_mirror=False``: a caller that reads the mirror itself saves that request)."""
        described = _jsonable(self.conn.describe_model_package(ModelPackageName=arn))
        if with_mirror and "ModelLifeCycle" not in described and self._mirrors_lifecycle():
            lifecycle = self._mirror_read(described.get("ModelPackageArn") or arn)
            if lifecycle:
                described["ModelLifeCycle"] = lifecycle
        return described

    def packages_in_stage(self, group: str, stage: str, scan: int = 100) -> list[dict]:
        """The described packages of the group (among the ``scan`` newest) whose ModelLifeCycle.Stage is ``stage``."""
        found = []
        for summary in self._summaries(group, limit=scan):
            lifecycle = summary.get("ModelLifeCycle")
            if lifecycle is None and self._mirrors_lifecycle():
                lifecycle = self._mirror_read(summary["ModelPackageArn"])
            if (lifecycle or {}).get("Stage") == stage:
                found.append(self.describe_package(summary["ModelPackageArn"]))
        return found

    def list_versions(self, group: str, limit: int = 100) -> list[dict]:
        """The group's ``ModelPackageSummary`` entries, newest first (``ListModelPackages`` pages).

        On ``aws`` each carries ``ModelLifeCycle`` as SageMaker returns it; on the local target it is
        in the mirror (:meth:`describe_package`) and in :meth:`registry_index`. A group that does not
        exist yet has no versions.
        """
        try:
            return [_jsonable(s) for s in self._summaries(group, limit=limit)]
        except ClientError as err:
            if err.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                return []
            raise

    def use_s3_client(self, client) -> None:
        """Read and write the mirror and the index through ``client`` (a caller that built one already
        saves building another)."""
        self.__dict__["_mirror_client"] = client

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
        """``CreateModelPackage``; its ``CustomerMetadataProperties`` are encoded within AWS's pattern,
        its ``ModelLifeCycle`` (if any) is checked and mirrored on the local target."""
        if "CustomerMetadataProperties" in request:
            request = {**request, "CustomerMetadataProperties": encode_metadata(request["CustomerMetadataProperties"])}
        lifecycle = request.get("ModelLifeCycle")
        if lifecycle is not None:
            lifecycle = model_life_cycle(lifecycle["Stage"], lifecycle["StageStatus"], lifecycle.get("StageDescription", ""))
            request = {**request, "ModelLifeCycle": lifecycle}
        arn = self.conn.create_model_package(**request)["ModelPackageArn"]
        if lifecycle is not None and self._mirrors_lifecycle():
            self._mirror_write(arn, lifecycle)
        described = self.describe_package(arn, with_mirror=False)
        if lifecycle is not None and "ModelLifeCycle" not in described and self._mirrors_lifecycle():
            described["ModelLifeCycle"] = lifecycle
        self._index_write(described)
        return arn

    def update_package(
        self,
        arn: str,
        *,
        status: str | None = None,
        reason: str | None = None,
        properties: dict[str, str] | None = None,
        lifecycle: dict[str, str] | None = None,
    ) -> dict:
        """Set the approval status, merge metadata properties and/or set the lifecycle stage; returns
        the described package.

        CustomerMetadataProperties, the status and its description are always re-sent whole (merged
        with what is there): a partial update must never drop lineage or a decision recorded earlier.
        ``lifecycle`` (a :func:`model_life_cycle` block) replaces ``ModelLifeCycle``; without it the
        field is not sent and stays as it is.
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
        if lifecycle is not None:
            lifecycle = model_life_cycle(lifecycle["Stage"], lifecycle["StageStatus"], lifecycle.get("StageDescription", ""))
            request["ModelLifeCycle"] = lifecycle
        self.conn.update_model_package(**request)
        if lifecycle is not None and self._mirrors_lifecycle():
            self._mirror_write(current.get("ModelPackageArn") or arn, lifecycle)
        described = self.describe_package(arn)
        self._index_write(described)
        return described

    def set_stage(self, arn: str, stage: str, status: str, description: str = "") -> dict:
        """Move the package to ``stage`` (``ModelLifeCycle``); returns the described package."""
        return self.update_package(arn, lifecycle=model_life_cycle(stage, status, description))

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
