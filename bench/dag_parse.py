"""DAG-file parse time per file (what ``airflow dags report`` shows), beside a peer DAG file.

Files are parsed one after another by Airflow's DagBag in one process, as a DAG processor does.
The peer, parsed first, is a two-task DAG built from the providers' own operators
(SageMakerTrainingOperator, KubernetesCreateResourceOperator): it pays the one-off import of Airflow
and the providers that any such DAG pays, so each project file's figure is what it adds on top.
Also checks that no DAG file imports torch, pandas or boto3 (or other heavy modules) at top level.
The specs folder holds the shipped models plus copies up to ``--specs`` models (default 10), so the
figures are those of a platform with that many models.

    .venv/bin/python bench/dag_parse.py [--specs 10]
"""

from __future__ import annotations

import ast
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 0.3
HEAVY = {"torch", "pandas", "boto3", "botocore", "onnxruntime", "kserve", "duckdb", "scipy", "kubernetes"}
PEER = '''"""Peer airflow dag: one SageMaker training task and one Kubernetes task, the providers' own operators."""
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
from airflow.providers.cncf.kubernetes.operators.resource import KubernetesCreateResourceOperator
with DAG("peer_provider_dag", schedule=None, start_date=datetime(2026, 1, 1)):
    SageMakerTrainingOperator(task_id="train", config={"TrainingJobName": "peer"})
    KubernetesCreateResourceOperator(task_id="apply", yaml_conf="kind: ConfigMap")
'''


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def parse_times(files: list[Path]) -> list[tuple[str, float, int, int]]:
    """Parse each file with Airflow's DagBag in this (warm) process, in order; seconds per file."""
    import time

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.devnull)
    rows = []
    for f in files:
        started = time.perf_counter()
        dags = bag.process_file(str(f), only_if_updated=False)
        if bag.import_errors:
            raise SystemExit(f"{f}: {bag.import_errors}")
        rows.append((f.name, time.perf_counter() - started, len(dags), sum(len(d.tasks) for d in dags)))
    return rows


def dags_report(files: list[Path], env: dict) -> str:
    """``airflow dags report`` over a folder holding these files, as Airflow prints it."""
    import shutil
    import subprocess

    folder = Path(tempfile.mkdtemp(prefix="dag-parse-folder-"))
    for f in files:
        shutil.copy(f, folder / f.name)
    airflow = str(Path(sys.executable).parent / "airflow")
    env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(folder), "PYTHONPATH": str(ROOT / "plugins")}
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    out = subprocess.run([airflow, "dags", "report", "-o", "plain"], env=env, capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else out.stdout + out.stderr


def specs_folder(count: int) -> Path:
    """The shipped specs, plus renamed copies of them (own names and package groups) up to ``count``."""
    import yaml

    folder = Path(tempfile.mkdtemp(prefix="dag-parse-specs-"))
    shipped = sorted((ROOT / "include" / "models").glob("*.yaml"))
    for i in range(max(count, len(shipped))):
        source = shipped[i % len(shipped)]
        spec = yaml.safe_load(source.read_text())
        if i >= len(shipped):
            spec["name"] = f"{spec['name']}-{i}"
            spec["registry"]["model_package_group"] = f"{spec['name']}-models"
        (folder / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--specs", type=int, default=10, help="models in the specs folder")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dag-parse-home-"))
    os.environ.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                      AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
                      HYBRID_MLOPS_HOME=str(ROOT), HYBRID_MLOPS_MODELS_DIR=str(specs_folder(args.specs)))
    print(f"{args.specs} model specs in {os.environ['HYBRID_MLOPS_MODELS_DIR']}")
    sys.path.insert(0, str(ROOT / "plugins"))
    peer = home / "peer_provider_dag.py"
    peer.write_text(PEER)
    files = sorted((ROOT / "dags").glob("*.py"))
    # The peer goes first and pays what every DAG using these providers pays once per parsing
    # process (airflow.sdk, the Amazon and Kubernetes providers, boto3 via the provider).
    rows = parse_times([peer, *files])
    print(f"{'file':<24} {'parse s':>8} {'dags':>5} {'tasks':>6}  heavy top-level imports")
    worst = 0.0
    for (name, seconds, dags, tasks), path in zip(rows, [peer, *files]):
        heavy = sorted(top_level_imports(path) & HEAVY)
        print(f"{name:<24} {seconds:>8.3f} {dags:>5} {tasks:>6}  {', '.join(heavy) or '-'}")
        if path != peer:
            worst = max(worst, seconds)
            if heavy:
                worst = float("inf")
    print(f"\nslowest project DAG file: {worst:.3f}s (limit {LIMIT_S}s) -> {'OK' if worst <= LIMIT_S else 'FAIL'}")
    print("\n`airflow dags report` over the same files in one fresh process. It lists files by duration, not in")
    print("parse order; the files parsed before the peer pay the one-off import of the providers (the Amazon")
    print("provider's AwsBaseOperator brings in boto3), as the peer does when it is parsed first:")
    print(dags_report([peer, *files], dict(os.environ)))
    return 0 if worst <= LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
