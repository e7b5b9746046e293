"""Amazon MWAA 3.3.1: requirements in MWAA's form, the bundle as MWAA lays it out, the deploy.

- The requirements install as MWAA installs them (``pip3 install --constraint <MWAA essential
  constraints> -r requirements.txt``) into a fresh Python 3.12 venv: the slow one (about 2-4 minutes
  with a warm pip cache on 2 cores, more on the first run; the shared cache is ``~/.cache/pip``).
- Every DAG imports from an unpacked bundle (DAGs folder = the bundle's ``dags/``, plugins folder =
  ``plugins.zip`` unzipped), in a fresh Airflow process with no other path help.
- The deploy's S3 part runs against the moto server. moto has no MWAA: ``UpdateEnvironment`` and
  ``GetEnvironment`` go to botocore's Stubber, and the request is checked against botocore's service
  model with every constraint (pattern, length, enum) by ``strict_aws``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from strict_aws import request_violations

ROOT = Path(__file__).resolve().parents[1]
MWAA_DIR = ROOT / "include" / "mwaa"
ROLE = "arn:aws:iam::123456789012:role/hybrid-mlops-sagemaker-execution"


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if m := re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)", line):
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(3)
    return out


# ---------------------------------------------------------------------------------------------------
# requirements, lock and constraints


def test_requirements_are_mwaa_331_form():
    from hybrid_mlops.mwaa.bundle import CONSTRAINT_LINE, check_requirements

    text = (ROOT / "requirements.txt").read_text()
    check_requirements(text)  # raises when the constraint line or Airflow's pin is wrong
    assert re.search(r"-c |--constraint ", text), "MWAA would add its own constraints file"
    assert CONSTRAINT_LINE.split('"')[1] == "/usr/local/airflow/dags/include/mwaa/constraints.txt"
    assert "constraints-3.3.1/constraints-3.12.txt" in (MWAA_DIR / "constraints.txt").read_text()[:500]

    ours, airflow, essential = (_pins(ROOT / "requirements.txt"), _pins(MWAA_DIR / "constraints.txt"),
                                _pins(MWAA_DIR / "mwaa-essential-constraints.txt"))
    assert ours["apache-airflow"] == essential["apache-airflow"] == "3.3.1"
    for name, version in ours.items():  # every pin is the version the constraints set, where they set one
        assert airflow.get(name, version) == version, f"requirements.txt: {name}=={version}, constraints say {airflow[name]}"
        assert essential.get(name, version) == version, name
    lock = _pins(ROOT / "requirements.lock")
    for name, version in {**airflow, **essential}.items():  # the lock is resolved under both files
        assert lock.get(name, version) == version, f"requirements.lock: {name}=={lock[name]}, constraints say {version}"
    for name, version in ours.items():
        assert lock[name] == version, name
    assert "psycopg2-binary" in lock and "asyncpg" in lock  # Postgres drivers for a real Airflow
    assert not {"torch", "onnxruntime", "kserve"} & set(lock)


def test_airflow_env_is_python_312():
    """The suite's own env is MWAA's interpreter line (bin/setup builds .venv with Python 3.12)."""
    assert sys.version_info[:2] == (3, 12), sys.version


@pytest.mark.timeout(900)
def test_requirements_install_as_mwaa_installs_them(tmp_path):
    """``pip3 install --constraint mwaa-essential -r requirements.txt`` in a fresh Python 3.12 venv.

    requirements.txt is installed as written, its constraint line pointing at the bundle's copy of
    include/mwaa/constraints.txt where MWAA would find it (the DAGs folder, here a temp dir)."""
    import shutil

    from hybrid_mlops.mwaa.bundle import CONSTRAINT_LINE, MWAA_DAGS_FOLDER

    assert sys.version_info[:2] == (3, 12), "the suite runs on Python 3.12 (bin/setup); MWAA 3.3.1's interpreter"
    python = sys.executable  # venv makes the new env from this one's base interpreter, with its own pip
    dags = tmp_path / "dags"
    (dags / "include" / "mwaa").mkdir(parents=True)
    shutil.copy(MWAA_DIR / "constraints.txt", dags / "include" / "mwaa" / "constraints.txt")
    text = (ROOT / "requirements.txt").read_text()
    req = tmp_path / "requirements.txt"
    req.write_text(text.replace(CONSTRAINT_LINE, CONSTRAINT_LINE.replace(MWAA_DAGS_FOLDER, str(dags))))
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    # pip as MWAA runs it: no pip config file of this machine (its constraints, extra indexes, wheel
    # folders); only where the index is and how to trust it pass through. The download cache is shared.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({k: v for k, v in os.environ.items() if k in ("PIP_INDEX_URL", "PIP_CERT", "PIP_DEFAULT_TIMEOUT")})
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    proc = subprocess.run([str(venv / "bin" / "pip3"), "install", "--disable-pip-version-check", "--no-input",
                           "--constraint", str(MWAA_DIR / "mwaa-essential-constraints.txt"), "-r", str(req)],
                          env=env, capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    check = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import sys, airflow, airflow.providers.amazon, airflow.providers.cncf.kubernetes, duckdb;"
                            "from importlib.metadata import version as v;"
                            "print(sys.version_info[:2], v('apache-airflow'), v('apache-airflow-providers-amazon'),"
                            " v('boto3'), v('numpy'))"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    assert "(3, 12) 3.3.1 9.34.0 1.43.56 2.5.1" in check.stdout, check.stdout


# ---------------------------------------------------------------------------------------------------
# the bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from hybrid_mlops.mwaa.bundle import build_bundle, startup_env

    out = tmp_path_factory.mktemp("mwaa") / "bundle"
    env = startup_env(bucket="hybrid-mlops-artifacts", sagemaker_role_arn=ROLE, region="us-west-2", git_sha="abc123")
    manifest = build_bundle(out, env)
    return out, manifest


def test_bundle_layout(bundle):
    out, manifest = bundle
    dags = out / "dags"
    assert sorted(p.name for p in dags.glob("*.py")) == sorted(p.name for p in (ROOT / "dags").glob("*.py"))
    assert "include/" in (dags / ".airflowignore").read_text().splitlines()
    for rel in ("include/models/fraud-detection.yaml", "include/training/train.py", "include/mwaa/constraints.txt",
                "include/kserve/inferenceservice-v1beta1.schema.json", "include/pricing/sagemaker-training.json"):
        assert (dags / rel).is_file(), rel
    assert not (dags / "include" / "docker").exists() and not list(dags.rglob("__pycache__"))
    names = zipfile.ZipFile(out / "plugins.zip").namelist()
    assert "hybrid_mlops_plugin.py" in names and "hybrid_mlops/settings.py" in names  # contents at the root
    assert not any(n.startswith("plugins/") or n.endswith(".pyc") for n in names)
    assert (out / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()
    startup = (out / "startup.sh").read_text()
    assert "export HYBRID_MLOPS_HOME=/usr/local/airflow/dags" in startup
    assert "export HYBRID_MLOPS_TARGET=aws" in startup and "export HYBRID_MLOPS_GIT_SHA=abc123" in startup
    assert set(manifest["files"]) >= {"plugins.zip", "requirements.txt", "startup.sh", "dags/retrain.py"}
    sh = subprocess.run(["sh", "-n", str(out / "startup.sh")], capture_output=True, text=True)
    assert sh.returncode == 0, sh.stderr


def test_bundle_is_reproducible(bundle, tmp_path):
    from hybrid_mlops.mwaa.bundle import build_bundle, startup_env

    env = startup_env(bucket="hybrid-mlops-artifacts", sagemaker_role_arn=ROLE, region="us-west-2", git_sha="abc123")
    again = build_bundle(tmp_path / "again", env)
    assert again["files"]["plugins.zip"] == bundle[1]["files"]["plugins.zip"]  # no new object version when unchanged


@pytest.mark.parametrize("kwargs, message", [
    ({"bucket": "My_Bucket"}, "--bucket 'My_Bucket': not an S3 bucket name"),
    ({"sagemaker_role_arn": "sagemaker-role"}, "--sagemaker-role-arn 'sagemaker-role': not an IAM role ARN"),
    ({"region": "us-west"}, "--region 'us-west': not an AWS region name"),
    ({"extra": {"AWS_REGION": "eu-west-1"}}, "AWS_REGION is set by MWAA itself"),
])
def test_bundle_settings_errors_name_the_option(kwargs, message):
    from hybrid_mlops.mwaa.bundle import BundleError, startup_env, startup_script

    base = {"bucket": "b-1", "sagemaker_role_arn": ROLE, "region": "us-west-2", "git_sha": "x"}
    with pytest.raises(BundleError) as err:
        startup_script(startup_env(**{**base, **kwargs}))
    assert message in str(err.value)


def test_requirements_without_constraint_line_are_refused():
    from hybrid_mlops.mwaa.bundle import BundleError, check_requirements

    with pytest.raises(BundleError, match="needs the line --constraint"):
        check_requirements("apache-airflow==3.3.1\n")
    with pytest.raises(BundleError, match="MWAA 3.3.1 pins apache-airflow==3.3.1"):
        check_requirements((ROOT / "requirements.txt").read_text().replace("apache-airflow==3.3.1", "apache-airflow==3.3.2"))


IMPORT_SCRIPT = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow import plugins_manager
bag = DagBag()
plugins, errors = plugins_manager._get_plugins()
import hybrid_mlops.settings as s
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": {k: v[-800:] for k, v in bag.import_errors.items()},
                  "files": sorted(st.file for st in bag.dagbag_stats), "plugins": [p.name for p in plugins],
                  "plugin_errors": errors, "home": str(s.PROJECT_ROOT), "sys_path": sys.path}))
"""


