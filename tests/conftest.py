"""Shared fixtures: a real moto server on loopback, an Airflow metadata DB, the model spec.

Environment for Airflow is set before anything imports it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="hybrid-mlops-airflow-")
os.environ.update(
    AIRFLOW_HOME=_AIRFLOW_HOME,
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
    AIRFLOW__CORE__UNIT_TEST_MODE="True",
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
    AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
    HYBRID_MLOPS_TARGET="local",
    HYBRID_MLOPS_BUCKET="hybrid-mlops-test",
    HYBRID_MLOPS_LOCAL_DIR=os.path.join(_AIRFLOW_HOME, "local"),
    AWS_DEFAULT_REGION="us-west-2",
)

import pytest  # noqa: E402

from hybrid_mlops.local.moto import MotoServer  # noqa: E402
# Every AWS request a test sends is checked against botocore's service model (moto accepts what AWS rejects).
from strict_aws import strict_aws_requests  # noqa: E402,F401

ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="session")
def moto_server():
    """One moto server for the session; each test that asks for ``aws`` starts from a reset server."""
    server = MotoServer(log_path=os.path.join(_AIRFLOW_HOME, "moto.log")).start()
    server.apply_environ()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server):
    """A clean moto server with the artifacts bucket created; yields the server."""
    import boto3

    moto_server.reset()
    boto3.client("s3").create_bucket(
        Bucket=os.environ["HYBRID_MLOPS_BUCKET"],
        CreateBucketConfiguration={"LocationConstraint": os.environ["AWS_DEFAULT_REGION"]},
    )
    yield moto_server


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh Airflow metadata database (sqlite) for the session."""
    from airflow.utils import db

    db.resetdb()
    yield


@pytest.fixture(scope="session")
def spec():
    from hybrid_mlops.specs import load_spec

    return load_spec(ROOT / "include" / "models" / "fraud-detection.yaml")


@pytest.fixture(scope="session")
def artifacts_dir():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def train_locally(workdir: Path, *, rows: int = 20000, epochs: int = 2, extra_args: tuple = (), env=None):
    """Run the real training entry point (training env) on generated data; returns (dir, log)."""
    import io
    import subprocess
    import tarfile

    import json

    from hybrid_mlops.data.generator import generate, write_parquet
    from hybrid_mlops.data.sources import schema_document
    from hybrid_mlops.specs import load_spec
    from hybrid_mlops.training_bundle import build_source_bundle

    code = workdir / "code"
    if not code.exists():
        tarfile.open(fileobj=io.BytesIO(build_source_bundle("include/training"))).extractall(code, filter="data")
        for name, n, seed in (("train", rows, 11), ("validation", rows // 4, 12)):
            (workdir / name).mkdir(parents=True, exist_ok=True)
            write_parquet(generate(n, seed=seed), workdir / name / "part-0.parquet")
        (workdir / "config").mkdir(parents=True, exist_ok=True)
        spec = load_spec(ROOT / "include" / "models" / "fraud-detection.yaml")
        (workdir / "config" / "schema.json").write_text(json.dumps(schema_document(spec)))
    cmd = [str(ROOT / ".venv-train" / "bin" / "python"), "train.py", "--epochs", str(epochs),
           "--batch-size", "256", "--learning-rate", "0.003", *extra_args]
    full_env = {
        "PATH": os.environ["PATH"], "SM_MODEL_DIR": str(workdir / "model"),
        "SM_CHANNEL_TRAIN": str(workdir / "train"), "SM_CHANNEL_VALIDATION": str(workdir / "validation"),
        "SM_CHANNEL_CONFIG": str(workdir / "config"),
        "SM_CHECKPOINT_DIR": str(workdir / "checkpoints"), "SM_OUTPUT_DATA_DIR": str(workdir / "output"),
        **(env or {}),
    }
    proc = subprocess.run(cmd, cwd=code, env=full_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir / "model", proc.stdout


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> Path:
    """A real model directory (what ``model.tar.gz`` holds) from a short run of the training entry point."""
    model_dir, _ = train_locally(tmp_path_factory.mktemp("trained"))
    return model_dir


@pytest.fixture(scope="session")
def airflow_stack(request):
    """One real Airflow for the session (tests/real_airflow.py): api-server, scheduler (LocalExecutor),
    dag-processor, triggerer, PostgreSQL and its own moto server, on free loopback ports."""
    from real_airflow import start_real_airflow

    real = start_real_airflow()
    yield real
    real.close(keep_logs=request.session.testsfailed > 0)
