"""A Kubernetes API for the tests: kmock's emulator serving InferenceServices, and the Deployments and
Services of the capture logger, over HTTP.

kmock is asyncio and the Kubernetes client synchronous, so the emulator runs in its own thread and
loop. The test plays KServe's controller by writing ``.status`` (Ready, failed, URLs).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.error
import urllib.request

import kmock

G, V, P = "serving.kserve.io", "v1beta1", "inferenceservices"
DEPLOYMENTS, SERVICES = ("apps", "v1", "deployments"), ("", "v1", "services")


class FakeCluster:
    """kmock on 127.0.0.1 with the InferenceService CRD, Deployments and Services; records every request."""

    def __init__(self):
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        #: (namespace, service) -> the base URL of the pods behind it, for the service proxy; a
        #: revision the InferenceService's status names without an entry here is served at the URL of
        #: its traffic entry (see :meth:`_proxy`).
        self.endpoints: dict[tuple[str, str], str] = {}
        #: every service-proxy request answered: (namespace, "service:port", path after /proxy)
        self.proxied: list[tuple[str, str, str]] = []
        self._box: dict = {}
        self._thread: threading.Thread | None = None

    def start(self) -> FakeCluster:
        ready = threading.Event()

        async def main():
            async with kmock.KubernetesEmulator() as emu, kmock.Server(emu) as srv:
                emu.resources[f"{G}/{V}/{P}"] = kmock.ResourceInfo(kind="InferenceService", namespaced=True)
                emu.resources["apps/v1/deployments"] = kmock.ResourceInfo(kind="Deployment", namespaced=True)
                emu.resources["v1/services"] = kmock.ResourceInfo(kind="Service", namespaced=True)
                emu.resources["serving.knative.dev/v1/revisions"] = kmock.ResourceInfo(kind="Revision", namespaced=True)
                emu[kmock.action.CREATE] << 201 << (lambda req: req.data)  # the client decodes only 201
                emu[PROXY_PATH] << self._proxy  # the API server's service proxy
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

    # -- the API server's service proxy ----------------------------------------------------------------

    def _services(self, emu, namespace: str) -> dict[str, str]:
        """The predictor Services KServe/Knative would have made in ``namespace``, from each
        InferenceService's status, -> the URL of the pods behind each: Knative's per-revision
        ``<revision>-private`` (serverless) or KServe's ``<isvc>-predictor`` (raw deployment)."""
        found = {}
        for (resource, ns, _), obj in list(emu.objects.items()):
            if ns != namespace or resource != kmock.resource(G, V, P) or obj.deleted:
                continue
            raw = obj.raw
            status = raw.get("status") or {}
            predictor = (status.get("components") or {}).get("predictor") or {}
            if status.get("deploymentMode") in ("RawDeployment", "Standard"):
                found[f"{raw['metadata']['name']}-predictor"] = predictor.get("url") or status.get("url")
            for route in predictor.get("traffic") or []:
                if route.get("revisionName"):
                    found[f"{route['revisionName']}-private"] = route.get("url")
        return found

    async def _proxy(self, request):
        """``/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/<path>`` as the API server answers it:
        404 for a Service that does not exist, 503 for a port it lacks or no endpoints, otherwise the
        pods' answer (status and body) passed through."""
        match = PROXY_PATH.fullmatch(request.url.path)
        namespace, target, rest = match["ns"], match["svc"], match["rest"] or "/"
        name, _, port = target.partition(":")
        self.proxied.append((namespace, target, rest))
        services = self._services(self._box["emu"], namespace)
        if (namespace, name) not in self.endpoints and name not in services:
            return _status(404, "NotFound", f'services "{name}" not found')
        backend = self.endpoints.get((namespace, name)) or services.get(name)
        if port not in ("", "80", "http", "http1"):
            return _status(503, "ServiceUnavailable", f'no service port {port} found for service "{name}"')
        if not backend:
            return _status(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')

        def forward():
            req = urllib.request.Request(backend.rstrip("/") + rest, data=request.body or None,
                                         method=str(request.method).rsplit(".", 1)[-1].upper(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as err:
                return err.code, err.read()
            except OSError as err:  # the pods do not answer: the API server's proxy says 503
                return 503, json.dumps({"kind": "Status", "status": "Failure", "code": 503,
                                        "message": f"error trying to reach service: {err}"}).encode()

        code, body = await asyncio.to_thread(forward)
        return kmock.Response(status=code, payload=body, headers={"Content-Type": "application/json"})

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


PROXY_PATH = re.compile(r"/api/v1/namespaces/(?P<ns>[^/]+)/services/(?P<svc>[^/]+)/proxy(?P<rest>/.*)?")


def _status(code: int, reason: str, message: str):
    """A ``metav1.Status`` error answer, as the API server sends it."""
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}
    return kmock.Response(status=code, payload=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def ready_status(url: str, *, latest_url: str | None = None, generation: int | None = None,
                 name: str = "fraud-detection", revision: int = 2) -> dict:
    """Ready, serverless: the predictor's revisions as KServe reports them (``<name>-predictor-0000N``),
    each traffic entry's ``url`` standing for the pods of that revision. With ``latest_url`` a canary:
    revision ``revision`` (the latest) beside ``revision - 1``; without, ``revision`` alone at 100 %."""
    latest, prev = f"{name}-predictor-{revision:05d}", f"{name}-predictor-{revision - 1:05d}"
    status = {
        "url": url,
        "deploymentMode": "Serverless",
        "conditions": [
            {"type": "PredictorReady", "status": "True"},
            {"type": "IngressReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "components": {"predictor": {
            "url": url, "latestCreatedRevision": latest, "latestReadyRevision": latest,
            "traffic": [{"tag": "latest", "latestRevision": True, "revisionName": latest, "url": url, "percent": 100}],
        }},
    }
    if latest_url:
        status["components"]["predictor"]["traffic"] = [
            {"tag": "latest", "latestRevision": True, "revisionName": latest, "url": latest_url, "percent": 10},
            {"tag": "prev", "latestRevision": False, "revisionName": prev, "url": url, "percent": 90},
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
