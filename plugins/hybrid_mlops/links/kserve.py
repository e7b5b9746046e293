"""Extra link on the deploy task: the InferenceService (EKS console at first, its URL once Ready)."""

from __future__ import annotations

from typing import ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom


class InferenceServiceLink(BaseOperatorLink):
    """Link to the InferenceService a deploy task applied.

    .. seealso:: https://kserve.github.io/website/docs/reference/crd-api
    """

    name: ClassVar[str] = "InferenceService"
    key: ClassVar[str] = "inference_service_link"

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator, *, ti_key) -> str:
        return XCom.get_value(key=self.key, ti_key=ti_key) or ""

    @classmethod
    def persist(cls, context, operator, url: str | None) -> None:
        """Store the link right after the apply call (and again with the served URL)."""
        if url and operator.do_xcom_push:
            context["ti"].xcom_push(key=cls.key, value=url)

    @staticmethod
    def eks_console_url(region: str, cluster_name: str) -> str:
        return f"https://{region}.console.aws.amazon.com/eks/clusters/{cluster_name}?region={region}"
