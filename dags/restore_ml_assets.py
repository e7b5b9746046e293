"""Airflow DAG ``restore_ml_assets``: see ``plugins/hybrid_mlops/dags/restore_ml_assets.py`` (and ``plugins/hybrid_mlops/backup.py``)."""

from hybrid_mlops.factory import build_dags

globals().update(build_dags("restore_ml_assets"))
