"""``batch_score_<model>``: score the files under an S3 prefix with an approved version.

::

    check_request -> resolve_model_package -> transform_request -> batch_transform -> summary

Schedule: ``schedule.batch_score`` (scoring ``batch.input_uri``), else on demand from a typed form
(input and output prefix, version, content type, instance type and count). ``batch_transform`` is
:class:`~hybrid_mlops.operators.batch_transform.BatchTransformOperator`: a SageMaker Batch Transform
job on ``aws`` (``SplitType: Line``, ``BatchStrategy: MultiRecord``, ``JoinSource: Input`` so every
output line keeps its id), the project's predictor scoring the same request on ``local``. Output:
``<output_uri>/<run key>/<input key>.out``, one per input object; a rerun of the run reuses the job.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hybrid_mlops.specs import ModelSpec

CONTENT_TYPES = ["application/jsonlines", "text/csv"]
INSTANCE_TYPES = ["ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.c5.xlarge", "ml.c5.2xlarge",
                  "ml.c5.4xlarge", "ml.g4dn.xlarge", "ml.g5.xlarge"]
S3_PREFIX = r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9]|\{bucket\})(/.*)?$"


def build(specs: list[ModelSpec]) -> list:
    return [_build_one(spec.model_copy(deep=True)) for spec in specs]


def _params(spec: ModelSpec) -> dict:
    from airflow.sdk import Param

    from hybrid_mlops.dags.deploy import LATEST

    b = spec.batch
    return {
        "input_uri": Param(b.input_uri or "", type="string", pattern=rf"({S3_PREFIX})|^$",
                           description="S3 prefix of the files to score (JSON lines or CSV; every object under it). "
                                       "{bucket} stands for the artifacts bucket."),
        "output_uri": Param(b.output_uri or "", type="string", pattern=rf"({S3_PREFIX})|^$",
                            description="S3 prefix for the scores (empty: s3://<bucket>/batch-scores/<model>); "
                                        "each run writes under <output_uri>/<run key>/."),
        "version": Param(LATEST, type="string", pattern=rf"^({LATEST}|[0-9]+)$",
                         description=f"Model package version, or {LATEST!r} (the newest Approved one, what a deploy serves)."),
        "content_type": Param(b.content_type, type="string", enum=CONTENT_TYPES,
                              description="JSON lines (an object per line: the id and the features) or CSV (no "
                                          "header: the id, the numeric features, then the categorical ones)."),
        "instance_type": Param(b.instance_type, type="string", enum=sorted({*INSTANCE_TYPES, b.instance_type}),
                               description="Batch Transform instance type (aws)."),
        "instance_count": Param(b.instance_count, type="integer", minimum=1, maximum=100,
                                description="Batch Transform instances (aws)."),
    }


def _build_one(spec: ModelSpec):
    from airflow.sdk import DAG, task

    from hybrid_mlops import settings
    from hybrid_mlops.dags.deploy import _resolve_task
    from hybrid_mlops.operators.batch_transform import BatchTransformOperator

    with DAG(
        dag_id=f"batch_score_{spec.dag_suffix}",
        description=f"Score an S3 prefix with an approved {spec.name} version (Batch Transform)",
        schedule=spec.schedule.batch_score,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params=_params(spec),
        tags=["hybrid-mlops", spec.name, "batch_score", f"team:{spec.team}"],
        default_args={"owner": spec.team, "retries": 1, "retry_delay": timedelta(seconds=30)},
        doc_md=__doc__,
    ) as dag:

        @task
        def check_request(**context) -> dict:
            """The form, checked: every error names its field."""
            import re

            from airflow.sdk.exceptions import AirflowFailException

            from hybrid_mlops.naming import resource_name, run_key

            p, bucket = context["params"], settings.bucket()
            input_uri = (p.get("input_uri") or "").replace("{bucket}", bucket).strip()
            if not input_uri:
                raise AirflowFailException("input_uri: is required (the S3 prefix of the files to score; set it in "
                                           "the form, or batch.input_uri in the spec)")
            output_uri = ((p.get("output_uri") or "").replace("{bucket}", bucket).strip()
                          or f"s3://{bucket}/batch-scores/{spec.name}").rstrip("/")
            for field, value in (("input_uri", input_uri), ("output_uri", output_uri)):
                if not re.match(S3_PREFIX, value):
                    raise AirflowFailException(f"{field}={value!r}: must be an s3://bucket/prefix URI")
            if p.get("content_type") not in CONTENT_TYPES:
                raise AirflowFailException(f"content_type={p.get('content_type')!r}: must be one of {CONTENT_TYPES}")
            count = p.get("instance_count")
            if not isinstance(count, int) or not 1 <= count <= 100:
                raise AirflowFailException(f"instance_count={count!r}: must be an integer from 1 to 100")
            if not settings.is_local() and not spec.serving.sagemaker.image:
                raise AirflowFailException("serving.sagemaker.image: Batch Transform needs the predictor image in "
                                           f"ECR; set it in include/models/{spec.name}.yaml")
            key = run_key(context["dag"].dag_id, context["run_id"])
            return {"input_uri": input_uri, "output_uri": f"{output_uri}/{key}/", "content_type": p["content_type"],
                    "instance_type": p["instance_type"], "instance_count": count,
                    "job_name": resource_name(spec.name, "batch", key)}

        @task
        def transform_request(request: dict, package: dict) -> dict:
            """The ``CreateModel`` + ``CreateTransformJob`` requests: the same on both targets."""
            from hybrid_mlops.serving import sagemaker as s

            model_name = s.model_name(spec.name, package["version"], "batch")
            # aws: check_request refused a spec without the ECR image; local runs the predictor from .venv-serve
            image = spec.serving.sagemaker.image or spec.serving.image
            model = s.model_request(model_name, image=image, model_data_url=package["storage_uri"],
                                    role_arn=settings.sagemaker_role_arn(), model=spec.name,
                                    version=package["version"], id_column=spec.data_schema.id, capture_bucket=None,
                                    cost_tags=spec.cost_tags())
            transform = s.transform_request(
                request["job_name"], model_name, input_uri=request["input_uri"], output_uri=request["output_uri"],
                content_type=request["content_type"], instance_type=request["instance_type"],
                instance_count=request["instance_count"], max_payload_mb=spec.batch.max_payload_mb,
                cost_tags=spec.cost_tags())
            print(f"Scoring {request['input_uri']} with {spec.name} version {package['version']} -> "
                  f"{request['output_uri']} (job {request['job_name']})")
            return {"Model": model, "Transform": transform}

        @task
        def summary(result: dict) -> dict:
            """What was scored, and where the scores are."""
            transform = result["Transform"]
            out = {"job": transform["TransformJobName"], "status": transform["TransformJobStatus"],
                   "model": transform["ModelName"], "output_uri": transform["TransformOutput"]["S3OutputPath"],
                   "reused": bool(result.get("reused")), **(result.get("local") or {})}
            print(out)
            return out

        request = check_request()
        package = _resolve_task(spec)("{{ params.version }}")
        request >> package
        config = transform_request(request, package)
        scored = BatchTransformOperator(
            task_id="batch_transform", config=config, aws_conn_id=settings.aws_conn_id(),
            max_ingestion_time=spec.batch.max_runtime_seconds,
        )
        summary(scored.output)
    return dag
