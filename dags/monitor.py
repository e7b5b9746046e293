"""Airflow DAG file: one ``monitor_<model>`` dag per model spec (hourly drift and model-quality reports)."""

from hybrid_mlops.factory import build_dags

globals().update(build_dags("monitor"))
