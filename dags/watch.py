"""Airflow DAG file: one ``watch_<model>`` dag per model spec that watches an external Model Monitor schedule."""

from hybrid_mlops.factory import build_dags

globals().update(build_dags("watch"))
