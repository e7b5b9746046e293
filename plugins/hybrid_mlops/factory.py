"""Model specs -> Airflow DAGs. DAG files call :func:`build_dags` and nothing else.

Each kind has a builder module ``hybrid_mlops.dags.<kind>`` with ``build(specs) -> list[DAG]``
(per-model kinds return one DAG per spec; ``cost_report`` one DAG for all of them). The only
parse-time read is the spec files under ``include/models/``.

A bad spec removes only its own model's DAGs: the good specs still build, and the bad ones come back
as one placeholder DAG whose validation fails, which Airflow records as the DAG file's import error
(the file, the field and the fix in the message) while it still loads every other DAG of that file.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from hybrid_mlops import settings
from hybrid_mlops.specs.model import SpecError, load_all

KINDS = ("retrain", "deploy", "monitor", "cost_report", "watch", "batch_score", "backup_ml_assets",
         "restore_ml_assets", "promote")
# Kinds whose builder makes DAGs for the whole fleet at once (the others: one DAG per model spec).
FLEET_KINDS = ("cost_report", "backup_ml_assets", "restore_ml_assets")
log = logging.getLogger(__name__)


def build_dags(kind: str, models_dir: str | Path | None = None) -> dict:
    """``{dag_id: DAG}`` for one kind, ready for ``globals().update(...)`` in a DAG file.

    :param models_dir: the specs' folder (default: ``settings.models_dir()``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown DAG kind {kind!r}; kinds are {KINDS}")
    builder = importlib.import_module(f"hybrid_mlops.dags.{kind}")
    specs, errors = load_all(models_dir or settings.models_dir())
    dags = {}
    if kind in FLEET_KINDS:
        dags.update({dag.dag_id: dag for dag in builder.build(specs)})
    else:
        for spec in specs:
            try:
                built = builder.build([spec])
            except SpecError as err:
                errors[spec.name] = err
                continue
            dags.update({dag.dag_id: dag for dag in built})
    if errors:
        for source, err in errors.items():
            log.error("Model spec %s is invalid; its DAGs are not loaded: %s", source, err)
        placeholder = broken_specs_dag(kind, errors)
        dags[placeholder.dag_id] = placeholder
    return dags


def broken_specs_dag(kind: str, errors: dict[str, SpecError]):
    """A DAG that fails Airflow's validation with every spec error: the file's import error."""
    from airflow.sdk import DAG

    class InvalidModelSpecs(DAG):
        def validate(self):
            raise SpecError(
                f"{len(errors)} model spec(s) invalid; their {kind} DAGs are not loaded (the other models' are):\n"
                + "\n".join(str(e) for e in errors.values())
            )

    return InvalidModelSpecs(dag_id=f"invalid_model_specs_{kind}", schedule=None)
