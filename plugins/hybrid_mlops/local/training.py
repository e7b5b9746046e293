"""Run a SageMaker ``CreateTrainingJob`` request on this machine, under the container contract.

moto accepts the same request SageMaker does and marks the job ``Completed`` without running it;
this runner does the work the training cluster would: it lays out ``/opt/ml`` in a scratch
directory, downloads the channels, the source bundle and any checkpoints from S3, starts one
process per instance (ranks wired through ``SM_HOSTS`` / ``MASTER_ADDR`` on loopback), applies the
job's metric-definition regexes to the log, syncs checkpoints back and uploads ``model.tar.gz`` to
the key SageMaker would use: ``<S3OutputPath>/<job>/output/model.tar.gz``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections import deque
from pathlib import Path

from hybrid_mlops.layout import split_s3_uri
from hybrid_mlops.local.moto import free_port
from hybrid_mlops.settings import local_state_dir, training_python

log = logging.getLogger(__name__)


class LocalTrainingError(RuntimeError):
    """The entry point failed; the message carries its exit code and last log lines (a FailureReason)."""


def _download_prefix(s3, uri: str, dest: Path) -> int:
    bucket, prefix = split_s3_uri(uri)
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):].lstrip("/") or os.path.basename(obj["Key"])
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            count += 1
    return count


def _upload_dir(s3, directory: Path, uri: str) -> int:
    bucket, prefix = split_s3_uri(uri)
    count = 0
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}")
            count += 1
    return count


def _tar_dir(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return buf.getvalue()


def parse_metrics(lines, definitions: list[dict]) -> dict[str, float]:
    """Last value of each metric definition's regex over the log lines (as SageMaker reports)."""
    compiled = [(d["Name"], re.compile(d["Regex"])) for d in definitions]
    found: dict[str, float] = {}
    for line in lines:
        for name, rx in compiled:
            m = rx.search(line)
            if m:
                try:
                    found[name] = float(m.group(1))
                except ValueError:
                    pass
    return found


