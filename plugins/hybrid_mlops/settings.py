"""Deployment settings read from the environment at run time (never at DAG-parse time for I/O).

One variable chooses the target: ``HYBRID_MLOPS_TARGET=local`` (default: a moto server on loopback,
local training and serving processes) or ``aws`` (SageMaker, EKS, Cost Explorer for real).
"""

from __future__ import annotations

import os
from pathlib import Path


def _default_home() -> Path:
    """The folder holding ``include/``: the checkout (two folders above this file) when it has one, else
    the Airflow DAGs folder, where ``bin/mwaa-bundle`` ships ``include/`` (MWAA: /usr/local/airflow/dags)."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "include" / "models").is_dir():
        return checkout
    airflow_home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    return Path(os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", airflow_home / "dags"))


PROJECT_ROOT = Path(os.environ.get("HYBRID_MLOPS_HOME") or _default_home())
INCLUDE_DIR = PROJECT_ROOT / "include"
MODELS_DIR = INCLUDE_DIR / "models"
TARGETS = ("local", "aws")


def models_dir() -> Path:
    """Where the model specs are: ``HYBRID_MLOPS_MODELS_DIR``, else ``include/models``."""
    return Path(os.environ.get("HYBRID_MLOPS_MODELS_DIR") or MODELS_DIR)


def target() -> str:
    value = os.environ.get("HYBRID_MLOPS_TARGET", "local")
    if value not in TARGETS:
        raise ValueError(f"HYBRID_MLOPS_TARGET={value!r} must be one of {TARGETS}")
    return value


def is_local() -> bool:
    return target() == "local"


def aws_conn_id() -> str:
    return os.environ.get("HYBRID_MLOPS_AWS_CONN_ID", "aws_default")


def region() -> str:
    return os.environ.get("HYBRID_MLOPS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-west-2"))


class SettingMissing(RuntimeError):
    """An ``aws`` setting is not set: the message names the environment variable and what it is for."""


#: Stand-ins the ``local`` target uses (a moto server accepts any name); ``aws`` never falls back to them.
LOCAL_DEFAULTS = {
    "HYBRID_MLOPS_BUCKET": "hybrid-mlops-artifacts",
    "HYBRID_MLOPS_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/hybrid-mlops-sagemaker-execution",
    "HYBRID_MLOPS_ATHENA_WORKGROUP": "primary",
    "HYBRID_MLOPS_ATHENA_DATABASE": "hybrid_mlops",
    "HYBRID_MLOPS_CUR_TABLE": "cur2",
    "HYBRID_MLOPS_BACKUP_BUCKET": "hybrid-mlops-backup",
    "HYBRID_MLOPS_BACKUP_REGION": "eu-west-1",
}

#: What each ``aws`` setting is, for the error that names a missing one.
AWS_SETTINGS = {
    "HYBRID_MLOPS_BUCKET": "the artifacts bucket (training data, checkpoints, models, capture, reports)",
    "HYBRID_MLOPS_SAGEMAKER_ROLE_ARN": "the SageMaker execution role ARN the training jobs run as",
    "HYBRID_MLOPS_ATHENA_WORKGROUP": "the Athena workgroup the monitor's queries run in",
    "HYBRID_MLOPS_ATHENA_DATABASE": "the Glue database holding the capture and cost tables",
    "HYBRID_MLOPS_CUR_TABLE": ("the Athena table of the CUR 2.0 data export with split cost allocation data "
                               "(per-model EKS serving cost)"),
    "HYBRID_MLOPS_BACKUP_BUCKET": "the versioned bucket that keeps the backups of the ML assets (backup_ml_assets)",
    "HYBRID_MLOPS_BACKUP_REGION": "the backup bucket's region, another one than HYBRID_MLOPS_REGION",
}


def _setting(name: str) -> str:
    """The environment variable ``name``; on ``aws`` a missing one is an error naming it (never a fake)."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if is_local():
        return LOCAL_DEFAULTS[name]
    raise SettingMissing(f"{name} is not set: it is {AWS_SETTINGS[name]}, required on HYBRID_MLOPS_TARGET=aws")


def bucket() -> str:
    """The artifacts bucket (training data, checkpoints, models, capture, reports)."""
    return _setting("HYBRID_MLOPS_BUCKET")


def sagemaker_role_arn() -> str:
    return _setting("HYBRID_MLOPS_SAGEMAKER_ROLE_ARN")


