"""SageMaker hosting and Batch Transform requests for an approved version (pure functions, no I/O).

One model version becomes one SageMaker Model (``<model>-v<version>``, the predictor image from ECR,
the package's ``ModelDataUrl``, the predictor's settings as environment), one endpoint config per
version and settings (``<model>-v<version>-<hash>``: a changed instance type or capture setting makes
a new config rather than mutating one an endpoint may still roll back to), and one endpoint per model
(``<model>``), updated blue/green.

Capture: SageMaker's DataCaptureConfig writes its own format (one JSON line per request,
``captureData.endpointInput/endpointOutput`` with the body as text) under
``<DestinationS3Uri>/<endpoint>/<variant>/<yyyy>/<mm>/<dd>/<hh>/``, a layout the monitor cannot
share with ``capture/<model>/<yyyy>/<mm>/<dd>/<hh>/``. So the destination is
``s3://<bucket>/capture-sagemaker/<model>`` (SageMaker's record of the traffic, for audits and
SageMaker Model Monitor), and the predictor in the endpoint writes the monitor's own capture records
to ``capture/<model>/...`` as it does on KServe (``HYBRID_MLOPS_CAPTURE_BUCKET``);
:func:`hybrid_mlops.drift.capture.from_sagemaker_capture` maps one SageMaker record to the monitor's.

.. seealso::
    https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green-canary.html
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture.html
    https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-add-code-define.html
    https://docs.aws.amazon.com/sagemaker/latest/dg/batch-transform-data-processing.html
"""

from __future__ import annotations

import hashlib
import json

from hybrid_mlops.naming import resource_name

VARIANT = "AllTraffic"
JSON, JSONLINES, CSV = "application/json", "application/jsonlines", "text/csv"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
CAPTURE_PREFIX = "capture-sagemaker"


def endpoint_name(model: str) -> str:
    return model  # a spec name is DNS-safe and at most 42 characters: within SageMaker's pattern


def model_name(model: str, version: int | str, purpose: str = "") -> str:
    """``<model>-v<version>`` (``-batch``: the Batch Transform model, which writes no capture)."""
    return f"{model}-v{int(version)}" + (f"-{purpose}" if purpose else "")


def endpoint_config_name(model: str, version: int | str, request: dict) -> str:
    """``<model>-v<version>-<hash of the config's content>``. The instance count is left out of the hash:
    autoscaling moves it, and a redeploy of the same version and settings must find its config unchanged."""
    body = {k: v for k, v in request.items() if k not in ("EndpointConfigName", "Tags")}
    body["ProductionVariants"] = [{k: v for k, v in variant.items() if k != "InitialInstanceCount"}
                                  for variant in body.get("ProductionVariants") or []]
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
    return resource_name(model, f"v{version}", digest)


def scalable_resource_id(endpoint: str, variant: str = VARIANT) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def alarm_names(endpoint: str) -> list[str]:
    return [f"{endpoint}-{VARIANT}-5xx-errors", f"{endpoint}-{VARIANT}-p99-latency"]


def tags(cost_tags: dict[str, str]) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in cost_tags.items()]


def model_request(name: str, *, image: str, model_data_url: str, role_arn: str, model: str, version: int | str,
                  id_column: str | None, capture_bucket: str | None, cost_tags: dict[str, str]) -> dict:
    """``CreateModel``: the predictor image with the version's ``model.tar.gz``; the predictor reads its
    options from the environment (``include/serving/predictor/sagemaker.py`` ``serve_argv``)."""
    env = {"HYBRID_MLOPS_MODEL_NAME": model, "HYBRID_MLOPS_MODEL_VERSION": str(version)}
    if id_column:
        env["HYBRID_MLOPS_ID_COLUMN"] = id_column
    if capture_bucket:
        env["HYBRID_MLOPS_CAPTURE_BUCKET"] = capture_bucket
    return {
        "ModelName": name,
        "PrimaryContainer": {"Image": image, "ModelDataUrl": model_data_url, "Environment": env, "Mode": "SingleModel"},
        "ExecutionRoleArn": role_arn,
        "Tags": tags(cost_tags),
    }


def endpoint_config_request(model: str, version: int | str, model_name_: str, sm, *, bucket: str,
                            instance_count: int, cost_tags: dict[str, str]) -> dict:
    """``CreateEndpointConfig``: one variant, data capture of inputs and outputs.

    :param sm: the spec's ``serving.sagemaker`` section.
    :param instance_count: the variant's ``InitialInstanceCount`` (the live count on an update, so
        the green fleet starts as large as the blue one serves now).
    """
    request = {
        "ProductionVariants": [{
            "VariantName": VARIANT, "ModelName": model_name_, "InstanceType": sm.instance_type,
            "InitialInstanceCount": int(instance_count), "InitialVariantWeight": 1.0,
        }],
        "DataCaptureConfig": {
            "EnableCapture": True,
            "InitialSamplingPercentage": sm.capture_sampling_percent,
            "DestinationS3Uri": f"s3://{bucket}/{CAPTURE_PREFIX}/{model}",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": [JSON, JSONLINES], "CsvContentTypes": [CSV]},
        },
    }
    return {"EndpointConfigName": endpoint_config_name(model, version, request), **request, "Tags": tags(cost_tags)}


