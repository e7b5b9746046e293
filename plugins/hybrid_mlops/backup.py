"""Backup and restore of the ML assets: the registry, the model artifacts and the configuration.

The backup bucket (``HYBRID_MLOPS_BACKUP_BUCKET``, versioned, in ``HYBRID_MLOPS_BACKUP_REGION``, another
region than the artifacts)::

    artifacts/<source bucket>/<source key>          server-side copies, SHA-256 checked by S3, the source's
                                                    ETag, size and version id in the copy's metadata
    snapshots/<snapshot id>/registry/<group>.json   the group (description, tags) and every version as
                                                    DescribeModelPackage returns it (ModelLifeCycle included)
    snapshots/<snapshot id>/configuration.json      the model specs, the ``hybrid_mlops.*`` Variables,
                                                    the project's connection ids and types (never a secret)
    snapshots/<snapshot id>/manifest.json           written last: a snapshot without one is incomplete

A snapshot id is ``<run time, UTC: YYYYMMDDTHHMMSSZ>-<hash of the run>``: one per run, sorted by time, the
same on a retry (which rewrites the same snapshot). Artifacts are incremental: an object whose backup copy
already holds the same source object (ETag, size and version id unchanged) with its SHA-256 is not copied
again; the manifest lists it with the checksum and backup version it already has.

A restore rebuilds a snapshot into an empty region or account: buckets and objects (every SHA-256 checked
against the manifest), package groups and versions re-registered oldest first with their approval status,
ModelLifeCycle and metadata (``restored_from`` names the source version: a retry reuses what it created),
the model data URLs pointed at the restored buckets, then the Variables; and it verifies all of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

from hybrid_mlops import settings

log = logging.getLogger(__name__)

SNAPSHOTS = "snapshots/"
ARTIFACTS = "artifacts/"
MANIFEST = "manifest.json"
LATEST = "latest"
SNAPSHOT_ID = r"\d{8}T\d{6}Z-[0-9a-f]{8}"
#: Variables of the project: their names start with this.
VARIABLE_PREFIX = "hybrid_mlops."
#: A tag on what a restore created (bucket, package group): a rerun of the same restore continues there.
RESTORE_TAG = "hybrid-mlops:restored-from-snapshot"
#: CustomerMetadataProperties key of a restored version: the ARN of the version it was restored from.
RESTORED_FROM = "restored_from"
#: The default name of a restored bucket: bucket names are global, the source's name is taken.
DEFAULT_TARGET_BUCKET = "{bucket}-{region}"
MANIFEST_FORMAT = 1


def _fail(message: str):
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


def snapshot_id(dag_id: str, run_id: str, run_after: datetime) -> str:
    digest = hashlib.sha256(f"{dag_id}/{run_id}".encode()).hexdigest()[:8]
    return f"{run_after.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{digest}"


def snapshot_prefix(sid: str) -> str:
    return f"{SNAPSHOTS}{sid}/"


def split_uri(uri: str) -> tuple[str, str]:
    from hybrid_mlops.layout import split_s3_uri

    return split_s3_uri(uri)


def backup_key(bucket: str, key: str) -> str:
    return f"{ARTIFACTS}{bucket}/{key}"


def connection_ids(regions: list[str]) -> list[str]:
    """The connections the project's DAGs use: AWS, Slack cost alerts and the per-region Kubernetes ones."""
    import os

    ids = {settings.aws_conn_id(), "slack_cost_alerts"}
    pattern = os.environ.get("HYBRID_MLOPS_KUBERNETES_CONN_ID")
    if pattern:
        ids |= {pattern.format(region=r) for r in regions}
    return sorted(ids)


def _stores(region: str | None = None, session=None):
    from hybrid_mlops.hooks.backup import BackupStoreHook

    return BackupStoreHook(aws_conn_id=settings.aws_conn_id(), region_name=region, session=session)


def _backup_location() -> tuple[str, str]:
    try:
        return settings.backup_bucket(), settings.backup_region()
    except (ValueError, settings.SettingMissing) as err:
        raise _fail(str(err)) from None


# -- backup --------------------------------------------------------------------------------------------