def athena_workgroup() -> str:
    """The Athena workgroup of the monitor's statistics queries (``aws``)."""
    return _setting("HYBRID_MLOPS_ATHENA_WORKGROUP")


def athena_database() -> str:
    """The Glue database of the Athena tables (capture, split cost allocation data)."""
    return _setting("HYBRID_MLOPS_ATHENA_DATABASE")


def athena_output_location() -> str:
    """Where Athena writes query results: ``HYBRID_MLOPS_ATHENA_OUTPUT`` or ``s3://<bucket>/athena-results/``."""
    return os.environ.get("HYBRID_MLOPS_ATHENA_OUTPUT", "").strip() or f"s3://{bucket()}/athena-results/"


def cur_table() -> str:
    """The Athena table of the CUR 2.0 export with split cost allocation data for EKS (``aws``)."""
    return _setting("HYBRID_MLOPS_CUR_TABLE")


def cur_database() -> str:
    """The Glue database of :func:`cur_table`: ``HYBRID_MLOPS_CUR_DATABASE``, else :func:`athena_database`."""
    return os.environ.get("HYBRID_MLOPS_CUR_DATABASE", "").strip() or athena_database()


#: An AWS region name (``eu-west-1``, ``us-gov-west-1``) and an S3 bucket name (3..63 characters).
REGION_PATTERN = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


def backup_bucket() -> str:
    """The versioned backup bucket of ``backup_ml_assets`` (``HYBRID_MLOPS_BACKUP_BUCKET``)."""
    import re

    value = _setting("HYBRID_MLOPS_BACKUP_BUCKET")
    if not re.fullmatch(BUCKET_PATTERN, value) or ".." in value:
        raise ValueError(f"HYBRID_MLOPS_BACKUP_BUCKET={value!r} is not an S3 bucket name "
                         "(3..63 lowercase letters, digits, dots and hyphens)")
    if value == bucket():
        raise ValueError(f"HYBRID_MLOPS_BACKUP_BUCKET={value!r} is the artifacts bucket; a backup needs its own bucket")
    return value


def backup_region() -> str:
    """The backup bucket's region (``HYBRID_MLOPS_BACKUP_REGION``): another region than the artifacts'."""
    import re

    value = _setting("HYBRID_MLOPS_BACKUP_REGION")
    if not re.fullmatch(REGION_PATTERN, value):
        raise ValueError(f"HYBRID_MLOPS_BACKUP_REGION={value!r} is not an AWS region name (e.g. eu-west-1)")
    if value == region():
        raise ValueError(f"HYBRID_MLOPS_BACKUP_REGION={value!r} is the region of the artifacts "
                         "(HYBRID_MLOPS_REGION); a backup that survives a region's loss lives in another one")
    return value


def aws_settings() -> dict[str, str]:
    """Every ``aws`` setting, resolved (raises :class:`SettingMissing` naming the first one missing)."""
    return {"bucket": bucket(), "sagemaker_role_arn": sagemaker_role_arn(), "region": region(),
            "athena_workgroup": athena_workgroup(), "athena_database": athena_database(),
            "athena_output_location": athena_output_location()}


def local_state_dir() -> Path:
    """Where the local target keeps its working files (training scratch dirs, server pids, logs)."""
    path = Path(os.environ.get("HYBRID_MLOPS_LOCAL_DIR", PROJECT_ROOT / ".local"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def training_python() -> str:
    """Interpreter of the training environment (local target)."""
    return os.environ.get("HYBRID_MLOPS_TRAINING_PYTHON", str(PROJECT_ROOT / ".venv-train" / "bin" / "python"))


def serving_python() -> str:
    """Interpreter of the serving environment (local target)."""
    return os.environ.get("HYBRID_MLOPS_SERVING_PYTHON", str(PROJECT_ROOT / ".venv-serve" / "bin" / "python"))


def git_sha() -> str:
    """The project's commit, recorded in model lineage (env override for MWAA bundles without .git)."""
    if sha := os.environ.get("HYBRID_MLOPS_GIT_SHA"):
        return sha
    head = PROJECT_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_path = PROJECT_ROOT / ".git" / ref[5:]
            if ref_path.exists():
                return ref_path.read_text().strip()
            packed = PROJECT_ROOT / ".git" / "packed-refs"
            for line in packed.read_text().splitlines() if packed.exists() else ():
                if line.endswith(ref[5:]):
                    return line.split()[0]
            return "unknown"
        return ref
    except OSError:
        return "unknown"
