"""Roll a registered model version out to one cluster's InferenceService: canary, smoke test, promote.

::

    execute            capture logger (Deployment + Service, when serving.logger_url is set)
                       -> render + validate -> apply (canary unless first deploy) -> defer (Ready?)
    execute_complete   canary set: smoke test the new revision -> promote (drop canaryTrafficPercent)
                       -> defer again; no canary: smoke test -> done
                       ... or roll back to the previous version and fail, quoting the reason

Between steps the operator keeps no state of its own: the InferenceService carries the version
(labels/annotations), the canary share and the rollback target (annotation), so a retry or a resume
on another worker picks up where the rollout is.

Re-running the task when the cluster already serves the version at 100 % and Ready changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.sdk import BaseOperator

from hybrid_mlops.links.kserve import InferenceServiceLink
from hybrid_mlops.serving import manifest as m
from hybrid_mlops.serving import smoke

if TYPE_CHECKING:
    from hybrid_mlops.hooks.kserve import KServeHook



def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class DeployInferenceServiceOperator(BaseOperator):
    """Deploy one model version to a KServe InferenceService on one cluster (EKS or a kube connection).

    .. seealso::
        KServe canary rollout: https://kserve.github.io/website/docs/model-serving/predictive-inference/rollout-strategies/canary
        Kubernetes JSON merge patch: https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/

    :param model_name: model name; also the InferenceService name (templated).
    :param serving: the model's ``ServingSpec`` as a dict (``spec.serving.model_dump()``) (templated).
    :param package: the version to serve: ``{"version", "package_arn", "storage_uri"}`` or a
        ``describe_model_package`` dict (templated; usually an upstream task's XCom).
    :param region: AWS region of the cluster (templated; the mapped argument).
    :param canary: send ``serving.canary_traffic_percent`` to the new version first (templated).
        The first deployment ever, and a re-deploy of what is served, skip the canary.
    :param kubernetes_conn_id: Kubernetes connection id; may contain ``{region}``, filled in with
        underscores (``kserve_{region}`` -> ``kserve_us_west_2``) (templated). When
        set it wins over ``cluster_name`` (tests, non-EKS clusters).
    :param cluster_name: EKS cluster name, may contain ``{region}`` (templated); used when no
        ``kubernetes_conn_id`` is given.
    :param aws_conn_id: AWS connection for ``eks:DescribeCluster``.
    :param extra_labels: labels added to the InferenceService and the capture logger (cost-allocation
        tags) (templated).
    :param capture_bucket: bucket the capture logger writes to; required when ``serving.logger_url``
        is set, which makes the task apply the logger's Deployment and Service first (templated).
    :param smoke_rows: rows in the v2 smoke-test request.
    :param check_interval: seconds between readiness polls.
    :param max_attempts: readiness polls before giving up (``None``: bounded by ``timeout`` only).
    :param timeout: seconds to wait for Ready (``serving.ready_timeout_seconds`` when ``None``).
    :param deferrable: wait on the triggerer (default) instead of in the worker.
    """

    template_fields: Sequence[str] = (
        "model_name", "serving", "package", "region", "canary", "kubernetes_conn_id", "cluster_name",
        "extra_labels", "capture_bucket",
    )
    template_fields_renderers = {"serving": "json", "package": "json", "extra_labels": "json"}
    operator_extra_links = (InferenceServiceLink(),)
    ui_color = "#d9ecff"

    def __init__(
        self,
        *,
        model_name: str,
        serving: dict,
        package: dict | str,
        region: str,
        canary: bool | str = True,
        kubernetes_conn_id: str | None = None,
        cluster_name: str | None = "mlops-{region}",
        aws_conn_id: str | None = "aws_default",
        extra_labels: dict[str, str] | None = None,
        capture_bucket: str | None = None,
        smoke_rows: int = 8,
        check_interval: float = 10.0,
        max_attempts: int | None = None,
        timeout: float | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not kubernetes_conn_id and not cluster_name:
            raise AirflowFailException(
                f"{self.task_id}: set kubernetes_conn_id (a Kubernetes connection) or cluster_name (an EKS cluster)"
            )
        if check_interval <= 0 or (max_attempts is not None and max_attempts < 1):
            raise AirflowFailException(f"{self.task_id}: check_interval must be > 0 and max_attempts >= 1")
        self.model_name = model_name
        self.serving = serving
        self.package = package
        self.region = region
        self.canary = canary
        self.kubernetes_conn_id = kubernetes_conn_id
        self.cluster_name = cluster_name
        self.aws_conn_id = aws_conn_id
        self.extra_labels = extra_labels
        self.capture_bucket = capture_bucket
        self.smoke_rows = smoke_rows
        self.check_interval = check_interval
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.deferrable = deferrable

    # -- plumbing -----------------------------------------------------------------------------------

    @cached_property
    def serving_spec(self):
        from hybrid_mlops.specs.model import ServingSpec

        return ServingSpec.model_validate(self.serving)

    @cached_property
    def kube_config(self) -> dict | None:
        """The EKS kube config (exec token) when no Kubernetes connection is named."""
        if self.kubernetes_conn_id:
            return None
        from hybrid_mlops.hooks.kserve import eks_kube_config

        cluster = self.cluster_name.format(region=self.region)
        return eks_kube_config(cluster, self.region, self.aws_conn_id)

    @property
    def conn_id(self) -> str | None:
        # Underscores: connection ids become environment variable names (AIRFLOW_CONN_KSERVE_US_WEST_2).
        region = self.region.replace("-", "_")
        return self.kubernetes_conn_id.format(region=region) if self.kubernetes_conn_id else None

    @cached_property
    def hook(self) -> KServeHook:
        from hybrid_mlops.hooks.kserve import KServeHook

        return KServeHook(kubernetes_conn_id=self.conn_id, config_dict=self.kube_config)

    @property
    def name(self) -> str:
        return m.inference_service_name(self.model_name)

    @property
    def namespace(self) -> str:
        return self.serving_spec.namespace

    def _wait_seconds(self) -> float:
        timeout = float(self.timeout or self.serving_spec.ready_timeout_seconds)
        if self.max_attempts is not None:
            timeout = min(timeout, self.max_attempts * self.check_interval)
        return timeout

    def _ref(self) -> m.ModelRef:
        package = self.package
        if not isinstance(package, dict):
            raise AirflowFailException(
                f"{self.task_id}: package must be a dict (an upstream XCom), got {type(package).__name__}: "
                f"{str(package)[:200]}; pass the resolving task's .output"
            )
        try:
            if "ModelPackageArn" in package:
                return m.ModelRef.from_package(package)
            return m.ModelRef.from_dict(package)
        except (KeyError, ValueError, m.ManifestError) as err:
            raise AirflowFailException(f"{self.task_id}: package {package!r} is not usable: {err}") from None

    def _manifest(self, ref: m.ModelRef, canary: int | None, previous: m.ModelRef | None) -> dict:
        manifest = m.render_inference_service(
            self.model_name, self.serving_spec, ref,
            canary_traffic_percent=canary, previous=previous, extra_labels=self.extra_labels,
        )
        try:
            return m.validate(manifest)
        except m.ManifestError as err:
            raise AirflowFailException(str(err)) from None

    def _apply_logger(self) -> None:
        """Create or update the capture logger ``serving.logger_url`` points at (before the InferenceService,
        so the first logged request finds it); nothing when no logger is configured."""
        if not self.serving_spec.logger_url:
            return
        if not self.capture_bucket:
            raise AirflowFailException(
                f"{self.task_id}: serving.logger_url={self.serving_spec.logger_url!r} needs capture_bucket "
                "(the artifacts bucket the logger writes to); pass it, or unset serving.logger_url"
            )
        try:
            manifests = m.validate_logger(*m.render_logger(
                self.model_name, self.serving_spec, self.capture_bucket, extra_labels=self.extra_labels,
            ))
        except m.ManifestError as err:
            raise AirflowFailException(f"{self.task_id}: {err}") from None
        for manifest in manifests:
            _, action = self.hook.apply_namespaced_object(manifest)
            self.log.info("Capture logger %s %s/%s: %s", manifest["kind"], self.namespace,
                          manifest["metadata"]["name"], action)

    def _wait(self, context):
        """Defer until Ready/failed; ``execute_complete`` reads what to do next from the live object."""
        from hybrid_mlops.triggers.kserve import InferenceServiceReadyTrigger

        trigger = InferenceServiceReadyTrigger(
            name=self.name,
            namespace=self.namespace,
            kubernetes_conn_id=self.conn_id,
            config_dict=self.kube_config,
            check_interval=self.check_interval,
            timeout=self._wait_seconds(),
        )
        if self.deferrable:
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self._wait_seconds() + 60),
            )
        return self.execute_complete(context, asyncio.run(_first_event(trigger)))

    # -- the steps ------------------------------------------------------------------------------------

    def execute(self, context):
        from hybrid_mlops.hooks.kserve import KServeHook

        ref = self._ref()
        self._apply_logger()
        live = self.hook.get_inference_service(self.name, self.namespace)
        served, rollback_to = m.served_ref(live), m.previous_ref(live)
        state, message = KServeHook.state_from_response(live)
        if live is not None and served == ref and m.canary_percent(live) is None:
            if state == KServeHook.READY:
                self.log.info("%s/%s already serves version %s at 100%% and is Ready: nothing to change",
                              self.namespace, self.name, ref.version)
                InferenceServiceLink.persist(context, self, KServeHook.urls(live).get("url"))
                return self._result(live, ref, "unchanged")
            self.log.info("%s/%s serves version %s but is %s (%s): waiting", self.namespace, self.name,
                          ref.version, state, message)
            return self._wait(context)

        if served is not None and served != ref:
            previous = served  # a new version replaces the one served now
        elif served == ref:
            previous = rollback_to  # a retry in the middle of this version's canary
        else:
            previous = None  # first deployment ever: nothing to fall back to
        use_canary = _as_bool(self.canary) and previous is not None
        percent = self.serving_spec.canary_traffic_percent if use_canary else None
        manifest = self._manifest(ref, percent, previous)
        if self.serving_spec.runtime == "triton":
            self._publish_triton_repository(ref)
        obj, action = self.hook.apply_inference_service(manifest)
        self.log.info(
            "%s InferenceService %s/%s: version %s (%s), previous %s",
            action.capitalize(), self.namespace, self.name, ref.version,
            f"canary {percent}%" if percent else "100%", previous.version if previous else "none",
        )
        if self.kube_config is not None:
            cluster = self.cluster_name.format(region=self.region)
            InferenceServiceLink.persist(context, self, InferenceServiceLink.eks_console_url(self.region, cluster))
        return self._wait(context)

    def execute_complete(self, context, event: dict[str, Any] | None = None):
        """Resume after a wait. The live object says where the rollout is: a canary still set means
        smoke-test it and promote; none means the version takes all traffic (smoke-test, done). The
        rollback target is the previous version the apply recorded in an annotation."""
        if not event or "status" not in event:
            raise AirflowException(f"{self.task_id}: unexpected trigger event {event!r}")
        new = self._ref()
        live = self.hook.get_inference_service(self.name, self.namespace)
        old = m.previous_ref(live)
        where = f"{self.namespace}/{self.name} in {self.region}"
        if event["status"] != "success":
            self._fail(where, new, old, f"InferenceService not Ready ({event['status']}): {event.get('message')}")
        if m.served_ref(live) != new:
            raise AirflowException(
                f"{where} now serves {m.served_ref(live)}, not version {new.version}: another deploy "
                "changed it meanwhile; re-run this task to deploy again"
            )
        urls = event.get("urls") or {}
        target = urls.get("latest") or urls.get("url")
        problem, target = self._smoke_test(target, new, live)
        if problem:
            self._fail(where, new, old, f"smoke test of version {new.version} at {target} failed: {problem}")
        self.log.info("Smoke test of version %s passed at %s", new.version, target)
        if m.canary_percent(live) is not None:
            self.log.info("Promoting version %s from %s%% to 100%% on %s", new.version, m.canary_percent(live), where)
            self.hook.patch_inference_service(
                self.name, self.namespace, {"spec": {"predictor": {"canaryTrafficPercent": None}}}
            )
            return self._wait(context)
        InferenceServiceLink.persist(context, self, urls.get("url"))
        return self._result(live, new, "deployed")

    def _smoke_test(self, url: str | None, new: m.ModelRef, live: dict | None) -> tuple[str | None, str | None]:
        """``(problem or None, where the request went)``: the latest revision (the canary while one is
        set) through the API server's service proxy (``serving.smoke_via: api_proxy``, with the
        deploy's own Kubernetes credentials), or at its URL from the worker (``url``)."""
        from hybrid_mlops.hooks.kserve import smoke_test

        sample = self.package.get("smoke_sample") if isinstance(self.package, dict) else None
        if not sample:
            return (f"no smoke-test rows for version {new.version}: the package has no smoke_sample "
                    "(resolve it with deploy_<model>'s resolve_model_package)"), url
        style = smoke.style_for(self.serving_spec.runtime)
        if self.serving_spec.smoke_via == "api_proxy":
            return self.hook.proxy_smoke_test(live, sample, style=style)
        if not url:
            return "the InferenceService reports no URL", url
        return smoke_test(url, self.name, sample, style=style), url

    def _fail(self, where: str, new: m.ModelRef, old: m.ModelRef | None, reason: str):
        """Roll back to ``old``, then fail with ``reason`` (no retry: it would canary the bad version again).

        KServe's rollback first: ``canaryTrafficPercent: 0`` sends all traffic back to the previously
        rolled-out revision at once. Then the old spec is restored with the canary share still at 0:
        with the field dropped instead, KServe would route 100 % to the latest *ready* revision (the
        failed canary) until the restored revision is ready. The restored revision takes traffic
        when the next deploy promotes, which the next run's canary does.

        .. seealso:: https://kserve.github.io/website/docs/model-serving/predictive-inference/rollout-strategies/canary
        """
        if old is None:
            raise AirflowException(
                f"Deploying version {new.version} to {where} failed and there is no previous version to "
                f"roll back to: {reason}"
            )
        self.hook.patch_inference_service(self.name, self.namespace, {"spec": {"predictor": {"canaryTrafficPercent": 0}}})
        manifest = self._manifest(old, 0, None)
        self.hook.patch_inference_service(self.name, self.namespace, m.as_patch(manifest))
        raise AirflowFailException(
            f"Rolled {where} back to version {old.version} ({old.storage_uri}) after version {new.version} "
            f"failed: {reason}. Not retried: a retry would canary the failed version again; deploy a fixed "
            "version, or re-run the deploy once the cause is fixed."
        )

    def _publish_triton_repository(self, ref: m.ModelRef) -> None:
        """Unpack the artifact's ``triton/`` members to :func:`~manifest.triton_repository_uri` (once):
        the Triton runtime reads a model repository at ``/mnt/models``, not a tarball's sub-folder."""
        import io
        import tarfile

        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        s3 = S3Hook(aws_conn_id=self.aws_conn_id)
        target_bucket, target_prefix = s3.parse_s3_url(m.triton_repository_uri(ref.storage_uri))
        if s3.check_for_key(f"{target_prefix}{self.name}/config.pbtxt", target_bucket):
            return
        bucket, key = s3.parse_s3_url(ref.storage_uri)
        body = s3.get_key(key, bucket).get()["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            members = [t for t in tar.getmembers() if t.isfile() and t.name.removeprefix("./").startswith("triton/")]
            if not members:
                raise AirflowFailException(f"{ref.storage_uri} holds no triton/ repository for serving.runtime=triton")
            # config.pbtxt last: its presence marks a complete repository for the next run.
            for member in sorted(members, key=lambda t: t.name.endswith("config.pbtxt")):
                name = member.name.removeprefix("./").removeprefix("triton/")
                s3.load_bytes(tar.extractfile(member).read(), f"{target_prefix}{name}", target_bucket, replace=True)
        self.log.info("Published the Triton repository of version %s to %s", ref.version,
                      m.triton_repository_uri(ref.storage_uri))

    def _result(self, live: dict | None, ref: m.ModelRef, outcome: str) -> dict:
        from hybrid_mlops.hooks.kserve import KServeHook

        urls = KServeHook.urls(live) if live else {}
        return {
            "region": self.region,
            "namespace": self.namespace,
            "inference_service": self.name,
            "version": ref.version,
            "package_arn": ref.package_arn,
            "storage_uri": ref.storage_uri,
            "url": urls.get("url"),
            "outcome": outcome,
        }


async def _first_event(trigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AirflowException("trigger ended without an event")
