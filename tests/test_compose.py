"""docker-compose.yaml and its image, checked without Docker (none on the test machines).

The file is validated against the Compose specification's JSON schema (tests/data/compose/), and
what makes the local target work for real in it is asserted: a writable state dir outside the
read-only project mount, the training and serving envs built into the image, the moto server at the
version the suite runs on, Airflow and Python at MWAA 3.3.1's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())  # anchors and << merges resolved


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "include" / "docker" / "airflow.Dockerfile").read_text()


def test_valid_against_the_compose_specification(compose):
    schema = json.loads((ROOT / "tests" / "data" / "compose" / "compose_spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_does_reject_a_broken_file(compose):
    """The schema check has teeth: an unknown service key and a wrong type are errors."""
    schema = json.loads((ROOT / "tests" / "data" / "compose" / "compose_spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["airflow-scheduler"]["comand"] = "scheduler"
    broken["services"]["postgres"]["ports"] = "5432"
    assert len(list(jsonschema.Draft201909Validator(schema).iter_errors(broken))) >= 2


def _mounts(service: dict) -> list[tuple[str, str, bool]]:
    out = []
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def test_state_is_writable_and_outside_the_read_only_project(compose):
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        env = service["environment"]
        mounts = _mounts(service)
        project = [target for source, target, ro in mounts if source in ("./", ".", "./dags", "./plugins")]
        assert project and all(ro for source, _, ro in mounts if source.startswith(".")), f"{name}: project mounts must be :ro"
        state = PurePosixPath(env["HYBRID_MLOPS_LOCAL_DIR"])
        assert not any(state.is_relative_to(p) for p in project), f"{name}: state dir inside a read-only mount"
        writable = [(s, t) for s, t, ro in mounts if not ro and state.is_relative_to(t)]
        assert writable and writable[0][0] in compose["volumes"], f"{name}: {state} is not a writable named volume"
        assert env["HYBRID_MLOPS_HOME"] in project


def test_training_and_serving_envs_are_built_into_the_image(compose, dockerfile):
    image_env = dict(re.findall(r"(HYBRID_MLOPS_[A-Z_]+)=(\S+)", dockerfile))
    for var, lock in (("HYBRID_MLOPS_TRAINING_PYTHON", "include/training/requirements.lock"),
                      ("HYBRID_MLOPS_SERVING_PYTHON", "include/serving/requirements.lock")):
        venv = image_env[var].removesuffix("/bin/python")
        assert (ROOT / lock).is_file() and f"COPY --chown=airflow:0 {lock} " in dockerfile
        assert re.search(rf"VIRTUAL_ENV={re.escape(venv)} uv pip sync ", dockerfile), f"{venv} not built from {lock}"
    assert image_env["HYBRID_MLOPS_LOCAL_DIR"] == compose["x-airflow"]["environment"]["HYBRID_MLOPS_LOCAL_DIR"]
    for source in re.findall(r"^COPY (?:--\S+ )*(\S+) ", dockerfile, re.M):
        assert (ROOT / source).exists(), f"airflow.Dockerfile copies {source}, which does not exist"


def test_moto_is_the_tested_version_and_airflow_is_mwaas(compose, dockerfile):
    lock = dict(re.findall(r"^([a-z0-9\-]+)==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M))
    dev = (ROOT / "requirements-dev.txt").read_text()
    assert f"moto[server]=={lock['moto']}" in dev
    moto = compose["services"]["moto"]
    assert moto["image"] == compose["x-airflow"]["image"]  # the project's image: moto from requirements.lock
    assert moto["command"][:3] == ["python", "-m", "moto.server"]
    assert "COPY --chown=airflow:0 requirements.lock " in dockerfile and "runtime.lock" in dockerfile
    base = re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:(\S+)-python(\S+)$", dockerfile, re.M)
    assert base and base.groups() == (lock["apache-airflow"], "3.12") and lock["apache-airflow"] == "3.3.1"
    assert "postgresql+psycopg2://" in compose["x-airflow"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert "psycopg2-binary" in lock


def test_every_component_is_there_on_loopback_ports(compose):
    services = compose["services"]
    commands = {n: s.get("command") for n, s in services.items()}
    for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert component in commands.values(), component
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is published on every interface"
    secrets = {services[n]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for n in AIRFLOW_SERVICES}
    assert len(secrets) == 1
