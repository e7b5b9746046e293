"""Builds what an Amazon MWAA environment runs, laid out as MWAA syncs it.

    <out>/dags/            the DAGs S3 prefix, synced to /usr/local/airflow/dags: the DAG files,
                           .airflowignore and include/ (model specs, training and serving sources,
                           schemas, price table, include/mwaa/constraints.txt)
    <out>/plugins.zip      unzipped into /usr/local/airflow/plugins (on sys.path in every Airflow
                           component): the hybrid_mlops package and the Airflow plugin
    <out>/requirements.txt MWAA's requirements, with its constraint line
    <out>/startup.sh       exports HYBRID_MLOPS_* before each Airflow component starts
    <out>/manifest.json    sha256 and size of every file above

The package ships in ``plugins.zip``, not in the DAGs folder: the plugin (operator extra links) is
loaded by the API server and scheduler, whose ``sys.path`` holds the plugins folder but not the
DAGs folder. ``include/`` ships under the DAGs prefix (MWAA has no other synced folder), and
``.airflowignore`` keeps Airflow's parser out of it.

Usage: ``bin/mwaa-bundle --bucket my-artifacts --sagemaker-role-arn arn:aws:iam::...:role/... [--out build/mwaa]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import shutil
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
MWAA_AIRFLOW_HOME = "/usr/local/airflow"
MWAA_DAGS_FOLDER = f"{MWAA_AIRFLOW_HOME}/dags"
#: The constraint line requirements.txt must carry (MWAA then adds no constraints file of its own).
CONSTRAINT_LINE = f'--constraint "{MWAA_DAGS_FOLDER}/include/mwaa/constraints.txt"'
#: Folders of include/ that MWAA does not need (the docker-compose image's files).
INCLUDE_SKIP = {"docker"}
SKIP_NAMES = {"__pycache__", ".pytest_cache", ".DS_Store"}
#: Variables MWAA sets itself: a startup script cannot change them.
MWAA_RESERVED = re.compile(
    r"^(MWAA__.*|AIRFLOW_HOME|AIRFLOW__API__BASE_URL|AWS_REGION|AWS_DEFAULT_REGION|PYTHONPATH|PYTHONUNBUFFERED"
    r"|AIRFLOW__CORE__DAGS_FOLDER|AIRFLOW__CORE__PLUGINS_FOLDER|AIRFLOW__CORE__EXECUTOR|AIRFLOW__DATABASE__.*"
    r"|AIRFLOW_CONN_AWS_DEFAULT|PATH|JAVA_HOME|LD_LIBRARY_PATH)$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
ROLE_ARN = re.compile(r"^arn:aws(-[a-z]+)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")


class BundleError(ValueError):
    """A bundle setting or source file is not what MWAA accepts; the message names it."""


def _files(root: Path):
    for path in sorted(root.rglob("*")):
        if path.is_file() and not SKIP_NAMES.intersection(path.relative_to(root).parts) and path.suffix != ".pyc":
            yield path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_requirements(text: str, source: str = "requirements.txt") -> None:
    """MWAA adds Airflow's constraints when no line matches ``-c |--constraint ``; ours must be there,
    pointing at the file this bundle ships, and Airflow must be MWAA's."""
    lines = [line.strip() for line in text.splitlines()]
    if CONSTRAINT_LINE not in lines:
        raise BundleError(f"{source}: needs the line {CONSTRAINT_LINE} (MWAA would add its own constraints)")
    airflow = [line for line in lines if re.match(r"^apache-airflow\s*[=<>~!]", line)]
    if airflow and airflow[0].split("#")[0].replace(" ", "") != "apache-airflow==3.3.1":
        raise BundleError(f"{source}: {airflow[0]!r}: MWAA 3.3.1 pins apache-airflow==3.3.1 (essential constraints)")


def startup_script(env: dict[str, str]) -> str:
    """A POSIX shell startup script exporting ``env`` (names checked against what MWAA reserves)."""
    out = ["#!/bin/sh",
           "# MWAA startup script: runs before each Airflow component starts (limit: 5 minutes).",
           "# Written by bin/mwaa-bundle; edit the bundle's options, not this file."]
    for name, value in env.items():
        if not ENV_NAME.match(name):
            raise BundleError(f"startup.sh: {name!r} is not an environment variable name")
        if MWAA_RESERVED.match(name):
            raise BundleError(f"startup.sh: {name} is set by MWAA itself; a startup script cannot change it")
        out.append(f"export {name}={shlex.quote(str(value))}")
    return "\n".join(out) + "\n"