def prepare_backup(context) -> dict:
    """The backup bucket exists in its region with versioning on (created if missing); this run's snapshot id."""
    bucket, region = _backup_location()
    try:
        state = _stores(region).ensure_versioned_bucket(bucket, region)
    except ValueError as err:
        raise _fail(str(err)) from None
    run = context["dag_run"]
    sid = snapshot_id(run.dag_id, run.run_id, run.run_after)
    log.info("Backup bucket s3://%s (%s): %s; snapshot %s", bucket, region, state, sid)
    return {"bucket": bucket, "region": region, "snapshot_id": sid, "prefix": snapshot_prefix(sid),
            "created_at": run.run_after.astimezone(timezone.utc).isoformat()}


def _s3_strings(value: Any):
    if isinstance(value, str):
        if value.startswith("s3://"):
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _s3_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _s3_strings(v)


def version_artifacts(version: dict) -> tuple[list[str], list[str]]:
    """``(folders, objects)`` a version needs: the folder of each container's ``model.tar.gz`` (the files beside
    it: evaluation, baselines, smoke sample) and each S3 object its metrics and baselines name."""
    specs = [version.get("InferenceSpecification") or {}, *(version.get("AdditionalInferenceSpecifications") or [])]
    folders = [c["ModelDataUrl"].rsplit("/", 1)[0] + "/" for s in specs for c in s.get("Containers", [])
               if c.get("ModelDataUrl", "").startswith("s3://")]
    objects = [u for field in ("ModelMetrics", "DriftCheckBaselines", "SamplePayloadUrl")
               for u in _s3_strings(version.get(field)) if not u.endswith("/")]
    return folders, objects


def backup_registry(groups: list[str], prepared: dict) -> dict:
    """Every package group of the fleet and every version, one JSON per group; what their artifacts are."""
    from hybrid_mlops.hooks.backup import RegistryBackupHook

    hook = RegistryBackupHook(aws_conn_id=settings.aws_conn_id())
    store = _stores(prepared["region"])
    parts, folders, objects = [], set(), set()
    for group in groups:
        doc = hook.export_group(group)
        if doc is None:
            log.info("Model package group %s does not exist yet: nothing to back up for it", group)
            continue
        part = store.put_json(prepared["bucket"], f"{prepared['prefix']}registry/{group}.json", doc)
        parts.append({**part, "group": group, "versions": len(doc["versions"])})
        for version in doc["versions"]:
            f, o = version_artifacts(version)
            folders.update(f)
            objects.update(o)
        log.info("Registry: %s, %d version(s) -> %s", group, len(doc["versions"]), part["key"])
    return {"parts": parts, "folders": sorted(folders), "objects": sorted(objects)}


def backup_artifacts(prepared: dict, registry: dict) -> list[dict]:
    """Server-side copies with SHA-256 of every artifact (``model.tar.gz`` and the files beside it); an
    unchanged source object already in the backup is not copied again. Returns the manifest's entries."""
    from hybrid_mlops.hooks.backup import COPY_OBJECT_MAX_BYTES, sha256_hex

    source, store = _stores(), _stores(prepared["region"])
    wanted: dict[tuple[str, str], None] = {}
    for folder in registry["folders"]:
        bucket, prefix = split_uri(folder)
        for obj in source.list_keys_under(bucket, prefix):
            wanted[(bucket, obj["Key"])] = None
    for uri in registry["objects"]:
        wanted[split_uri(uri)] = None
    entries, missing = [], []
    for bucket, key in sorted(wanted):
        head = source.head(bucket, key)
        if head is None:
            missing.append(f"s3://{bucket}/{key}")
            continue
        size, etag, version_id = head["ContentLength"], head["ETag"].strip('"'), head.get("VersionId") or ""
        if size > COPY_OBJECT_MAX_BYTES:
            raise _fail(f"s3://{bucket}/{key} has {size} bytes: one CopyObject copies at most 5 GiB")
        target = backup_key(bucket, key)
        stamp = {"source-etag": etag, "source-size": str(size), "source-version-id": version_id}
        have = store.head(prepared["bucket"], target)
        if have and have.get("ChecksumSHA256") and all((have.get("Metadata") or {}).get(k) == v for k, v in stamp.items()):
            sha, backup_version, copied = sha256_hex(have["ChecksumSHA256"]), have.get("VersionId"), False
        else:
            src = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
            done = store.copy_with_checksum(src, prepared["bucket"], target, content_type=head.get("ContentType"),
                                            metadata=stamp, if_match=head["ETag"])
            sha, backup_version, copied = done["sha256"], done["version_id"], True
        entries.append({"source": f"s3://{bucket}/{key}", "source_bucket": bucket, "source_key": key,
                        "source_version_id": version_id or None, "source_etag": etag, "key": target, "size": size,
                        "sha256": sha, "backup_version_id": backup_version, "content_type": head.get("ContentType"),
                        "copied": copied})
        log.info("%s %s (%d bytes, sha256 %s)", "Copied" if copied else "Already backed up:", target, size, sha)
    if missing:
        raise _fail(f"the registry names artifacts that are not in S3: {missing}")
    return entries