def test_every_dag_imports_from_the_unpacked_bundle(bundle, tmp_path):
    """MWAA's layout: dags/ synced, plugins.zip unzipped into plugins/, startup.sh sourced; no PYTHONPATH,
    no HYBRID_MLOPS_HOME."""
    out, _ = bundle
    airflow_home = tmp_path / "airflow"
    (airflow_home / "plugins").mkdir(parents=True)
    dags = airflow_home / "dags"
    import shutil

    shutil.copytree(out / "dags", dags)
    zipfile.ZipFile(out / "plugins.zip").extractall(airflow_home / "plugins")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AIRFLOW_HOME": str(airflow_home),
           "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__PLUGINS_FOLDER": str(airflow_home / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "HYBRID_MLOPS_TARGET": "aws", "AWS_DEFAULT_REGION": "us-west-2",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home}/airflow.db"}
    # MWAA sources startup.sh before each component starts; HYBRID_MLOPS_HOME is unset again to show that
    # the package finds include/ in the DAGs folder by itself.
    (tmp_path / "import_dags.py").write_text(IMPORT_SCRIPT)
    shell = f'. {out / "startup.sh"} && unset HYBRID_MLOPS_HOME && exec "$0" import_dags.py'
    proc = subprocess.run(["sh", "-c", shell, sys.executable], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    checkout = {str(ROOT), str(ROOT / "plugins"), str(ROOT / "dags"), str(ROOT / "include")}
    assert not checkout & set(result["sys_path"]), result["sys_path"]  # nothing of the checkout on the path
    assert result["errors"] == {}, result["errors"]
    assert result["home"] == str(dags)
    assert {"retrain_fraud_detection", "deploy_fraud_detection", "monitor_fraud_detection", "cost_report"} <= set(result["dags"])
    assert not [f for f in result["files"] if "/include/" in f], result["files"]  # .airflowignore keeps include/ out
    assert "hybrid_mlops" in result["plugins"] and not result["plugin_errors"]


# ---------------------------------------------------------------------------------------------------
# the deploy: S3 on the moto server, MWAA on botocore's Stubber (moto has no MWAA)


def _source_bucket(name="hybrid-mlops-mwaa-source", versioning=True):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    if versioning:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3, name


def _mwaa_stub():
    import boto3
    from botocore.stub import Stubber

    mwaa = boto3.client("mwaa", region_name="us-west-2")
    return mwaa, Stubber(mwaa)


ARN = "arn:aws:airflow:us-west-2:123456789012:environment/hybrid-mlops"


def test_deploy_uploads_versions_and_updates_the_environment(aws, bundle):
    from botocore.stub import ANY

    from hybrid_mlops.mwaa.deploy import deploy

    out, manifest = bundle
    s3, bucket = _source_bucket()
    s3.put_object(Bucket=bucket, Key="dags/old_dag.py", Body=b"# removed from the project")
    mwaa, stub = _mwaa_stub()
    expected = {"Name": "hybrid-mlops", "DagS3Path": "dags", "PluginsS3Path": "plugins.zip",
                "PluginsS3ObjectVersion": ANY, "RequirementsS3Path": "requirements.txt",
                "RequirementsS3ObjectVersion": ANY, "StartupScriptS3Path": "startup.sh",
                "StartupScriptS3ObjectVersion": ANY}
    stub.add_response("update_environment", {"Arn": ARN}, expected)
    for status in ("UPDATING", "AVAILABLE"):
        stub.add_response("get_environment", {"Environment": {"Name": "hybrid-mlops", "Status": status}},
                          {"Name": "hybrid-mlops"})
    with stub:
        result = deploy(s3=s3, mwaa=mwaa, bucket=bucket, environment="hybrid-mlops", bundle=out, wait=True,
                        poll_seconds=0)
    stub.assert_no_pending_responses()
    assert request_violations("mwaa", "UpdateEnvironment", result["request"]) == []
    assert result["status"] == "AVAILABLE" and result["environment_arn"] == ARN
    for key, version in result["versions"].items():  # the versions passed are the objects uploaded
        head = s3.head_object(Bucket=bucket, Key=key, VersionId=version)
        assert head["ContentLength"] == manifest["files"][key]["bytes"]
    assert result["request"]["PluginsS3ObjectVersion"] == result["versions"]["plugins.zip"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="dags/")["Contents"]}
    assert keys == {"dags/" + name[len("dags/"):] for name in manifest["files"] if name.startswith("dags/")}
    assert "dags/include/models/fraud-detection.yaml" in keys and "dags/old_dag.py" not in keys
    assert result["dags"]["deleted"] == 1

    # Deploying the same bundle again uploads no DAG file and keeps the plugins.zip bytes.
    stub.add_response("update_environment", {"Arn": ARN}, expected)
    with stub:
        again = deploy(s3=s3, mwaa=mwaa, bucket=bucket, environment="hybrid-mlops", bundle=out)
    assert again["dags"] == {"uploaded": 0, "unchanged": len(keys), "deleted": 0}
    assert again["versions"]["plugins.zip"] != result["versions"]["plugins.zip"]


