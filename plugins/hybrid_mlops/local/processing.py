"""A SageMaker Processing job request run on this machine (the ``local`` target), under its container contract.

Each ``ProcessingInputs[].S3Input`` is downloaded to its ``LocalPath`` (rooted in a scratch folder instead of
``/opt/ml/processing``), the ``AppSpecification``'s entry point runs with ``python3`` replaced by the
serving env's interpreter (``.venv-serve``: onnxruntime; the predictor package from ``include/serving``
stands in for the image's ``/app``), and each ``ProcessingOutputConfig`` output's ``LocalPath`` is uploaded
to its ``S3Uri``, as SageMaker does at the end of the job.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from hybrid_mlops import settings
from hybrid_mlops.layout import split_s3_uri

log = logging.getLogger(__name__)


class LocalProcessingError(RuntimeError):
    """The local run of a processing job failed; the message quotes the script's last output."""


def _download(s3, uri: str, dest: Path) -> int:
    bucket, prefix = split_s3_uri(uri)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []) or []:
            rel = obj["Key"][len(prefix):].lstrip("/") or obj["Key"].rsplit("/", 1)[-1]
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            n += 1
    return n


def run_processing_job(config: dict, s3_client, *, timeout: float | None = None) -> dict:
    """Run one ``CreateProcessingJob`` request locally; returns ``{"seconds", "outputs": {name: uri}}``."""
    name = config["ProcessingJobName"]
    root = settings.local_state_dir() / "processing" / name
    shutil.rmtree(root, ignore_errors=True)
    base = "/opt/ml/processing"

    def local(path: str) -> Path:
        if not path.startswith(base):
            raise LocalProcessingError(f"{name}: LocalPath {path!r} must be under {base}")
        return root / path[len(base):].lstrip("/")

    for item in config.get("ProcessingInputs", []):
        s3_input = item["S3Input"]
        n = _download(s3_client, s3_input["S3Uri"], local(s3_input["LocalPath"]))
        if not n:
            raise LocalProcessingError(f"{name}: input {item['InputName']!r}: nothing at {s3_input['S3Uri']}")
    outputs = config.get("ProcessingOutputConfig", {}).get("Outputs", [])
    for item in outputs:
        local(item["S3Output"]["LocalPath"]).mkdir(parents=True, exist_ok=True)
    app = config["AppSpecification"]
    entry = [*app.get("ContainerEntrypoint", []), *app.get("ContainerArguments", [])]
    if entry and entry[0] in ("python", "python3"):
        entry[0] = settings.serving_python()
    cmd = [str(local(a)) if a.startswith(base) else a for a in entry]
    env = {"PATH": os.environ.get("PATH", ""), **config.get("Environment", {}),
           "PYTHONPATH": str(settings.PROJECT_ROOT / "include" / "serving")}
    t0 = time.monotonic()
    limit = timeout or config.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", 3600)
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=limit)
    if proc.returncode:
        raise LocalProcessingError(f"{name}: {cmd[1] if len(cmd) > 1 else cmd[0]} exited {proc.returncode}: "
                                   f"{(proc.stderr or proc.stdout)[-2000:]}")
    log.info("%s: %s", name, proc.stderr.strip()[-500:])
    uris = {}
    for item in outputs:
        out = item["S3Output"]
        bucket, prefix = split_s3_uri(out["S3Uri"])
        folder = local(out["LocalPath"])
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            s3_client.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder)}")
        uris[item["OutputName"]] = out["S3Uri"]
    return {"seconds": round(time.monotonic() - t0, 3), "outputs": uris}