def backup_configuration(names: list[str], regions: list[str], prepared: dict) -> dict:
    """The model specs, the project's Variables and its connections' ids and types. Never a secret: a Variable
    whose name Airflow deems sensitive is listed without its value, and of a connection only the id, the type
    and the names of its extra fields are kept (no login, password, host or extra value)."""
    from airflow.sdk import Connection, Variable
    from airflow.sdk._shared.secrets_masker import should_hide_value_for_key
    from airflow.sdk.exceptions import AirflowNotFoundException

    from hybrid_mlops.specs.model import spec_files

    specs = {p.name: p.read_text() for p in spec_files(settings.models_dir()) if p.stem in names}
    variables = []
    for key in sorted(Variable.keys(prefix=VARIABLE_PREFIX)):
        if should_hide_value_for_key(key):
            variables.append({"key": key, "secret": True})
        else:
            variables.append({"key": key, "value": Variable.get(key)})
    connections = []
    for conn_id in connection_ids(regions):
        try:
            conn = Connection.get(conn_id)
        except AirflowNotFoundException:
            connections.append({"conn_id": conn_id, "defined": False})
            continue
        connections.append({"conn_id": conn_id, "defined": True, "conn_type": conn.conn_type,
                            "extra_fields": sorted(conn.extra_dejson)})
    doc = {"specs": specs, "variables": variables, "connections": connections}
    part = _stores(prepared["region"]).put_json(prepared["bucket"], f"{prepared['prefix']}configuration.json", doc)
    log.info("Configuration: %d spec(s), %d Variable(s) (%d secret, not kept), %d connection(s) -> %s", len(specs),
             len(variables), sum(1 for v in variables if v.get("secret")), len(connections), part["key"])
    return part


def write_manifest(prepared: dict, registry: dict, artifacts: list[dict], configuration: dict) -> dict:
    """The snapshot's manifest, written last: what is in it, every checksum, the counts."""
    counts = {"groups": len(registry["parts"]), "versions": sum(p["versions"] for p in registry["parts"]),
              "artifacts": len(artifacts), "bytes": sum(a["size"] for a in artifacts),
              "copied": sum(1 for a in artifacts if a["copied"]),
              "copied_bytes": sum(a["size"] for a in artifacts if a["copied"])}
    manifest = {
        "format": MANIFEST_FORMAT, "snapshot_id": prepared["snapshot_id"], "created_at": prepared["created_at"],
        "source": {"region": settings.region(), "artifacts_bucket": settings.bucket(), "target": settings.target()},
        "backup": {"bucket": prepared["bucket"], "region": prepared["region"]},
        "registry": registry["parts"], "configuration": configuration, "artifacts": artifacts, "counts": counts,
    }
    part = _stores(prepared["region"]).put_json(prepared["bucket"], prepared["prefix"] + MANIFEST, manifest)
    log.info("Snapshot %s complete: %s (manifest s3://%s/%s)", prepared["snapshot_id"], counts,
             prepared["bucket"], part["key"])
    return {"snapshot_id": prepared["snapshot_id"], "manifest": part["key"], **counts}


# -- restore -------------------------------------------------------------------------------------------


