"""KServe on Kubernetes (EKS): InferenceService get / apply / merge-patch, readiness, the v2 smoke call.

The only module that talks to a cluster or a served model. It subclasses the cncf-kubernetes
provider's hooks and returns plain JSON-safe dicts.

Connecting: a Kubernetes connection (``kubernetes_conn_id``) or, on the ``aws`` target, an EKS cluster
by name. For EKS the hook builds a kube config whose user runs the Amazon provider's
``eks_get_token`` (the same exec plugin ``EksHook.generate_config_file`` writes), so every reload mints
a fresh 15-minute token from the worker's AWS credential chain (IRSA, MWAA execution role). The
config holds no secret, which is why a trigger may carry it: it names the Airflow AWS connection,
and the plugin signs the token with that connection's credentials (keys, profile, assumed role), as
the provider's ``EksHook`` does, not with whatever the process's ambient credential chain holds.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from functools import cached_property
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook, KubernetesHook
from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import generic_api_retry

from hybrid_mlops.serving import manifest as m

KNATIVE_GROUP, KNATIVE_VERSION = "serving.knative.dev", "v1"  # Knative Serving's Revision API


# kubectl's exec credential plugin: the Amazon provider's token function, printed as ExecCredential,
# signed with the session of the named Airflow connection (argv[4]; empty: the ambient chain).
_EXEC_CREDENTIAL = (
    "import json, sys\n"
    "out, sys.stdout = sys.stdout, sys.stderr  # importing Airflow may log; stdout is for the credential\n"
    "from airflow.providers.amazon.aws.utils.eks_get_token import fetch_access_token_for_cluster as f, "
    "get_expiration_time as t\n"
    "import os\n"
    "c, r, u = sys.argv[1:4]\n"
    "conn = sys.argv[4] if len(sys.argv) > 4 else ''\n"
    "if conn:  # the provider's token function signs with a default session: hand it the connection's keys\n"
    "    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook\n"
    "    k = AwsBaseHook(aws_conn_id=conn, region_name=r, client_type='eks').get_session(region_name=r)"
    ".get_credentials().get_frozen_credentials()\n"
    "    os.environ.update(AWS_ACCESS_KEY_ID=k.access_key, AWS_SECRET_ACCESS_KEY=k.secret_key)\n"
    "    os.environ.pop('AWS_SESSION_TOKEN', None) if not k.token else os.environ.update(AWS_SESSION_TOKEN=k.token)\n"
    "    os.environ.pop('AWS_PROFILE', None)\n"
    "out.write(json.dumps({'kind': 'ExecCredential', 'apiVersion': 'client.authentication.k8s.io/v1beta1', "
    "'status': {'expirationTimestamp': t(), 'token': f(c, u, r)}}))\n"
    "out.flush()"
)


def kserve_hook_for(region: str, *, cluster_name: str, aws_conn_id: str | None, kubernetes_conn_id: str | None):
    """A :class:`KServeHook` for a region, as the deploy builds it: the Kubernetes connection
    ``kubernetes_conn_id`` (``{region}`` with underscores) when named, else an EKS token for ``cluster_name``."""
    if kubernetes_conn_id:
        return KServeHook(kubernetes_conn_id=kubernetes_conn_id.format(region=region.replace("-", "_")))
    return KServeHook(kubernetes_conn_id=None,
                      config_dict=eks_kube_config(cluster_name.format(region=region), region, aws_conn_id))


def eks_kube_config(cluster_name: str, region: str, aws_conn_id: str | None = "aws_default") -> dict:
    """A kube config dict for an EKS cluster (``describe_cluster`` for endpoint and CA, exec token).

    .. seealso::
        https://docs.aws.amazon.com/eks/latest/userguide/create-kubeconfig.html

    :param cluster_name: EKS cluster name, e.g. ``mlops-us-west-2``.
    :param region: its AWS region.
    :param aws_conn_id: Airflow AWS connection that describes the cluster and signs its tokens (None: the
        ambient credential chain).
    """
    from airflow.providers.amazon.aws.hooks.eks import EksHook
    from airflow.providers.amazon.aws.hooks.sts import StsHook

    eks = EksHook(aws_conn_id=aws_conn_id, region_name=region)
    cluster = eks.conn.describe_cluster(name=cluster_name)["cluster"]
    sts_endpoint = StsHook(aws_conn_id=aws_conn_id, region_name=region).conn_client_meta.endpoint_url
    if "sts.amazonaws.com" in sts_endpoint:  # EKS accepts only tokens signed for the regional endpoint
        sts_endpoint = f"https://sts.{region}.amazonaws.com"
    sts_url = f"{sts_endpoint}/?Action=GetCallerIdentity&Version=2011-06-15"
    user = "hybrid-mlops"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {
                    "server": cluster["endpoint"],
                    "certificate-authority-data": cluster["certificateAuthority"]["data"],
                },
            }
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
        "users": [
            {
                "name": user,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": sys.executable,
                        "args": [
                            "-c",
                            _EXEC_CREDENTIAL,
                            cluster_name,
                            region,
                            sts_url,
                            aws_conn_id or "",
                        ],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
    }


class KServeHook(KubernetesHook):
    """InferenceService operations on one cluster, on top of the provider's :class:`KubernetesHook`.

    Adds what the provider lacks: ``patch_custom_object`` (JSON merge patch) and an idempotent
    ``apply`` (get, then create or merge-patch; a create that meets 409 falls back to patch), for
    InferenceServices and for the capture logger's Deployment and Service.

    .. seealso::
        https://kserve.github.io/website/docs/reference/crd-api

    :param kubernetes_conn_id: Kubernetes connection (kube config, in-cluster, ...).
    :param config_dict: a kube config as a dict (e.g. from :func:`eks_kube_config`); replaces the
        connection's configuration.
    """

    READY = "Ready"
    PENDING = "Pending"
    FAILED = "Failed"
    #: Model transition states KServe reports when a revision can never become ready.
    FAILED_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})
    #: Condition reasons that mean the rollout failed rather than is still progressing.
    FAILED_REASONS = frozenset(
        {"RevisionFailed", "ProgressDeadlineExceeded", "ContainerMissing", "ExitCode", "InvalidSpec"}
    )

    def __init__(self, kubernetes_conn_id: str | None = KubernetesHook.default_conn_name, **kwargs: Any):
        super().__init__(kubernetes_conn_id=kubernetes_conn_id, **kwargs)

    @cached_property
    def _custom_objects(self):
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def patch_custom_object(
        self, group: str, version: str, plural: str, name: str, body: dict, namespace: str | None = None
    ) -> dict:
        """JSON merge patch (RFC 7386) of a namespaced custom object; ``None`` values delete fields.

        :param group: API group.
        :param version: API version.
        :param plural: resource plural.
        :param name: object name.
        :param body: the merge patch.
        :param namespace: namespace (default: the connection's, then ``default``).
        """
        return self._custom_objects.patch_namespaced_custom_object(
            group=group,
            version=version,
            namespace=namespace or self.get_namespace() or self.DEFAULT_NAMESPACE,
            plural=plural,
            name=name,
            body=body,
            _content_type="application/merge-patch+json",
        )

    def get_inference_service(self, name: str, namespace: str) -> dict | None:
        """The InferenceService, or ``None`` when there is none."""
        from kubernetes.client.rest import ApiException

        try:
            return self.get_custom_object(m.GROUP, m.VERSION, m.PLURAL, name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    @generic_api_retry
    def _patch(self, name: str, namespace: str, body: dict) -> dict:
        return self.patch_custom_object(m.GROUP, m.VERSION, m.PLURAL, name, body, namespace)

    def apply_inference_service(self, manifest: dict) -> tuple[dict, str]:
        """Create the InferenceService or merge-patch it to match ``manifest``.

        A create is never retried blindly: on 409 (someone created it meanwhile) it becomes a patch.
        Returns ``(object, "created"|"patched")``.
        """
        from kubernetes.client.rest import ApiException

        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        if self.get_inference_service(name, namespace) is None:
            try:
                created = self.create_custom_object(m.GROUP, m.VERSION, m.PLURAL, manifest, namespace)
                self.log.info("Created InferenceService %s/%s", namespace, name)
                return created, "created"
            except ApiException as err:
                if err.status != 409:
                    raise
                self.log.info("InferenceService %s/%s appeared meanwhile (409); patching it", namespace, name)
        patched = self._patch(name, namespace, m.as_patch(manifest))
        self.log.info("Patched InferenceService %s/%s", namespace, name)
        return patched, "patched"

    def patch_inference_service(self, name: str, namespace: str, body: dict) -> dict:
        """Merge-patch an existing InferenceService (promote, roll back)."""
        return self._patch(name, namespace, body)

    # -- built-in kinds (the capture logger's Deployment and Service) ------------------------------

    #: kind -> (the provider hook's client property, the client's method suffix)
    NAMESPACED_KINDS = {
        "Deployment": ("apps_v1_client", "namespaced_deployment"),
        "Service": ("core_v1_client", "namespaced_service"),
    }

    def _kind_api(self, kind: str):
        if kind not in self.NAMESPACED_KINDS:
            raise ValueError(f"kind {kind!r} is not one of {sorted(self.NAMESPACED_KINDS)}")
        attr, suffix = self.NAMESPACED_KINDS[kind]
        return getattr(self, attr), suffix

    def remove_previous_version(self, name: str, namespace: str, version: int) -> dict:
        """Remove what an InferenceService still keeps of ``version``, the version served before the current one.

        One InferenceService per model: a new version is a new revision of the same object, so there is no
        separate resource to delete. What remains of the previous version after a promotion is (1) the
        rollback target in our ``hybrid-mlops.io/previous`` annotation, which a failed later deploy would
        roll back to, and (2) in serverless mode its Knative Revision
        (``status.components.predictor.previousRolledoutRevision``), scaled to zero but kept until Knative's
        garbage collection. This clears (1) and deletes (2). Nothing is touched when ``version`` is not the
        annotation's (already removed, or another version), while a canary is set (a rollout still routes
        to the previous revision), or for a revision still named in the route's traffic. Idempotent.

        .. seealso:: https://knative.dev/docs/serving/revisions/revision-admin-config-options/

        :returns: ``{"rollback_target_cleared": bool, "revision_deleted": name or None, "reason": str}``
        """
        from kubernetes.client.rest import ApiException

        live = self.get_inference_service(name, namespace)
        previous = m.previous_ref(live)
        out: dict[str, Any] = {"rollback_target_cleared": False, "revision_deleted": None}
        if previous is None or int(previous.version) != int(version):
            return {**out, "reason": f"{namespace}/{name} keeps nothing of version {version}"}
        if m.canary_percent(live) is not None:
            return {**out, "reason": f"{namespace}/{name} has a canary set: its rollout still uses version {version}"}
        predictor = ((live.get("status") or {}).get("components") or {}).get("predictor") or {}
        revision = predictor.get("previousRolledoutRevision")
        routed = {t.get("revisionName") for t in predictor.get("traffic") or []}
        reason = "rollback target cleared"
        if revision and revision != predictor.get("latestReadyRevision") and revision not in routed:
            try:
                generic_api_retry(self._custom_objects.delete_namespaced_custom_object)(
                    KNATIVE_GROUP, KNATIVE_VERSION, namespace, "revisions", revision)
            except ApiException as err:
                if err.status != 404:
                    raise
            out["revision_deleted"] = revision
            reason += f"; Knative revision {revision} deleted"
        elif revision:
            reason += f"; Knative revision {revision} kept: the route still names it"
        self._patch(name, namespace, {"metadata": {"annotations": {m.ANN_PREVIOUS: None}}})
        return {**out, "rollback_target_cleared": True, "reason": reason}

    def get_namespaced_object(self, kind: str, name: str, namespace: str) -> dict | None:
        """A Deployment or Service as a plain dict (API field names), or ``None`` when there is none."""
        from kubernetes.client.rest import ApiException

        api, suffix = self._kind_api(kind)
        try:
            obj = generic_api_retry(getattr(api, f"read_{suffix}"))(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return self.api_client.sanitize_for_serialization(obj)

    def apply_namespaced_object(self, manifest: dict) -> tuple[dict, str]:
        """Create a Deployment or Service, or merge-patch it when it differs from ``manifest``.

        Idempotent: a live object that already has every field of ``manifest`` is left alone, and a
        create that meets 409 becomes a patch (a create is never retried blindly). Returns
        ``(object, "created"|"patched"|"unchanged")``.
        """
        from kubernetes.client.rest import ApiException

        kind, meta = manifest["kind"], manifest["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        api, suffix = self._kind_api(kind)
        live = self.get_namespaced_object(kind, name, namespace)
        if live is None:
            try:
                created = getattr(api, f"create_{suffix}")(namespace, manifest)
                self.log.info("Created %s %s/%s", kind, namespace, name)
                return self.api_client.sanitize_for_serialization(created), "created"
            except ApiException as err:
                if err.status != 409:
                    raise
                self.log.info("%s %s/%s appeared meanwhile (409); patching it", kind, namespace, name)
        elif m.is_applied(manifest, live):
            self.log.info("%s %s/%s is up to date", kind, namespace, name)
            return live, "unchanged"
        patched = generic_api_retry(getattr(api, f"patch_{suffix}"))(
            name, namespace, manifest, _content_type="application/merge-patch+json"
        )
        self.log.info("Patched %s %s/%s", kind, namespace, name)
        return self.api_client.sanitize_for_serialization(patched), "patched"

    # -- state ------------------------------------------------------------------------------------

    @classmethod
    def state_from_response(cls, isvc: dict | None) -> tuple[str, str]:
        """``(state, message)`` of an InferenceService: Ready, Pending or Failed.

        Ready needs the ``Ready`` condition True for the current spec (``status.observedGeneration``
        caught up with ``metadata.generation`` where the server keeps them). Failed quotes the
        condition (or model status) message verbatim.
        """
        if not isvc:
            return cls.PENDING, "InferenceService not found"
        status = isvc.get("status") or {}
        conditions = status.get("conditions") or []
        model_status = status.get("modelStatus") or {}
        failure = model_status.get("lastFailureInfo") or {}
        if model_status.get("transitionStatus") in cls.FAILED_TRANSITIONS:
            return cls.FAILED, (
                f"{model_status['transitionStatus']}: {failure.get('reason', '')} {failure.get('message', '')}".strip()
            )
        for cond in conditions:
            if cond.get("status") == "False" and cond.get("reason") in cls.FAILED_REASONS:
                return cls.FAILED, f"{cond.get('type')} {cond['reason']}: {cond.get('message', '')}".strip()
        generation = (isvc.get("metadata") or {}).get("generation")
        observed = status.get("observedGeneration")
        if generation is not None and observed is not None and observed < generation:
            return cls.PENDING, f"controller has not observed generation {generation} yet (at {observed})"
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        if ready and ready.get("status") == "True":
            return cls.READY, "Ready"
        if ready:
            return cls.PENDING, f"Ready={ready.get('status')} {ready.get('reason', '')}: {ready.get('message', '')}"
        return cls.PENDING, "no Ready condition yet"

    @staticmethod
    def urls(isvc: dict) -> dict:
        """``{"url": ..., "latest": ..., "previous": ...}``: the service URL and the per-revision tag URLs."""
        status = isvc.get("status") or {}
        urls = {"url": status.get("url")}
        predictor = (status.get("components") or {}).get("predictor") or {}
        for route in predictor.get("traffic") or []:
            if route.get("tag") in ("latest", "prev") and route.get("url"):
                urls["latest" if route["tag"] == "latest" else "previous"] = route["url"]
        return urls

    # -- data plane ---------------------------------------------------------------------------------

    @staticmethod
    def infer_v2(base_url: str, model: str, body: dict, timeout: float = 30.0) -> dict:
        """POST ``<base_url>/v2/models/<model>/infer``; returns the JSON answer or raises ``RuntimeError``
        quoting the server's status and body.

        .. seealso:: https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol
        """
        url = f"{base_url.rstrip('/')}/v2/models/{model}/infer"
        req = urllib.request.Request(
            url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"POST {url} -> {err.code}: {err.read()[:500].decode(errors='replace')}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise RuntimeError(f"POST {url} failed: {err}") from None


    # -- data plane through the API server (a private cluster, a worker outside it) ----------------

    #: ``serving.kserve.io/deploymentMode`` values without Knative (one predictor Service, no canary).
    RAW_MODES = frozenset({"RawDeployment", "Standard"})
    #: The port of the predictor Services: KServe's raw Service (80 -> the container's first port)
    #: and Knative's revision ``-private`` Service (80 -> queue-proxy) both listen on 80.
    PROXY_PORT = 80

    @classmethod
    def predictor_services(cls, isvc: dict) -> list[str]:
        """The Services that reach the predictor revision to smoke-test, best first.

        Serverless (Knative): the latest revision's ``<revision>-private`` Service (the traffic entry
        marked ``latestRevision``, else ``latestReadyRevision``): it selects that revision's pods
        directly. The public ``<revision>`` Service may point at Knative's activator, which needs the
        ingress's revision headers, and ``<isvc>-predictor`` is an ExternalName to the gateway, which
        the API server's proxy cannot reach. During a canary the latest revision is the canary.
        RawDeployment: ``<isvc>-predictor`` (``<isvc>-predictor-default`` on clusters that kept the
        older name); raw mode has no canary, so it is always the version just applied.
        """
        meta, status = isvc.get("metadata") or {}, isvc.get("status") or {}
        name = meta["name"]
        mode = status.get("deploymentMode") or (meta.get("annotations") or {}).get("serving.kserve.io/deploymentMode")
        if mode in cls.RAW_MODES:
            return [f"{name}-predictor", f"{name}-predictor-default"]
        predictor = (status.get("components") or {}).get("predictor") or {}
        latest = next((t.get("revisionName") for t in predictor.get("traffic") or []
                       if t.get("latestRevision") and t.get("revisionName")), None)
        revision = latest or predictor.get("latestReadyRevision")
        return [f"{revision}-private"] if revision else []

    def proxy_infer_v2(self, namespace: str, service: str, model: str, body: dict, port: int | str = PROXY_PORT,
                       timeout: float = 30.0) -> dict:
        """POST ``/v2/models/<model>/infer`` to ``service`` through the API server's service proxy
        (``/api/v1/namespaces/<ns>/services/<service>:<port>/proxy/...``), authenticated as every other
        call of this hook; returns the JSON answer or raises ``RuntimeError`` quoting the status and
        body (the model server's, or the API server's: 404 no such Service, 503 no endpoints).

        Needs ``create`` on ``services/proxy`` in the namespace.

        .. seealso:: https://kubernetes.io/docs/tasks/access-application-cluster/access-cluster-services/#manually-constructing-apiserver-proxy-urls
        """
        from urllib.parse import quote

        from kubernetes.client.rest import ApiException

        path = (f"/api/v1/namespaces/{quote(namespace, safe='')}/services/{quote(f'{service}:{port}', safe=':')}"
                f"/proxy/v2/models/{quote(model, safe='')}/infer")
        try:
            answer = self.api_client.call_api(
                path, "POST", header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body=body, auth_settings=["BearerToken"], response_types_map={200: "object"},
                _return_http_data_only=True, _request_timeout=timeout,
            )
        except ApiException as err:
            text = err.body.decode(errors="replace") if isinstance(err.body, bytes) else str(err.body or err.reason)
            raise RuntimeError(f"POST {path} -> {err.status}: {text[:500]}") from None
        except (OSError, ValueError) as err:  # urllib3 connection errors are OSErrors
            raise RuntimeError(f"POST {path} failed: {err}") from None
        if not isinstance(answer, dict):
            raise RuntimeError(f"POST {path} answered {str(answer)[:200]!r}, not a JSON object")
        return answer

    def proxy_smoke_test(self, isvc: dict, sample: dict, *, style: str = "columns") -> tuple[str | None, str]:
        """The smoke test of ``isvc``'s latest predictor revision through the API server's service proxy:
        ``(problem or None, where it was sent)``."""
        from hybrid_mlops.serving import smoke

        meta = isvc["metadata"]
        namespace, model = meta["namespace"], meta["name"]
        candidates = self.predictor_services(isvc)
        if not candidates:
            return "the InferenceService reports no predictor revision (status.components.predictor)", "-"
        service = candidates[0]
        for name in candidates[1:]:  # raw mode: the legacy name only where the current one is absent
            if self.get_namespaced_object("Service", service, namespace) is None and \
                    self.get_namespaced_object("Service", name, namespace) is not None:
                service = name
        where = f"service {namespace}/{service}:{self.PROXY_PORT} through the API server proxy"
        try:
            answer = self.proxy_infer_v2(namespace, service, model, smoke.v2_request(sample, style=style))
        except RuntimeError as err:
            return str(err), where
        return smoke.response_problem(answer, sample), where


def smoke_test(base_url: str, model: str, sample: dict, *, style: str = "columns") -> str | None:
    """POST a v2 smoke-test request for ``sample`` (:mod:`hybrid_mlops.serving.smoke`); the problem
    found, or ``None``."""
    from hybrid_mlops.serving import smoke

    try:
        answer = KServeHook.infer_v2(base_url, model, smoke.v2_request(sample, style=style))
    except RuntimeError as err:
        return str(err)
    return smoke.response_problem(answer, sample)


class AsyncKServeHook(AsyncKubernetesHook):
    """Async reads of InferenceServices, for triggers (the provider's :class:`AsyncKubernetesHook`).

    .. seealso:: https://github.com/tomplus/kubernetes_asyncio

    :param kubernetes_conn_id: Kubernetes connection.
    :param config_dict: kube config dict (replaces the connection's configuration).
    """

    @generic_api_retry
    async def get_inference_service(self, name: str, namespace: str) -> dict | None:
        from kubernetes_asyncio import client as async_client
        from kubernetes_asyncio.client.exceptions import ApiException

        async with self.get_conn() as api_client:
            api = async_client.CustomObjectsApi(api_client)
            try:
                return await api.get_namespaced_custom_object(m.GROUP, m.VERSION, namespace, m.PLURAL, name)
            except ApiException as err:
                if err.status == 404:
                    return None
                raise