def deployment_config(endpoint: str, sm, *, canary_percent: int, instance_count: int, canary: bool) -> dict:
    """``DeploymentConfig`` of an update: blue/green with the alarms rolling it back.

    A canary needs at most half of the green fleet (SageMaker's limit): ``canary_percent`` of the
    instances, at least one, at most half; with one instance (or ``canary`` off) the whole green
    fleet takes the traffic at once, still baked ``canary_wait_seconds`` under the alarms.
    """
    if canary and instance_count >= 2:
        size = min(instance_count // 2, max(1, instance_count * canary_percent // 100))
        routing = {"Type": "CANARY", "WaitIntervalInSeconds": sm.canary_wait_seconds,
                   "CanarySize": {"Type": "INSTANCE_COUNT", "Value": size}}
    else:
        routing = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": sm.canary_wait_seconds}
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": sm.termination_wait_seconds,
            "MaximumExecutionTimeoutInSeconds": sm.max_update_seconds,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": n} for n in alarm_names(endpoint)]},
    }


def alarm_requests(endpoint: str, sm, cost_tags: dict[str, str]) -> list[dict]:
    """``PutMetricAlarm`` x 2 on the variant: 5XX errors and p99 model latency (µs in CloudWatch).

    Missing data is not breaching: an endpoint without traffic does not roll back.
    """
    dims = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT}]
    common = {"Namespace": "AWS/SageMaker", "Dimensions": dims, "Period": 60, "EvaluationPeriods": 1,
              "DatapointsToAlarm": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
              "TreatMissingData": "notBreaching", "Tags": tags(cost_tags)}
    errors_name, latency_name = alarm_names(endpoint)
    return [
        {"AlarmName": errors_name, "AlarmDescription": f"{endpoint}: 5XX errors roll a blue/green update back",
         "MetricName": "Invocation5XXErrors", "Statistic": "Sum", "Threshold": float(sm.alarm_5xx_errors),
         "Unit": "Count", **common},
        {"AlarmName": latency_name, "AlarmDescription": f"{endpoint}: p99 model latency rolls a blue/green update back",
         "MetricName": "ModelLatency", "ExtendedStatistic": "p99", "Threshold": float(sm.alarm_latency_ms) * 1000.0,
         "Unit": "Microseconds", **common},
    ]


def scaling_requests(endpoint: str, sm) -> tuple[dict, dict]:
    """``RegisterScalableTarget`` and a target-tracking ``PutScalingPolicy`` on invocations per instance."""
    target = {"ServiceNamespace": "sagemaker", "ResourceId": scalable_resource_id(endpoint),
              "ScalableDimension": SCALABLE_DIMENSION}
    register = {**target, "MinCapacity": sm.min_instances, "MaxCapacity": sm.max_instances}
    policy = {
        **target,
        "PolicyName": f"{endpoint}-invocations-per-instance",
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(sm.invocations_per_instance),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": sm.scale_in_cooldown_seconds,
            "ScaleOutCooldown": sm.scale_out_cooldown_seconds,
        },
    }
    return register, policy


def transform_request(job_name: str, model_name_: str, *, input_uri: str, output_uri: str, content_type: str,
                      instance_type: str, instance_count: int, max_payload_mb: int,
                      cost_tags: dict[str, str]) -> dict:
    """``CreateTransformJob``: every line a record, many records per call, the input joined to the output.

    JSON lines: the container gets whole records (it ignores the id) and each output line is the input
    object with ``SageMakerOutput`` added. CSV: ``InputFilter: $[1:]`` drops the id column on the way in,
    and the output line is the whole input line with the scores appended.
    """
    processing = {"JoinSource": "Input", "OutputFilter": "$"}
    if content_type == CSV:
        processing["InputFilter"] = "$[1:]"
    return {
        "TransformJobName": job_name,
        "ModelName": model_name_,
        "MaxPayloadInMB": max_payload_mb,
        "BatchStrategy": "MultiRecord",
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 1},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": content_type, "SplitType": "Line", "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": content_type, "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
        "DataProcessing": processing,
        "Tags": tags(cost_tags),
    }


def join_output(content_type: str, input_line: bytes, output_line: bytes) -> bytes:
    """One joined output line, as Batch Transform writes it with ``JoinSource: Input``."""
    if content_type == CSV:
        return input_line.rstrip(b"\r\n") + b"," + output_line.rstrip(b"\r\n")
    record, result = input_line.strip(), output_line.strip()
    if record.startswith(b"{") and record.endswith(b"}") and result:  # splice: no parse of either side
        inner = record[1:-1].strip()
        return b"{" + inner + (b"," if inner else b"") + b'"SageMakerOutput":' + result + b"}"
    raise ValueError(f"a JSON lines record must be an object: {record[:80]!r}")