def startup_env(*, bucket: str, sagemaker_role_arn: str, region: str, git_sha: str, target: str = "aws",
                athena_workgroup: str | None = None, athena_database: str | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """The HYBRID_MLOPS_* settings of an MWAA environment, validated (errors name the option)."""
    if not BUCKET_NAME.match(bucket or ""):
        raise BundleError(f"--bucket {bucket!r}: not an S3 bucket name (3-63 of a-z 0-9 . -)")
    if not ROLE_ARN.match(sagemaker_role_arn or ""):
        raise BundleError(f"--sagemaker-role-arn {sagemaker_role_arn!r}: not an IAM role ARN "
                          "(arn:aws:iam::<12 digits>:role/<name>)")
    if not REGION.match(region or ""):
        raise BundleError(f"--region {region!r}: not an AWS region name (e.g. us-west-2)")
    if target not in ("aws", "local"):
        raise BundleError(f"--target {target!r}: must be aws or local")
    env = {
        "HYBRID_MLOPS_HOME": MWAA_DAGS_FOLDER,
        "HYBRID_MLOPS_TARGET": target,
        "HYBRID_MLOPS_BUCKET": bucket,
        "HYBRID_MLOPS_SAGEMAKER_ROLE_ARN": sagemaker_role_arn,
        "HYBRID_MLOPS_REGION": region,
        "HYBRID_MLOPS_GIT_SHA": git_sha,
    }
    if athena_workgroup:
        env["HYBRID_MLOPS_ATHENA_WORKGROUP"] = athena_workgroup
    if athena_database:
        env["HYBRID_MLOPS_ATHENA_DATABASE"] = athena_database
    env.update(extra or {})
    return env


def build_bundle(out: Path, env: dict[str, str], *, repo: Path = REPO) -> dict:
    """Writes the bundle under ``out`` (replacing what was there); returns the manifest."""
    out = Path(out)
    requirements = (repo / "requirements.txt").read_text()
    check_requirements(requirements)
    constraints = repo / "include" / "mwaa" / "constraints.txt"
    if not constraints.is_file():
        raise BundleError(f"{constraints}: missing (the file requirements.txt's constraint line names)")
    if not (repo / "dags" / ".airflowignore").is_file():
        raise BundleError(f"{repo / 'dags' / '.airflowignore'}: missing (Airflow would parse include/)")
    if out.exists():
        shutil.rmtree(out)
    dags = out / "dags"
    dags.mkdir(parents=True)
    for path in _files(repo / "dags"):
        target = dags / path.relative_to(repo / "dags")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    for path in _files(repo / "include"):
        rel = path.relative_to(repo / "include")
        if rel.parts[0] in INCLUDE_SKIP:
            continue
        target = dags / "include" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)

    # plugins.zip: the folder's contents at the zip's root (MWAA unzips it into plugins/), fixed
    # timestamps so an unchanged package gives the same bytes (and no new object version).
    with zipfile.ZipFile(out / "plugins.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in _files(repo / "plugins"):
            info = zipfile.ZipInfo(path.relative_to(repo / "plugins").as_posix(), date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    (out / "requirements.txt").write_text(requirements)
    (out / "startup.sh").write_text(startup_script(env))
    (out / "startup.sh").chmod(0o755)

    files = {p.relative_to(out).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
             for p in _files(out) if p.name != "manifest.json"}
    manifest = {"files": files, "git_sha": env.get("HYBRID_MLOPS_GIT_SHA", "unknown")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO / "plugins"))
    from hybrid_mlops import settings

    parser = argparse.ArgumentParser(prog="bin/mwaa-bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "mwaa", help="output folder (default build/mwaa)")
    parser.add_argument("--bucket", required=True, help="the artifacts bucket (HYBRID_MLOPS_BUCKET)")
    parser.add_argument("--sagemaker-role-arn", required=True, help="the SageMaker execution role")
    parser.add_argument("--region", default="us-west-2", help="the primary region (default us-west-2)")
    parser.add_argument("--target", default="aws", choices=("aws", "local"))
    parser.add_argument("--athena-workgroup", default=None, help="the monitor's Athena workgroup")
    parser.add_argument("--athena-database", default=None, help="the Glue database of the capture tables")
    parser.add_argument("--git-sha", default=None, help="commit recorded in lineage (default: this checkout's)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="another variable startup.sh exports (repeatable)")
    args = parser.parse_args(argv)
    extra = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--env {item!r}: expected NAME=VALUE")
        extra[name] = value
    try:
        env = startup_env(bucket=args.bucket, sagemaker_role_arn=args.sagemaker_role_arn, region=args.region,
                          git_sha=args.git_sha or settings.git_sha(), target=args.target,
                          athena_workgroup=args.athena_workgroup, athena_database=args.athena_database, extra=extra)
        manifest = build_bundle(args.out, env)
    except BundleError as err:
        print(f"mwaa-bundle: {err}", file=sys.stderr)
        return 2
    sizes = {name: meta["bytes"] for name, meta in manifest["files"].items() if "/" not in name}
    dag_files = sum(1 for name in manifest["files"] if name.startswith("dags/"))
    print(f"mwaa-bundle: {args.out}: dags/ ({dag_files} files), "
          + ", ".join(f"{name} ({size} bytes)" for name, size in sorted(sizes.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