def resolve_snapshot(store, bucket: str, wanted: str) -> str:
    """The snapshot id to restore: ``wanted``, or the newest complete one (with a manifest) for ``latest``."""
    ids = sorted((f for f in store.folders(bucket, SNAPSHOTS) if re.fullmatch(SNAPSHOT_ID, f)), reverse=True)
    candidates = ids if wanted == LATEST else [wanted]
    for sid in candidates:
        if store.head(bucket, snapshot_prefix(sid) + MANIFEST):
            return sid
    if wanted == LATEST:
        raise _fail(f"s3://{bucket} holds no complete snapshot (one with a {MANIFEST}); run backup_ml_assets first")
    raise _fail(f"snapshot_id={wanted!r}: s3://{bucket}/{snapshot_prefix(wanted)}{MANIFEST} does not exist "
                f"(unknown or incomplete snapshot); the newest: {ids[:10]}")


def target_bucket_name(template: str, bucket: str, region: str) -> str:
    try:
        name = template.format(bucket=bucket, region=region)
    except (KeyError, IndexError, ValueError) as err:
        raise _fail(f"target_bucket={template!r}: only {{bucket}} and {{region}} may be filled in ({err})") from None
    if not re.fullmatch(settings.BUCKET_PATTERN, name) or ".." in name:
        raise _fail(f"target_bucket={template!r} gives {name!r} for {bucket}: not an S3 bucket name (3..63 "
                    "lowercase letters, digits, dots and hyphens); choose a shorter template")
    return name


def _target(plan: dict):
    """The store and the registry in the restore target (its region; its account when a role is given)."""
    from hybrid_mlops.hooks.backup import RegistryBackupHook, assumed_session

    session = None
    if plan["target_role_arn"]:
        session = assumed_session(settings.aws_conn_id(), plan["target_role_arn"], plan["target_region"],
                                  f"hybrid-mlops-restore-{plan['snapshot_id'][:40]}")
    store = _stores(plan["target_region"], session)
    registry = RegistryBackupHook(aws_conn_id=settings.aws_conn_id(), region_name=plan["target_region"],
                                  session=session, mirror_bucket=plan["buckets"][plan["source_artifacts_bucket"]])
    return store, registry


def _manifest(plan: dict) -> dict:
    return _stores(plan["backup_region"]).get_json(plan["backup_bucket"], plan["manifest_key"], plan["manifest_sha256"])


