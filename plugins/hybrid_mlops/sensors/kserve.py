"""Wait for an InferenceService to be Ready (e.g. in a DAG that applies manifests some other way)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException


class InferenceServiceReadySensor(BaseSensorOperator):
    """Succeed when an InferenceService's ``Ready`` condition is True for its current spec; fail,
    quoting the condition message, when KServe reports the rollout failed.

    .. seealso:: https://kserve.github.io/website/docs/reference/crd-api (InferenceServiceStatus)

    :param name: InferenceService name (templated).
    :param namespace: its namespace (templated).
    :param kubernetes_conn_id: Kubernetes connection (templated).
    :param check_interval: seconds between polls (also ``poke_interval``).
    :param max_attempts: polls before timing out (``None``: bounded by ``timeout``).
    :param deferrable: wait on the triggerer (default).
    """

    template_fields: Sequence[str] = ("name", "namespace", "kubernetes_conn_id")

    def __init__(self, *, name: str, namespace: str, kubernetes_conn_id: str = "kubernetes_default",
                 check_interval: float = 10.0, max_attempts: int | None = None, deferrable: bool = True,
                 **kwargs: Any):
        kwargs.setdefault("poke_interval", check_interval)
        if max_attempts is not None:
            kwargs.setdefault("timeout", max_attempts * check_interval)
        super().__init__(**kwargs)
        self.name = name
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.check_interval = check_interval
        self.deferrable = deferrable

    def poke(self, context) -> bool:
        from hybrid_mlops.hooks.kserve import KServeHook

        hook = KServeHook(kubernetes_conn_id=self.kubernetes_conn_id)
        state, message = KServeHook.state_from_response(hook.get_inference_service(self.name, self.namespace))
        self.log.info("InferenceService %s/%s: %s (%s)", self.namespace, self.name, state, message)
        if state == KServeHook.FAILED:
            raise AirflowException(f"InferenceService {self.namespace}/{self.name} failed: {message}")
        return state == KServeHook.READY

    def execute(self, context):
        if not self.deferrable or self.poke(context):
            return super().execute(context) if not self.deferrable else None
        from hybrid_mlops.triggers.kserve import InferenceServiceReadyTrigger

        self.defer(
            trigger=InferenceServiceReadyTrigger(
                name=self.name, namespace=self.namespace, kubernetes_conn_id=self.kubernetes_conn_id,
                check_interval=self.check_interval, timeout=float(self.timeout),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout) + 60),
        )

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        if not event or event.get("status") != "success":
            raise AirflowException(
                f"InferenceService {self.namespace}/{self.name} not Ready: {(event or {}).get('message', event)}"
            )
        return event.get("urls") or {}
