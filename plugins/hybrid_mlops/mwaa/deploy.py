"""Uploads a bundle (``bin/mwaa-bundle``) to an MWAA environment's source bucket and updates the environment.

1. The bucket must have versioning on (MWAA reads plugins, requirements and startup script by version).
2. The DAGs prefix is synced: changed files are uploaded, files no longer in the bundle are deleted
   (MWAA mirrors the prefix into /usr/local/airflow/dags).
3. ``plugins.zip``, ``requirements.txt`` and ``startup.sh`` are uploaded; each upload's ``VersionId``
   goes into ``UpdateEnvironment`` (``PluginsS3ObjectVersion`` ...), so the environment runs exactly
   these objects. ``--wait`` polls ``GetEnvironment`` until ``AVAILABLE`` (or quotes the update error).

Usage: ``bin/mwaa-deploy --environment my-mwaa --bucket my-mwaa-source [--bundle build/mwaa] [--wait]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


class DeployError(RuntimeError):
    """The bucket, bundle or environment is not in a state to deploy; the message says which and why."""


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _load_manifest(bundle: Path) -> dict:
    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        raise DeployError(f"{bundle}: no manifest.json (build the bundle with bin/mwaa-bundle first)")
    manifest = json.loads(manifest_path.read_text())
    for name, meta in manifest["files"].items():
        path = bundle / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != meta["sha256"]:
            raise DeployError(f"{bundle}/{name}: differs from manifest.json (rebuild the bundle)")
    return manifest


def sync_dags(s3, bucket: str, bundle: Path, prefix: str) -> dict:
    """Makes ``s3://bucket/prefix/`` hold exactly ``bundle/dags``; returns counts of each action."""
    local = {p.relative_to(bundle / "dags").as_posix(): p for p in sorted((bundle / "dags").rglob("*")) if p.is_file()}
    remote = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            remote[obj["Key"][len(prefix) + 1:]] = obj["ETag"].strip('"')
    uploaded = unchanged = 0
    for rel, path in local.items():
        if remote.get(rel) == _md5(path):
            unchanged += 1
            continue
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=path.read_bytes())
        uploaded += 1
    stale = sorted(set(remote) - set(local))
    for start in range(0, len(stale), 1000):
        chunk = stale[start:start + 1000]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"{prefix}/{k}"} for k in chunk], "Quiet": True})
    return {"uploaded": uploaded, "unchanged": unchanged, "deleted": len(stale)}


def upload_versioned(s3, bucket: str, key: str, path: Path) -> str:
    """Uploads one object; returns its S3 version id (a versioned bucket gives one to every put)."""
    version = s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes()).get("VersionId")
    if not version or version == "null":
        raise DeployError(f"s3://{bucket}/{key}: the upload got no version id; turn versioning on for {bucket}")
    return version


def update_request(environment: str, *, dags_prefix: str, versions: dict[str, str]) -> dict:
    """The ``UpdateEnvironment`` request: paths relative to the source bucket, with object versions."""
    return {
        "Name": environment,
        "DagS3Path": dags_prefix,
        "PluginsS3Path": "plugins.zip",
        "PluginsS3ObjectVersion": versions["plugins.zip"],
        "RequirementsS3Path": "requirements.txt",
        "RequirementsS3ObjectVersion": versions["requirements.txt"],
        "StartupScriptS3Path": "startup.sh",
        "StartupScriptS3ObjectVersion": versions["startup.sh"],
    }


def wait_available(mwaa, environment: str, *, poll_seconds: float = 30, timeout_seconds: float = 3600) -> dict:
    """Polls ``GetEnvironment`` until the update ends; raises with MWAA's own error when it failed."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        env = mwaa.get_environment(Name=environment)["Environment"]
        status = env["Status"]
        if status == "AVAILABLE":
            last = env.get("LastUpdate", {})
            if last.get("Status") == "FAILED":
                error = last.get("Error", {})
                raise DeployError(f"MWAA environment {environment}: update failed and was rolled back: "
                                  f"{error.get('ErrorCode')}: {error.get('ErrorMessage')}")
            return env
        if status in ("UPDATE_FAILED", "UNAVAILABLE", "CREATE_FAILED", "DELETED", "DELETING"):
            error = env.get("LastUpdate", {}).get("Error", {})
            raise DeployError(f"MWAA environment {environment}: {status}: "
                              f"{error.get('ErrorCode')}: {error.get('ErrorMessage')}")
        if time.monotonic() > deadline:
            raise DeployError(f"MWAA environment {environment}: still {status} after {timeout_seconds:.0f}s")
        time.sleep(poll_seconds)


def deploy(*, s3, mwaa, bucket: str, environment: str, bundle: Path, dags_prefix: str = "dags",
           wait: bool = False, poll_seconds: float = 30) -> dict:
    """Uploads the bundle and updates the environment; returns what was done (versions, counts, request)."""
    bundle = Path(bundle)
    manifest = _load_manifest(bundle)
    status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    if status != "Enabled":
        raise DeployError(f"s3://{bucket}: versioning is {status or 'off'}; MWAA needs a versioned source bucket "
                          f"(aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled)")
    dags = sync_dags(s3, bucket, bundle, dags_prefix.strip("/"))
    versions = {name: upload_versioned(s3, bucket, name, bundle / name)
                for name in ("plugins.zip", "requirements.txt", "startup.sh")}
    request = update_request(environment, dags_prefix=dags_prefix.strip("/"), versions=versions)
    response = mwaa.update_environment(**request)
    result = {"environment_arn": response["Arn"], "versions": versions, "dags": dags, "request": request,
              "git_sha": manifest.get("git_sha")}
    if wait:
        result["status"] = wait_available(mwaa, environment, poll_seconds=poll_seconds)["Status"]
    return result


def main(argv: list[str] | None = None) -> int:
    import boto3

    parser = argparse.ArgumentParser(prog="bin/mwaa-deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--environment", required=True, help="the MWAA environment's name")
    parser.add_argument("--bucket", required=True, help="the environment's source bucket (versioning on)")
    parser.add_argument("--bundle", type=Path, default=REPO / "build" / "mwaa", help="default build/mwaa")
    parser.add_argument("--dags-prefix", default="dags", help="the environment's DAGs folder in the bucket")
    parser.add_argument("--region", default=None, help="the environment's region (default: the AWS config's)")
    parser.add_argument("--wait", action="store_true", help="wait until the environment is AVAILABLE again")
    args = parser.parse_args(argv)
    session = boto3.session.Session(region_name=args.region)
    try:
        result = deploy(s3=session.client("s3"), mwaa=session.client("mwaa"), bucket=args.bucket,
                        environment=args.environment, bundle=args.bundle, dags_prefix=args.dags_prefix,
                        wait=args.wait)
    except DeployError as err:
        print(f"mwaa-deploy: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if k != "request"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