def plan_restore(params: dict) -> dict:
    """Which snapshot, where to, what the buckets will be called; refuses a target that is not empty."""
    import hashlib

    bucket, region = _backup_location()
    store = _stores(region)
    sid = resolve_snapshot(store, bucket, params.get("snapshot_id") or LATEST)
    key = snapshot_prefix(sid) + MANIFEST
    raw = store.get_bytes(bucket, key)
    manifest = json.loads(raw)
    target_region = params.get("target_region") or ""
    if not re.fullmatch(settings.REGION_PATTERN, target_region):
        raise _fail(f"target_region={target_region!r} is not an AWS region name (e.g. eu-west-1)")
    role = params.get("target_role_arn") or None
    source_bucket = manifest["source"]["artifacts_bucket"]
    template = params.get("target_bucket") or DEFAULT_TARGET_BUCKET
    buckets = {b: target_bucket_name(template, b, target_region)
               for b in sorted({a["source_bucket"] for a in manifest["artifacts"]} | {source_bucket})}
    same = [b for b, t in buckets.items() if b == t]
    if same and not role:
        raise _fail(f"target_bucket={template!r} restores {same} onto itself; a restore writes new buckets")
    if params.get("overwrite") and not role and target_region == manifest["source"]["region"]:
        raise _fail(f"target_region={target_region} is the snapshot's own region and account: with overwrite the "
                    "restore would add a twin of every version to the groups it was taken from")
    # Every part the restore reads is checked against the manifest before anything is written.
    for part in [*manifest["registry"], manifest["configuration"]]:
        try:
            store.get_json(bucket, part["key"], part["sha256"])
        except ValueError as err:
            raise _fail(str(err)) from None
    plan = {"snapshot_id": sid, "backup_bucket": bucket, "backup_region": region, "manifest_key": key,
            "manifest_sha256": hashlib.sha256(raw).hexdigest(), "target_region": target_region,
            "target_role_arn": role, "buckets": buckets, "source_artifacts_bucket": source_bucket,
            "source_region": manifest["source"]["region"], "counts": manifest["counts"],
            "groups": [p["group"] for p in manifest["registry"]], "overwrite": bool(params.get("overwrite"))}
    tstore, tregistry = _target(plan)
    occupied = []
    for target in buckets.values():
        where = tstore.bucket_region(target)
        if where is None or tstore.bucket_tags(target).get(RESTORE_TAG) == sid:
            continue
        if where != target_region:
            raise _fail(f"bucket {target} exists in {where}, not in target_region={target_region}; choose another "
                        "target_bucket")
        keys = tstore.first_keys(target)
        if keys:
            occupied.append(f"s3://{target} holds objects ({', '.join(keys[:3])}...)")
    for group in plan["groups"]:
        described = tregistry.describe_group(group)
        if described and tregistry.tags(described["ModelPackageGroupArn"]).get(RESTORE_TAG) != sid \
                and tregistry.has_versions(group):
            occupied.append(f"model package group {group} in {target_region} has versions")
    if occupied and not plan["overwrite"]:
        raise _fail(f"the restore target is not empty: {'; '.join(occupied)}. Restore into an empty region or "
                    "account, or set overwrite to restore over what is there")
    log.info("Restore plan: snapshot %s (%s, %s) from s3://%s into %s%s; buckets %s; groups %s%s", sid,
             manifest["created_at"], manifest["counts"], bucket, target_region,
             f" as {role}" if role else "", buckets, plan["groups"],
             f"; over what is there: {occupied}" if occupied else "")
    return plan


def restore_artifacts(plan: dict) -> dict:
    """Copy every artifact from the backup into its restored bucket; S3 computes each copy's SHA-256, and a
    copy that differs from the manifest fails the task naming the backup key (the bad copy is deleted).
    Each object is copied from the backup version the snapshot names (S3 versions never change)."""
    from hybrid_mlops.hooks.backup import sha256_hex

    manifest = _manifest(plan)
    store, _ = _target(plan)
    backup = _stores(plan["backup_region"])
    ready, copied, kept, corrupt = set(), 0, 0, []
    for entry in manifest["artifacts"]:
        target = plan["buckets"][entry["source_bucket"]]
        if target not in ready:
            if store.bucket_region(target) is None:
                store.create_bucket_in(target, plan["target_region"], tags={RESTORE_TAG: plan["snapshot_id"]})
            ready.add(target)
        have = store.head(target, entry["source_key"])
        if have and have.get("ChecksumSHA256") and sha256_hex(have["ChecksumSHA256"]) == entry["sha256"]:
            kept += 1
            continue
        # The version the snapshot copied (a later snapshot may have written a newer one under the same key);
        # should it be gone, the current version, if its SHA-256 is the manifest's.
        source = {"Bucket": plan["backup_bucket"], "Key": entry["key"]}
        pinned = entry.get("backup_version_id")
        if pinned and backup.head(plan["backup_bucket"], entry["key"], pinned):
            source["VersionId"] = pinned
        elif pinned:
            log.warning("Version %s of s3://%s/%s (the snapshot's) is gone; trying the current version",
                        pinned, plan["backup_bucket"], entry["key"])
        done = store.copy_with_checksum(source, target, entry["source_key"], content_type=entry.get("content_type"))
        if done["sha256"] != entry["sha256"]:
            store.delete(target, entry["source_key"])
            corrupt.append(f"s3://{plan['backup_bucket']}/{entry['key']} has SHA-256 {done['sha256']}, the manifest "
                           f"recorded {entry['sha256']}" + ("" if "VersionId" in source else
                                                            f" (the snapshot's version {pinned} is gone)"))
            continue
        copied += 1
    if corrupt:
        raise _fail(f"corrupt backup objects in snapshot {plan['snapshot_id']}, not restored: " + "; ".join(corrupt))
    log.info("Artifacts: %d copied and checked, %d already restored", copied, kept)
    return {"copied": copied, "already_restored": kept}