def test_deploy_refuses_an_unversioned_bucket(aws, bundle):
    from hybrid_mlops.mwaa.deploy import DeployError, deploy

    s3, bucket = _source_bucket("hybrid-mlops-unversioned", versioning=False)
    mwaa, stub = _mwaa_stub()
    with stub, pytest.raises(DeployError, match="versioning is off; MWAA needs a versioned source bucket"):
        deploy(s3=s3, mwaa=mwaa, bucket=bucket, environment="hybrid-mlops", bundle=bundle[0])
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # nothing uploaded


def test_deploy_quotes_a_failed_update(aws, bundle):
    from hybrid_mlops.mwaa.deploy import DeployError, deploy

    s3, bucket = _source_bucket()
    mwaa, stub = _mwaa_stub()
    stub.add_response("update_environment", {"Arn": ARN})
    stub.add_response("get_environment", {"Environment": {
        "Name": "hybrid-mlops", "Status": "AVAILABLE",
        "LastUpdate": {"Status": "FAILED", "Error": {"ErrorCode": "INCORRECT_CONFIGURATION",
                                                     "ErrorMessage": "requirements.txt failed to install"}}}})
    with stub, pytest.raises(DeployError, match="INCORRECT_CONFIGURATION: requirements.txt failed to install"):
        deploy(s3=s3, mwaa=mwaa, bucket=bucket, environment="hybrid-mlops", bundle=bundle[0], wait=True,
               poll_seconds=0)


def test_strict_model_check_catches_what_mwaa_rejects():
    """The validator used above does reject requests MWAA would reject (pattern, length, enum)."""
    from hybrid_mlops.mwaa.deploy import update_request

    bad = update_request("1-starts-with-a-digit", dags_prefix="dags",
                         versions={"plugins.zip": "", "requirements.txt": "v", "startup.sh": "v"})
    bad["WebserverAccessMode"] = "PUBLIC"
    errors = request_violations("mwaa", "UpdateEnvironment", bad)
    assert any("Name" in e and "pattern" in e for e in errors), errors
    assert any("PluginsS3ObjectVersion" in e and "minimum" in e for e in errors), errors
    assert any("WebserverAccessMode" in e for e in errors), errors
