"""Fetch the registry's model artifact: a directory, a local ``model.tar.gz`` or an ``s3://`` URI.

S3 goes through boto3, which honours ``AWS_ENDPOINT_URL`` (the local target's moto server).
"""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
from pathlib import Path

logger = logging.getLogger("kserve.predictor")

REQUIRED_FILES = ("model.onnx", "input_schema.json")


class ArtifactError(RuntimeError):
    """The model URI cannot be resolved to a directory with the artifact contract."""


def _extract(tar_path: Path, dest: Path) -> None:
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{tar_path}: not a readable tar archive ({exc})") from exc


def _find_model_dir(root: Path, uri: str) -> Path:
    """``root`` itself, or the single sub-directory holding the files (archives packed with a folder)."""
    for candidate in (root, *sorted(p.parent for p in root.rglob("model.onnx"))):
        if all((candidate / name).is_file() for name in REQUIRED_FILES):
            return candidate
    raise ArtifactError(
        f"{uri}: no directory with {list(REQUIRED_FILES)} found; the artifact must be the training "
        "job's model.tar.gz (or its extracted contents)"
    )


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ArtifactError(f"{uri}: expected s3://bucket/key")
    return bucket, key


def _download_s3(uri: str, dest: Path) -> Path:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _split_s3(uri)
    s3 = boto3.client("s3")
    try:
        if key.endswith((".tar.gz", ".tgz", ".tar")):
            local = dest / "model.tar.gz"
            s3.download_file(bucket, key, str(local))
            _extract(local, dest / "model")
            local.unlink()
            return dest / "model"
        prefix = key.rstrip("/") + "/" if key else ""
        count = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if not rel or rel.endswith("/"):
                    continue
                target = dest / "model" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(target))
                count += 1
        if count == 0:
            raise ArtifactError(f"{uri}: no objects under this prefix")
        return dest / "model"
    except (BotoCoreError, ClientError) as exc:
        raise ArtifactError(f"{uri}: cannot download ({exc})") from exc


def resolve(uri: str, workdir: str | os.PathLike | None = None) -> Path:
    """A local directory holding ``model.onnx`` and ``input_schema.json`` for ``uri``.

    :param uri: a directory, a ``.tar.gz``, or ``s3://bucket/key`` (an archive or a prefix).
    :param workdir: where archives are extracted (a temporary directory when None).
    """
    if uri.startswith("s3://"):
        dest = Path(tempfile.mkdtemp(prefix="model-", dir=workdir))
        logger.info("Downloading model from %s", uri)
        root = _download_s3(uri, dest)
    else:
        path = Path(uri.removeprefix("file://")).expanduser()
        if path.is_dir():
            root = path
        elif path.is_file():
            root = Path(tempfile.mkdtemp(prefix="model-", dir=workdir))
            _extract(path, root)
        else:
            raise ArtifactError(f"{uri}: no such file or directory")
    model_dir = _find_model_dir(root, uri)
    logger.info("Model artifact at %s", model_dir)
    return model_dir
