"""A Kubernetes API for the tests: kmock's emulator serving InferenceServices, and the Deployments and
Services of the capture logger, over HTTP.

kmock is asyncio and the Kubernetes client synchronous, so the emulator runs in its own thread and
loop. The test plays KServe's controller by writing ``.status`` (Ready, failed, URLs).
"""

from __future__ import annotations

import asyncio
import json
import threading

import kmock

G, V, P = "serving.kserve.io", "v1beta1", "inferenceservices"
DEPLOYMENTS, SERVICES = ("apps", "v1", "deployments"), ("", "v1", "services")


class FakeCluster:
    """kmock on 127.0.0.1 with the InferenceService CRD, Deployments and Services; records every request."""

    def __init__(self):
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        self._box: dict = {}
        self._thread: threading.Thread | None = None

    def start(self) -> FakeCluster:
        ready = threading.Event()

        async def main():
            async with kmock.KubernetesEmulator() as emu, kmock.Server(emu) as srv:
                emu.resources[f"{G}/{V}/{P}"] = kmock.ResourceInfo(kind="InferenceService", namespaced=True)
                emu.resources["apps/v1/deployments"] = kmock.ResourceInfo(kind="Deployment", namespaced=True)
                emu.resources["v1/services"] = kmock.ResourceInfo(kind="Service", namespaced=True)
                emu[kmock.action.CREATE] << 201 << (lambda req: req.data)  # the client decodes only 201
                self._box.update(emu=emu, stop=asyncio.Event(), loop=asyncio.get_running_loop())
                self.url = str(srv.url).rstrip("/")
                ready.set()
                await self._box["stop"].wait()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("kmock did not start")
        return self

    def stop(self) -> None:
        if self._box:
            self._box["loop"].call_soon_threadsafe(self._box["stop"].set)
            self._thread.join(5)

    def kube_config(self, namespace: str = "models") -> dict:
        """What a Kubernetes connection's ``kube_config`` extra holds for this server."""
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": namespace}}],
            "users": [{"name": "test", "user": {"token": "test"}}],
        }

    def connection_uri_env(self) -> str:
        return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(self.kube_config())}})

    def _key(self, name: str, namespace: str, resource: tuple[str, str, str] = (G, V, P)):
        return (kmock.resource(*resource), namespace, name)

    def _run(self, fn):
        async def call():
            return fn(self._box["emu"])

        return asyncio.run_coroutine_threadsafe(call(), self._box["loop"]).result(10)

    def get(self, name: str, namespace: str, resource: tuple[str, str, str] = (G, V, P)) -> dict | None:
        """The stored object (an InferenceService unless ``resource`` names DEPLOYMENTS or SERVICES)."""
        def read(emu):
            key = self._key(name, namespace, resource)
            return json.loads(json.dumps(emu.objects[key].raw)) if key in emu.objects else None

        return self._run(read)

    def writes(self) -> list[str]:
        """Every non-GET request the server has answered so far, as ``"METHOD path"``."""
        def collect(emu):
            return [f"{r.method} {r.url}" for r in list(emu) if str(r.method).upper() not in ("GET", "METHOD.GET")]

        return self._run(collect)

    def set_status(self, name: str, namespace: str, status: dict) -> None:
        """Play the controller: replace ``.status`` of the object."""
        def write(emu):
            obj = emu.objects[self._key(name, namespace)]
            obj.patch({"status": None})
            obj.patch({"status": status})

        self._run(write)


def ready_status(url: str, *, latest_url: str | None = None, generation: int | None = None) -> dict:
    status = {
        "url": url,
        "conditions": [
            {"type": "PredictorReady", "status": "True"},
            {"type": "IngressReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "components": {"predictor": {"url": url, "traffic": []}},
    }
    if latest_url:
        status["components"]["predictor"]["traffic"] = [
            {"tag": "latest", "latestRevision": True, "url": latest_url, "percent": 10},
            {"tag": "prev", "latestRevision": False, "url": url, "percent": 90},
        ]
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def failed_status(message: str) -> dict:
    return {
        "conditions": [
            {"type": "PredictorReady", "status": "False", "reason": "RevisionFailed", "message": message},
            {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": message},
        ],
        "modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": message}},
    }
