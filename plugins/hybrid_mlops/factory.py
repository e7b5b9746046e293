"""Model specs -> Airflow DAGs. DAG files call :func:`build_dags` and nothing else.

Each kind has a builder module ``hybrid_mlops.dags.<kind>`` with ``build(specs) -> list[DAG]``
(per-model kinds return one DAG per spec; ``cost_report`` one DAG for all of them). The only
parse-time read is the spec files under ``include/models/``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from hybrid_mlops.settings import MODELS_DIR
from hybrid_mlops.specs import load_specs

KINDS = ("retrain", "deploy", "monitor", "cost_report")


def build_dags(kind: str, models_dir: str | Path = MODELS_DIR) -> dict:
    """``{dag_id: DAG}`` for one kind, ready for ``globals().update(...)`` in a DAG file."""
    if kind not in KINDS:
        raise ValueError(f"unknown DAG kind {kind!r}; kinds are {KINDS}")
    builder = importlib.import_module(f"hybrid_mlops.dags.{kind}")
    return {dag.dag_id: dag for dag in builder.build(load_specs(models_dir))}
