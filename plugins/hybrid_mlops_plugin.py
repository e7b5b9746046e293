"""Airflow plugin of the project: registers the operator extra links of ``hybrid_mlops``.

Each link class is listed here so that every Airflow component that loads plugins (API server,
scheduler, workers) knows it by name. In Airflow 3 a worker stores each link's URL in XCom under the
link's ``xcom_key`` when the task finishes or defers, and the UI shows that value: no link here sets
``operators``, so none is attached to operators it was not declared on.

.. seealso:: https://airflow.apache.org/docs/apache-airflow/stable/howto/define-extra-link.html
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from hybrid_mlops.links.kserve import InferenceServiceLink
from hybrid_mlops.links.registry import ModelPackageLink
from hybrid_mlops.links.reports import CostReportLink, DriftReportLink
from hybrid_mlops.links.sagemaker import SageMakerTrainingJobLink

LINKS = (SageMakerTrainingJobLink, ModelPackageLink, InferenceServiceLink, DriftReportLink, CostReportLink)


class HybridMlopsPlugin(AirflowPlugin):
    """Operator extra links: training job, model package, InferenceService, drift and cost reports."""

    name = "hybrid_mlops"
    operator_extra_links = [link() for link in LINKS]
