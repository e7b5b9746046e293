"""Airflow plugin of the project: the operator extra links of ``hybrid_mlops`` and the Models page.

Each link class is listed here so that every Airflow component that loads plugins (API server,
scheduler, workers) knows it by name. In Airflow 3 a worker stores each link's URL in XCom under the
link's ``xcom_key`` when the task finishes or defers, and the UI shows that value: no link here sets
``operators``, so none is attached to operators it was not declared on.

The Models page (``hybrid_mlops.ui.app``) is a FastAPI app the api-server mounts under ``/hybrid-mlops``
(``fastapi_apps``); an external view with a ``url_route`` puts it in the UI's nav, framed at
``/plugin/models``.

.. seealso:: https://airflow.apache.org/docs/apache-airflow/stable/howto/define-extra-link.html
    https://airflow.apache.org/docs/apache-airflow/stable/administration-and-deployment/plugins.html
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from hybrid_mlops.links.kserve import InferenceServiceLink
from hybrid_mlops.links.registry import ModelPackageLink
from hybrid_mlops.links.reports import CostReportLink, DriftReportLink
from hybrid_mlops.links.sagemaker import SageMakerTrainingJobLink
from hybrid_mlops.ui.app import URL_PREFIX, app as models_app

LINKS = (SageMakerTrainingJobLink, ModelPackageLink, InferenceServiceLink, DriftReportLink, CostReportLink)


class HybridMlopsPlugin(AirflowPlugin):
    """Operator extra links (training job, model package, InferenceService, drift and cost reports) and
    the Models page."""

    name = "hybrid_mlops"
    operator_extra_links = [link() for link in LINKS]
    fastapi_apps = [{"app": models_app, "url_prefix": URL_PREFIX, "name": "hybrid-mlops Models"}]
    external_views = [{
        "name": "Models",
        "href": f"{URL_PREFIX}/models",  # relative to the api-server: the page is framed in the UI
        "url_route": "models",
        "destination": "nav",
        "nav_top_level": True,
    }]
