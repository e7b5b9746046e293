"""The CDK app (infra/): synthesized once in its own env (.venv-infra, jsii over Node), asserted on the
templates (infra/tests/test_stacks.py) and linted with cfn-lint; this runs that suite as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv-infra" / "bin" / "python"


@pytest.mark.skipif(not PYTHON.exists(), reason=".venv-infra is missing: run bin/setup")
@pytest.mark.skipif(shutil.which("node") is None, reason="the CDK's jsii runtime needs Node.js on PATH")
def test_cdk_app_synthesizes_and_lints_clean():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "HYBRID_MLOPS"))}
    proc = subprocess.run([str(PYTHON), "-m", "pytest", "infra/tests", "-q", "--durations=3"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