def run_training_job(config: dict, s3_client, *, timeout: float | None = None) -> dict:
    """Run one training job request locally. Returns metrics, timings and the artifact URI."""
    job = config["TrainingJobName"]
    hps = dict(config.get("HyperParameters", {}))
    if "sagemaker_program" not in hps:
        raise LocalTrainingError(
            f"{job}: no sagemaker_program hyperparameter: the spec trains in its own image (training.entry_point: "
            "null), which the local target cannot run (no containers here); give training.source_dir and "
            "entry_point (script mode) to train locally"
        )
    program = json.loads(hps.pop("sagemaker_program"))
    submit_dir = json.loads(hps.pop("sagemaker_submit_directory"))
    hps = {k: v for k, v in hps.items() if not k.startswith("sagemaker_")}
    count = int(config["ResourceConfig"]["InstanceCount"])
    hosts = [f"algo-{i + 1}" for i in range(count)]

    root = local_state_dir() / "training" / job
    shutil.rmtree(root, ignore_errors=True)
    opt = root / "opt" / "ml"
    # CheckpointConfig.LocalPath (/opt/ml/checkpoints) maps into the scratch /opt/ml like the rest
    code, model_dir, output_dir = opt / "code", opt / "model", opt / "output" / "data"
    checkpoints = opt / "checkpoints"
    for d in (code, model_dir, output_dir, checkpoints, opt / "input" / "config"):
        d.mkdir(parents=True, exist_ok=True)

    bucket, key = split_s3_uri(submit_dir)
    tarfile.open(fileobj=io.BytesIO(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())).extractall(
        code, filter="data"
    )
    channels = {}
    for channel in config.get("InputDataConfig", []):
        name = channel["ChannelName"]
        dest = opt / "input" / "data" / name
        n = _download_prefix(s3_client, channel["DataSource"]["S3DataSource"]["S3Uri"], dest)
        log.info("channel %s: %d file(s) from %s", name, n, channel["DataSource"]["S3DataSource"]["S3Uri"])
        channels[name] = dest
    checkpoint_uri = config.get("CheckpointConfig", {}).get("S3Uri")
    if checkpoint_uri:
        n = _download_prefix(s3_client, checkpoint_uri, checkpoints)
        log.info("checkpoints: %d file(s) restored from %s", n, checkpoint_uri)
    (opt / "input" / "config" / "hyperparameters.json").write_text(json.dumps(config.get("HyperParameters", {})))
    (opt / "input" / "config" / "inputdataconfig.json").write_text(
        json.dumps({c["ChannelName"]: {"TrainingInputMode": "File"} for c in config.get("InputDataConfig", [])})
    )

    args = []
    for k, v in hps.items():
        args += [f"--{k}", str(json.loads(v)) if v.startswith('"') else v]
    master_port = str(free_port())
    base_env = {
        **os.environ,
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(output_dir),
        "SM_CHECKPOINT_DIR": str(checkpoints),
        "SM_HOSTS": json.dumps(hosts),
        "SM_NUM_GPUS": "0",
        "SM_HPS": json.dumps(hps),
        "SM_LOCAL_WORLD": str(count),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": master_port,
        "PYTHONUNBUFFERED": "1",
        **{f"SM_CHANNEL_{n.upper()}": str(p) for n, p in channels.items()},
    }
    for var in ("AWS_ENDPOINT_URL", "PYTHONPATH"):
        base_env.pop(var, None)  # the job reaches nothing but its local layout

    started = time.time()
    tail: deque[str] = deque(maxlen=40)
    lines: list[str] = []
    procs = []
    for host in hosts:
        env = {**base_env, "SM_CURRENT_HOST": host}
        procs.append(subprocess.Popen([training_python(), program, *args], cwd=code, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    def pump(proc, host):
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(f"[{host}] {line}")
            if host == hosts[0]:
                lines.append(line)
                log.info("[%s] %s", host, line)

    pumps = [threading.Thread(target=pump, args=(p, h), daemon=True) for p, h in zip(procs, hosts)]
    for t in pumps:
        t.start()
    deadline = None if timeout is None else started + timeout
    failed = None
    for proc, host in zip(procs, hosts):
        try:
            rc = proc.wait(None if deadline is None else max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            failed = f"MaxRuntimeExceeded: the job ran longer than {timeout:.0f}s"
            break
        if rc != 0 and failed is None:
            failed = f"AlgorithmError: {host} exited with code {rc}"
    for t in pumps:
        t.join(5)
    seconds = time.time() - started
    if checkpoint_uri:
        n = _upload_dir(s3_client, checkpoints, checkpoint_uri)
        log.info("checkpoints: %d file(s) synced to %s", n, checkpoint_uri)
    if failed:
        raise LocalTrainingError(f"{failed}. Last log lines:\n" + "\n".join(tail))

    out_bucket, out_prefix = split_s3_uri(config["OutputDataConfig"]["S3OutputPath"].rstrip("/"))
    artifact_key = f"{out_prefix}/{job}/output/model.tar.gz".lstrip("/")
    s3_client.put_object(Bucket=out_bucket, Key=artifact_key, Body=_tar_dir(model_dir))
    if any(output_dir.iterdir()):
        s3_client.put_object(Bucket=out_bucket, Key=f"{out_prefix}/{job}/output/output.tar.gz".lstrip("/"),
                             Body=_tar_dir(output_dir))
    metric_defs = config.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
    return {
        "TrainingJobName": job,
        "S3ModelArtifacts": f"s3://{out_bucket}/{artifact_key}",
        "TrainingTimeInSeconds": round(seconds, 3),
        "BillableTimeInSeconds": round(seconds * count, 3),
        "FinalMetrics": parse_metrics(lines, metric_defs),
    }
