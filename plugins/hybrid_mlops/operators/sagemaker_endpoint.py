"""Serve an approved version on a SageMaker real-time endpoint: blue/green update, smoke test, promote
or roll back, autoscaling (``serving.target: sagemaker``).

::

    execute            CreateModel (once per version) -> PutMetricAlarm x 2 -> CreateEndpointConfig
                       -> CreateEndpoint (first deploy) or UpdateEndpoint (blue/green, canary, the
                       alarms in AutoRollbackConfiguration) -> defer until InService
    execute_complete   the endpoint kept the old config: SageMaker rolled the update back -> fail;
                       else smoke-test the version (InvokeEndpoint) -> autoscaling -> done,
                       or UpdateEndpoint back to the previous config -> defer -> fail quoting the reason

The endpoint carries the state (its config names the served version), so a retry resumes: a config
already live and InService is ``unchanged``; one still rolling out is waited on.

``local`` target: every control-plane request goes to the moto server, and the project's predictor
stands in for the fleet (:class:`~hybrid_mlops.local.serving.LocalServing`: started for the version,
smoke-tested through the same ``/invocations`` call, swapped in behind the front door). moto 5.2 has
no ``UpdateEndpoint``: the operator builds the same request (returned in the result, checked against
botocore's model by the tests) and applies its effect on moto with ``DeleteEndpoint`` +
``CreateEndpoint``; SageMaker's own blue/green fleet swap is the front door's on ``local``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from hybrid_mlops import settings
from hybrid_mlops.serving import sagemaker as s
from hybrid_mlops.serving import smoke
from hybrid_mlops.serving.manifest import ModelRef

IN_PROGRESS = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})


def _as_bool(value: Any) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on") if isinstance(value, str) else bool(value)


class DeploySageMakerEndpointOperator(BaseOperator):
    """Deploy one model version to the model's SageMaker real-time endpoint in one region.

    .. seealso::
        https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html
        https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green.html

    :param model_name: the spec's name (endpoint ``<model>``, models ``<model>-v<version>``).
    :param serving: the spec's ``serving`` section as a dict (templated).
    :param package: ``{"version", "package_arn", "storage_uri", "smoke_sample"}`` from
        ``resolve_model_package`` (templated).
    :param region: the endpoint's region (templated; the mapped argument).
    :param canary: canary first (templated); off: the green fleet takes all traffic at once, still
        baked under the rollback alarms.
    :param id_column: the spec's ``schema.id`` (the predictor's optional id input).
    :param capture_bucket: where the predictor writes the monitor's capture records and SageMaker its own.
    :param role_arn: the SageMaker execution role (pulls the image, reads the model, writes capture).
    :param extra_tags: cost-allocation tags on the model, config, endpoint and alarms.
    :param check_interval: seconds between status polls.
    :param deferrable: wait on the triggerer (default).
    """

    template_fields: Sequence[str] = ("model_name", "serving", "package", "region", "canary", "capture_bucket",
                                      "role_arn", "extra_tags")
    template_fields_renderers = {"serving": "json", "package": "json", "extra_tags": "json"}
    ui_color = "#ffe9c7"

    def __init__(self, *, model_name: str, serving: dict, package: dict | str, region: str, canary: bool | str = True,
                 id_column: str | None = None, capture_bucket: str | None = None, role_arn: str | None = None,
                 extra_tags: dict[str, str] | None = None, aws_conn_id: str | None = "aws_default",
                 check_interval: int = 30, deferrable: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.model_name = model_name
        self.serving = serving
        self.package = package
        self.region = region
        self.canary = canary
        self.id_column = id_column
        self.capture_bucket = capture_bucket
        self.role_arn = role_arn
        self.extra_tags = extra_tags or {}
        self.aws_conn_id = aws_conn_id
        self.check_interval = check_interval
        self.deferrable = deferrable

    # -- plumbing -----------------------------------------------------------------------------------

    @cached_property
    def serving_spec(self):
        from hybrid_mlops.specs.model import ServingSpec

        return ServingSpec.model_validate(self.serving)

    @property
    def sm(self):
        return self.serving_spec.sagemaker

    @cached_property
    def hook(self):
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.aws_conn_id, region_name=self.region)

    def _client(self, service: str):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type=service, region_name=self.region).conn

    @property
    def bucket(self) -> str:
        """The artifacts bucket: the capture of both kinds goes there."""
        return self.capture_bucket or settings.bucket()

    @property
    def endpoint(self) -> str:
        return s.endpoint_name(self.model_name)

    def _ref(self) -> ModelRef:
        if not isinstance(self.package, dict):
            raise AirflowFailException(f"{self.task_id}: package must be a dict (an upstream XCom), got {self.package!r:.200}")
        try:
            return ModelRef.from_dict(self.package)
        except (KeyError, ValueError) as err:
            raise AirflowFailException(f"{self.task_id}: package {self.package!r:.300} is not usable: {err}") from None

    def _describe(self, kind: str, name: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return getattr(self.hook.conn, f"describe_{kind}")(**{f"{kind.title().replace('_', '')}Name": name})
        except ClientError as err:
            if err.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                return None
            raise

    def _wait_seconds(self) -> int:
        sm = self.sm
        return sm.max_update_seconds + sm.canary_wait_seconds + sm.termination_wait_seconds + 1800

    # -- the steps ------------------------------------------------------------------------------------

    def execute(self, context):
        if not self.sm.image:
            raise AirflowFailException(f"{self.task_id}: serving.sagemaker.image is required (the predictor in ECR)")
        ref = self._ref()
        name = s.model_name(self.model_name, ref.version)
        if self._describe("model", name) is None:
            self.log.info("Creating SageMaker Model %s (version %s, %s)", name, ref.version, ref.storage_uri)
            self.hook.create_model(s.model_request(
                name, image=self.sm.image, model_data_url=ref.storage_uri,
                role_arn=self.role_arn or settings.sagemaker_role_arn(), model=self.model_name, version=ref.version,
                id_column=self.id_column, capture_bucket=self.bucket, cost_tags=self.extra_tags))
        cloudwatch = self._client("cloudwatch")
        for alarm in s.alarm_requests(self.endpoint, self.sm, self.extra_tags):
            cloudwatch.put_metric_alarm(**alarm)  # an upsert: a retry rewrites the same alarm
        live = self._describe("endpoint", self.endpoint)
        count = self.sm.min_instances
        if live:
            variants = {v["VariantName"]: v for v in live.get("ProductionVariants") or []}
            count = max(count, int((variants.get(s.VARIANT) or {}).get("CurrentInstanceCount") or 0))
        config = s.endpoint_config_request(self.model_name, ref.version, name, self.sm,
                                           bucket=self.bucket,
                                           instance_count=count, cost_tags=self.extra_tags)
        new = config["EndpointConfigName"]
        existing = self._describe("endpoint_config", new)
        if existing:  # an earlier run made it: its fleet size is the one the update starts
            count = int(existing["ProductionVariants"][0]["InitialInstanceCount"])
        else:
            self.log.info("Creating endpoint config %s (%s x %s, capture to %s)", new, count, self.sm.instance_type,
                          config["DataCaptureConfig"]["DestinationS3Uri"])
            self.hook.create_endpoint_config(config)

        if live is None:
            self.log.info("Creating endpoint %s with version %s (first deployment: nothing to roll back to)",
                          self.endpoint, ref.version)
            self.hook.conn.create_endpoint(EndpointName=self.endpoint, EndpointConfigName=new,
                                           Tags=s.tags(self.extra_tags))
            return self._wait(context, previous=None, update=None)
        status, serving_config = live["EndpointStatus"], live["EndpointConfigName"]
        if serving_config == new:
            if status == "InService":
                self.log.info("Endpoint %s already serves version %s (%s): nothing to change", self.endpoint,
                              ref.version, new)
                return self._complete(context, previous=None, update=None, outcome="unchanged")
            if status in IN_PROGRESS:
                self.log.info("Endpoint %s is %s with version %s (an earlier try): waiting", self.endpoint, status, ref.version)
                return self._wait(context, previous=None, update=None)
        if status in IN_PROGRESS:
            raise AirflowException(f"endpoint {self.endpoint} is {status} with {serving_config}: another deploy is "
                                   "running; deploy again once it is InService")
        if status != "InService":
            raise AirflowFailException(f"endpoint {self.endpoint} is {status} ({live.get('FailureReason')}); "
                                       "fix or delete it before deploying")
        update = {
            "EndpointName": self.endpoint, "EndpointConfigName": new, "RetainAllVariantProperties": False,
            "DeploymentConfig": s.deployment_config(self.endpoint, self.sm,
                                                    canary_percent=self.serving_spec.canary_traffic_percent,
                                                    instance_count=count,
                                                    canary=_as_bool(self.canary)),
        }
        self._prepare_scaling_for(serving_config, config)
        routing = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
        self.log.info("Updating endpoint %s: %s -> %s, blue/green %s (alarms %s roll it back)", self.endpoint,
                      serving_config, new, routing, s.alarm_names(self.endpoint))
        self._update_endpoint(update)
        return self._wait(context, previous=serving_config, update=update)

    def _update_endpoint(self, update: dict) -> None:
        if not settings.is_local():
            self.hook.conn.update_endpoint(**update)
            return
        # moto 5.2 has no UpdateEndpoint: its effect, with the calls moto has (see the module docstring).
        self.hook.conn.delete_endpoint(EndpointName=update["EndpointName"])
        self.hook.conn.create_endpoint(EndpointName=update["EndpointName"], EndpointConfigName=update["EndpointConfigName"],
                                       Tags=s.tags(self.extra_tags))

    def _prepare_scaling_for(self, serving_config: str, config: dict) -> None:
        """AWS refuses an update that changes the instance type of a variant under autoscaling:
        deregister the scalable target first (re-registered once the update is in service)."""
        old = self._describe("endpoint_config", serving_config) or {}
        old_type = {v["VariantName"]: v.get("InstanceType") for v in old.get("ProductionVariants") or []}.get(s.VARIANT)
        if old_type in (None, config["ProductionVariants"][0]["InstanceType"]):
            return
        register, _ = s.scaling_requests(self.endpoint, self.sm)
        target = {k: register[k] for k in ("ServiceNamespace", "ResourceId", "ScalableDimension")}
        aas = self._client("application-autoscaling")
        if aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[target["ResourceId"]],
                                         ScalableDimension=target["ScalableDimension"]).get("ScalableTargets"):
            self.log.info("Instance type %s -> %s: deregistering autoscaling of %s for the update", old_type,
                          config["ProductionVariants"][0]["InstanceType"], target["ResourceId"])
            aas.deregister_scalable_target(**target)

    def _wait(self, context, *, previous: str | None, update: dict | None, method: str = "execute_complete",
              reason: str | None = None):
        """Until the endpoint is InService again (the provider's SageMaker trigger on ``aws``)."""
        kwargs = {"previous": previous, "update": update, "reason": reason}
        if settings.is_local():  # moto applies every change at once
            return getattr(self, method)(context, {"status": "success"}, **kwargs)
        from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

        trigger = SageMakerTrigger(job_name=self.endpoint, job_type="endpoint", waiter_delay=self.check_interval,
                                   waiter_max_attempts=math.ceil(self._wait_seconds() / self.check_interval),
                                   aws_conn_id=self.aws_conn_id, region_name=self.region)
        if not self.deferrable:
            waiter = self.hook.conn.get_waiter("endpoint_in_service")
            waiter.wait(EndpointName=self.endpoint, WaiterConfig={
                "Delay": self.check_interval, "MaxAttempts": math.ceil(self._wait_seconds() / self.check_interval)})
            return getattr(self, method)(context, {"status": "success"}, **kwargs)
        self.defer(trigger=trigger, method_name=method, kwargs=kwargs,
                   timeout=timedelta(seconds=self._wait_seconds() + 60))

    def execute_complete(self, context, event: dict | None = None, previous: str | None = None,
                         update: dict | None = None, reason: str | None = None):
        ref = self._ref()
        live = self._describe("endpoint", self.endpoint) or {}
        where = f"endpoint {self.endpoint} in {self.region}"
        new = update["EndpointConfigName"] if update else live.get("EndpointConfigName")
        if (event or {}).get("status") != "success" or live.get("EndpointStatus") != "InService":
            raise AirflowFailException(f"{where} is {live.get('EndpointStatus')} after deploying version {ref.version}: "
                                       f"{live.get('FailureReason') or (event or {}).get('message')}")
        if update and live.get("EndpointConfigName") != new:
            raise AirflowFailException(
                f"SageMaker rolled {where} back to {live.get('EndpointConfigName')} (the last good version keeps "
                f"serving): the blue/green update to version {ref.version} failed: {live.get('FailureReason') or 'an alarm fired'}")
        return self._complete(context, previous=previous, update=update, outcome="deployed")

    def _complete(self, context, *, previous: str | None, update: dict | None, outcome: str) -> dict:
        ref = self._ref()
        where = f"endpoint {self.endpoint} in {self.region}"
        problem, url = self._smoke_test(ref)
        if problem:
            if previous is None:
                raise AirflowFailException(f"Deploying version {ref.version} to {where} failed and this try knows no "
                                           f"previous version to roll back to (a first deployment, or a retry of a "
                                           f"rollout SageMaker finished): {problem}")
            reason = f"smoke test of version {ref.version} failed: {problem}"
            self.log.error("%s; rolling %s back to %s", reason, where, previous)
            rollback = {"EndpointName": self.endpoint, "EndpointConfigName": previous, "RetainAllVariantProperties": False,
                        "DeploymentConfig": {"BlueGreenUpdatePolicy": {
                            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
                            "TerminationWaitInSeconds": 0,
                            "MaximumExecutionTimeoutInSeconds": self.sm.max_update_seconds}}}
            self._update_endpoint(rollback)
            return self._wait(context, previous=None, update=rollback, method="rollback_complete", reason=reason)
        self.log.info("Smoke test of version %s passed at %s", ref.version, url)
        self._ensure_scaling()
        live = self._describe("endpoint", self.endpoint) or {}
        result = {"region": self.region, "endpoint": self.endpoint, "version": ref.version,
                  "package_arn": ref.package_arn, "storage_uri": ref.storage_uri, "url": url, "outcome": outcome,
                  "endpoint_config": live.get("EndpointConfigName")}
        if update:
            result["update"] = update
        return result

    def rollback_complete(self, context, event: dict | None = None, previous: str | None = None,
                          update: dict | None = None, reason: str | None = None):
        live = self._describe("endpoint", self.endpoint) or {}
        state = f"{live.get('EndpointConfigName')} ({live.get('EndpointStatus')})"
        raise AirflowFailException(
            f"Rolled endpoint {self.endpoint} in {self.region} back to {state} after {reason}. Not retried: a retry "
            "would deploy the failed version again; deploy a fixed version, or re-run once the cause is fixed.")

    def _smoke_test(self, ref: ModelRef) -> tuple[str | None, str]:
        """``(problem or None, where)``: InvokeEndpoint with the version's own rows (``aws``); on ``local``
        the predictor started for the version answers the same ``/invocations`` call before it is swapped in."""
        sample = self.package.get("smoke_sample")
        if not sample:
            return f"no smoke-test rows for version {ref.version} (resolve the package with resolve_model_package)", "-"
        body = json.dumps(smoke.v2_request(sample)).encode()
        if settings.is_local():
            return self._serve_locally(ref, body, sample)
        url = f"https://runtime.sagemaker.{self.region}.amazonaws.com/endpoints/{self.endpoint}/invocations"
        try:
            answer = self._client("sagemaker-runtime").invoke_endpoint(
                EndpointName=self.endpoint, ContentType=s.JSON, Accept=s.JSON, Body=body)
            return smoke.response_problem(json.loads(answer["Body"].read()), sample), url
        except Exception as err:  # a ModelError, a throttle, a non-JSON body: all fail the smoke test
            return f"InvokeEndpoint failed: {err}", url

    def _serve_locally(self, ref: ModelRef, body: bytes, sample: dict) -> tuple[str | None, str]:
        from hybrid_mlops.local.serving import LocalServing, s3_fetch

        serving = LocalServing(self.model_name, capture_bucket=self.bucket, id_column=self.id_column,
                               ready_timeout=self.serving_spec.ready_timeout_seconds)
        try:
            result = serving.deploy(ref.version, ref.storage_uri, package_arn=ref.package_arn,
                                    fetch=s3_fetch(self.aws_conn_id),
                                    smoke_test=lambda url: invoke_problem(url, body, sample))
        except RuntimeError as err:
            return str(err), serving.url
        return None, f"{result['url']}/invocations"

    def _ensure_scaling(self) -> None:
        register, policy = s.scaling_requests(self.endpoint, self.sm)
        aas = self._client("application-autoscaling")
        aas.register_scalable_target(**register)  # both upserts
        aas.put_scaling_policy(**policy)
        self.log.info("Autoscaling %s: %s..%s instances, target %s invocations per instance", register["ResourceId"],
                      register["MinCapacity"], register["MaxCapacity"],
                      policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"])


def invoke_problem(base_url: str, body: bytes, sample: dict, timeout: float = 30.0) -> str | None:
    """POST the smoke request to ``<base_url>/invocations`` (SageMaker's container contract); the problem or None."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{base_url.rstrip('/')}/invocations", data=body, method="POST",
                                 headers={"Content-Type": s.JSON, "Accept": s.JSON})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return smoke.response_problem(json.loads(resp.read()), sample)
    except urllib.error.HTTPError as err:
        return f"POST /invocations -> {err.code}: {err.read()[:300].decode(errors='replace')}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        return f"POST /invocations failed: {err}"
