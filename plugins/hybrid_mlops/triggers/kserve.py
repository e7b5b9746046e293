"""Wait for an InferenceService to become Ready (or fail) on the triggerer, through the async hook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent



class InferenceServiceReadyTrigger(BaseTrigger):
    """Poll an InferenceService's status conditions until Ready, Failed or the timeout.

    Emits exactly one event: ``{"status": "success"|"error"|"timeout", "message": ...,
    "inference_service_name": ..., "namespace": ..., "urls": {...}}``; ``message`` quotes the
    InferenceService condition on failure.

    .. seealso:: https://kserve.github.io/website/docs/reference/crd-api (InferenceServiceStatus)

    :param name: InferenceService name.
    :param namespace: its namespace.
    :param kubernetes_conn_id: Kubernetes connection (when ``config_dict`` is not given).
    :param config_dict: kube config dict (EKS exec config: no secrets in it).
    :param check_interval: seconds between polls.
    :param timeout: seconds before giving up with a ``timeout`` event.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        kubernetes_conn_id: str | None = None,
        config_dict: dict | None = None,
        check_interval: float = 10.0,
        timeout: float = 900.0,
    ):
        super().__init__()
        self.name = name
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.config_dict = config_dict
        self.check_interval = check_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "name": self.name,
                "namespace": self.namespace,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "config_dict": self.config_dict,
                "check_interval": self.check_interval,
                "timeout": self.timeout,
            },
        )

    def _event(self, status: str, message: str, isvc: dict | None) -> TriggerEvent:
        from hybrid_mlops.hooks.kserve import KServeHook

        return TriggerEvent(
            {
                "status": status,
                "message": message,
                "inference_service_name": self.name,
                "namespace": self.namespace,
                "urls": KServeHook.urls(isvc) if isvc else {},
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from hybrid_mlops.hooks.kserve import AsyncKServeHook, KServeHook

        hook = AsyncKServeHook(kubernetes_conn_id=self.kubernetes_conn_id, config_dict=self.config_dict)
        deadline = time.monotonic() + self.timeout
        message = "not polled yet"
        isvc = None
        while True:
            try:
                isvc = await hook.get_inference_service(self.name, self.namespace)
            except Exception as err:  # transient errors were retried by the hook already
                yield self._event("error", f"reading InferenceService {self.namespace}/{self.name}: {err}", None)
                return
            state, message = KServeHook.state_from_response(isvc)
            self.log.info("InferenceService %s/%s: %s (%s)", self.namespace, self.name, state, message)
            if state == KServeHook.READY:
                yield self._event("success", message, isvc)
                return
            if state == KServeHook.FAILED:
                yield self._event("error", message, isvc)
                return
            if time.monotonic() >= deadline:
                yield self._event(
                    "timeout", f"not Ready after {self.timeout:.0f}s; last status: {message}", isvc
                )
                return
            await asyncio.sleep(self.check_interval)