def _rewrite(value: Any, urls: dict[str, str]) -> Any:
    if isinstance(value, str):
        return urls.get(value, value)
    if isinstance(value, dict):
        return {k: _rewrite(v, urls) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, urls) for v in value]
    return value


def _restored_urls(plan: dict, manifest: dict) -> dict[str, str]:
    return {a["source"]: f"s3://{plan['buckets'][a['source_bucket']]}/{a['source_key']}" for a in manifest["artifacts"]}


def _realign(registry, restored: dict, version: dict) -> None:
    """A version restored earlier (an overwrite from another snapshot) takes this snapshot's status and stage."""
    lifecycle = version.get("ModelLifeCycle")
    if restored["ModelApprovalStatus"] == version["ModelApprovalStatus"] and \
            restored.get("ApprovalDescription") == version.get("ApprovalDescription") and \
            (lifecycle is None or restored.get("ModelLifeCycle") == lifecycle):
        return
    registry.update_package(restored["ModelPackageArn"], status=version["ModelApprovalStatus"],
                            reason=version.get("ApprovalDescription") or "", lifecycle=lifecycle)


def restore_registry(plan: dict) -> list[dict]:
    """Groups (description, tags) and versions, oldest first, with status, lifecycle stage and metadata;
    URLs of backed-up objects point at the restored buckets. A version already restored is reused."""
    manifest = _manifest(plan)
    store = _stores(plan["backup_region"])
    _, registry = _target(plan)
    urls = _restored_urls(plan, manifest)
    mapping = []
    for part in manifest["registry"]:
        doc = store.get_json(plan["backup_bucket"], part["key"], part["sha256"])
        group = doc["group"]
        registry.ensure_group(group, doc["description"], {**doc["tags"], RESTORE_TAG: plan["snapshot_id"]})
        done = {(v.get("CustomerMetadataProperties") or {}).get(RESTORED_FROM): v for v in registry.versions(group)}
        for version in doc["versions"]:
            source_arn = version["ModelPackageArn"]
            if source_arn in done:
                arn, reused = done[source_arn]["ModelPackageArn"], True
                _realign(registry, done[source_arn], version)
            else:
                request = _rewrite(registry.create_request(version), urls)
                request["ModelPackageGroupName"] = group
                request["CustomerMetadataProperties"] = {**(request.get("CustomerMetadataProperties") or {}),
                                                         RESTORED_FROM: source_arn}
                request["ClientToken"] = hashlib.sha256(f"{plan['snapshot_id']} {source_arn}".encode()).hexdigest()[:36]
                arn, reused = registry.create_package(request), False
                if version.get("ApprovalDescription"):  # CreateModelPackage takes no ApprovalDescription
                    registry.update_package(arn, status=version["ModelApprovalStatus"],
                                            reason=version["ApprovalDescription"])
            number = int(arn.rsplit("/", 1)[1])  # arn:...:model-package/<group>/<version>
            mapping.append({"group": group, "source_version": version["ModelPackageVersion"], "version": number,
                            "arn": arn, "reused": reused})
            log.info("%s version %s -> %s (%s, %s)%s", group, version["ModelPackageVersion"], number,
                     version["ModelApprovalStatus"], (version.get("ModelLifeCycle") or {}).get("Stage"),
                     " (already restored)" if reused else "")
    return mapping


def restore_variables(plan: dict) -> dict:
    """The project's Variables, into this Airflow; secret Variables and connections are listed to re-create."""
    from airflow.sdk import Variable

    manifest = _manifest(plan)
    config = _stores(plan["backup_region"]).get_json(plan["backup_bucket"], manifest["configuration"]["key"],
                                                      manifest["configuration"]["sha256"])
    restored = []
    for variable in config["variables"]:
        if "value" in variable:
            Variable.set(variable["key"], variable["value"])
            restored.append(variable["key"])
    to_create = [v["key"] for v in config["variables"] if v.get("secret")]
    conns = [f"{c['conn_id']} ({c['conn_type']})" for c in config["connections"] if c.get("defined")]
    log.info("Variables restored: %s. Not in the backup (secrets), to set by hand: Variables %s; connections %s",
             restored, to_create, conns)
    return {"variables": restored, "secret_variables": to_create, "connections": conns}


