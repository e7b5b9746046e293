"""Airflow assets the project's DAGs produce and consume (names only: no I/O)."""

from __future__ import annotations


def drift_asset_uri(model: str) -> str:
    """Updated by the monitor DAG when a window violates the baseline; schedules a retrain."""
    return f"hybrid-mlops://{model}/drift"


def deployed_asset_uri(model: str) -> str:
    """Updated when a model version is deployed (extra: version, package ARN, regions)."""
    return f"hybrid-mlops://{model}/deployed"


def approved_asset_uri(model: str) -> str:
    """Updated when a model package version is approved (extra: package ARN, ModelDataUrl)."""
    return f"hybrid-mlops://{model}/approved"