def _containers(version: dict) -> list[tuple]:
    containers = (version.get("InferenceSpecification") or {}).get("Containers", [])
    return [(c.get("Image"), c.get("ModelDataUrl")) for c in containers]


def verify_restore(plan: dict) -> dict:
    """Counts, checksums and statuses of the target against the snapshot; fails naming every mismatch."""
    from airflow.sdk import Variable

    from hybrid_mlops.hooks.backup import sha256_hex

    manifest = _manifest(plan)
    backup = _stores(plan["backup_region"])
    store, registry = _target(plan)
    urls = _restored_urls(plan, manifest)
    problems = []
    for entry in manifest["artifacts"]:
        target = plan["buckets"][entry["source_bucket"]]
        have = store.head(target, entry["source_key"])
        if have is None:
            problems.append(f"s3://{target}/{entry['source_key']} is missing")
        elif not have.get("ChecksumSHA256") or sha256_hex(have["ChecksumSHA256"]) != entry["sha256"]:
            problems.append(f"s3://{target}/{entry['source_key']}: SHA-256 differs from the manifest's {entry['sha256']}")
        elif have["ContentLength"] != entry["size"]:
            problems.append(f"s3://{target}/{entry['source_key']}: {have['ContentLength']} bytes, not {entry['size']}")
    versions = 0
    for part in manifest["registry"]:
        doc = backup.get_json(plan["backup_bucket"], part["key"], part["sha256"])
        restored = {(v.get("CustomerMetadataProperties") or {}).get(RESTORED_FROM): v
                    for v in registry.versions(doc["group"])}
        restored.pop(None, None)
        if len(restored) != len(doc["versions"]):
            problems.append(f"{doc['group']}: {len(restored)} restored version(s), the snapshot has {len(doc['versions'])}")
        for source in doc["versions"]:
            name = f"{doc['group']} version {source['ModelPackageVersion']}"
            got = restored.get(source["ModelPackageArn"])
            if got is None:
                problems.append(f"{name} was not restored")
                continue
            versions += 1
            for field in ("ModelApprovalStatus", "ApprovalDescription", "ModelPackageDescription"):
                if (got.get(field) or None) != (source.get(field) or None):  # an empty text comes back absent
                    problems.append(f"{name}: {field}={got.get(field)!r}, the snapshot has {source.get(field)!r}")
            for field in ("Stage", "StageStatus"):
                want, have = (source.get("ModelLifeCycle") or {}).get(field), (got.get("ModelLifeCycle") or {}).get(field)
                if want != have:
                    problems.append(f"{name}: ModelLifeCycle.{field}={have!r}, the snapshot has {want!r}")
            metadata = {k: v for k, v in (got.get("CustomerMetadataProperties") or {}).items() if k != RESTORED_FROM}
            if metadata != (source.get("CustomerMetadataProperties") or {}):
                problems.append(f"{name}: CustomerMetadataProperties differ from the snapshot's")
            if _containers(got) != _containers(_rewrite(source, urls)):
                problems.append(f"{name}: InferenceSpecification (model data URLs) is not the restored one")
    config = backup.get_json(plan["backup_bucket"], manifest["configuration"]["key"], manifest["configuration"]["sha256"])
    for variable in config["variables"]:
        if "value" in variable and Variable.get(variable["key"], default=None) != variable["value"]:
            problems.append(f"Variable {variable['key']} differs from the snapshot's")
    if problems:
        raise _fail(f"the restore of snapshot {plan['snapshot_id']} into {plan['target_region']} does not match the "
                    f"backup ({len(problems)} problem(s)):\n" + "\n".join(problems))
    report = {"snapshot_id": plan["snapshot_id"], "target_region": plan["target_region"], "buckets": plan["buckets"],
              "artifacts": len(manifest["artifacts"]), "versions": versions, "groups": len(manifest["registry"])}
    log.info("Restore verified: %s", report)
    return report
