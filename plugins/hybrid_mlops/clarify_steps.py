"""Registration's bias and feature-attribution baselines (the retrain DAG, when the spec sets ``drift.bias``
or ``drift.feature_attribution``).

    evaluate -> clarify_inputs (the validation rows as rows.json) -> clarify_baseline (the attributions job:
    the model's predictions and SHAP values where the model runs) -> clarify_reports (Clarify's bias
    analysis of the validation data, pre- and post-training; the attributions as the explainability
    baseline; ModelMetrics Bias / Explainability) -> register

The documents land beside ``model.tar.gz`` with the data-quality baseline, where the monitor reads them.
"""

from __future__ import annotations

import json
import logging

from hybrid_mlops import settings
from hybrid_mlops.specs import ModelSpec

log = logging.getLogger(__name__)


def enabled(spec: ModelSpec) -> bool:
    return spec.drift.bias is not None or spec.drift.feature_attribution is not None


def _validation_columns(spec: ModelSpec, prepared: dict) -> dict:
    from hybrid_mlops.drift.clarify import MAX_BASELINE_ROWS
    from hybrid_mlops.hooks.drift import DriftHook

    schema = spec.data_schema
    columns = DriftHook(aws_conn_id=settings.aws_conn_id()).read_parquet_columns(
        prepared["validation_uri"], [*schema.numeric, *schema.categorical, schema.label])
    return {k: v[:MAX_BASELINE_ROWS] for k, v in columns.items()}


def clarify_inputs(spec: ModelSpec, evaluation: dict, prepared: dict) -> dict:
    """``rows.json`` (the first validation rows) and the script uploaded; the job's request."""
    from hybrid_mlops.drift import clarify
    from hybrid_mlops.hooks.drift import DriftHook

    hook = DriftHook(aws_conn_id=settings.aws_conn_id())
    schema = spec.data_schema
    features = [*schema.numeric, *schema.categorical]
    artifact = evaluation["model_data_url"]
    bucket, key = hook.parse_s3_url(artifact)
    base = key.rsplit("/", 1)[0]
    rows = clarify.rows_document(_validation_columns(spec, prepared), features, spec.drift.feature_attribution,
                                 baseline_row=None, seed=0)
    rows_uri = hook.put_json(rows, bucket, f"{base}/clarify/input/rows.json")
    code_key = clarify.code_key()
    if not hook.check_for_key(code_key, settings.bucket()):
        hook.load_file(str(clarify.ATTRIBUTIONS_SCRIPT), code_key, settings.bucket(), replace=True)
    fa = spec.drift.feature_attribution
    job = evaluation["lineage"]["training_job"]
    return clarify.processing_config(
        name=clarify.job_name(spec.name, "baseline", job),
        model_data_url=artifact, code_uri=f"s3://{settings.bucket()}/{code_key}", rows_uri=rows_uri,
        output_uri=f"s3://{bucket}/{base}/clarify/output", predict=True,
        image_uri=(fa.processing_image_uri if fa and fa.processing_image_uri else spec.serving.image),
        instance_type=fa.processing_instance_type if fa else "ml.m5.xlarge",
        role_arn=settings.sagemaker_role_arn(), tags=spec.cost_tags())


def clarify_reports(spec: ModelSpec, evaluation: dict, prepared: dict, job: dict) -> dict:
    """The baselines beside ``model.tar.gz``; returns ``evaluation``'s ModelMetrics with Bias / Explainability."""
    import numpy as np

    from hybrid_mlops.drift import bias, clarify
    from hybrid_mlops.hooks.drift import DriftHook

    hook = DriftHook(aws_conn_id=settings.aws_conn_id())
    artifact = evaluation["model_data_url"]
    bucket, key = hook.parse_s3_url(artifact)
    base = key.rsplit("/", 1)[0]
    out_bucket, out_key = hook.parse_s3_url(job["output_uri"].rstrip("/"))

    def output(name: str) -> dict:
        return json.loads(hook.read_key(f"{out_key}/{name}", out_bucket))

    metrics = dict(evaluation["model_metrics"])

    def ref(name: str) -> dict:
        return {"ContentType": "application/json", "S3Uri": f"s3://{bucket}/{base}/{name}"}

    if (config := spec.drift.bias) is not None:
        columns = _validation_columns(spec, prepared)
        outputs = np.asarray(output("predictions.json")["outputs"], dtype=np.float64)
        schema = spec.data_schema
        predicted = clarify.predicted_positive(spec.task, outputs, config, classes=schema.classes,
                                               threshold=float(evaluation["metrics"].get("threshold", 0.5)))
        doc = bias.analysis(config, facet_values=columns[config.facet], labels=columns[schema.label],
                            predicted_positive=predicted, label_name=schema.label,
                            groups=columns.get(config.group) if config.group else None)
        hook.put_json(doc, bucket, f"{base}/{clarify.BIAS_BASELINE}")
        metrics["Bias"] = {"Report": ref(clarify.BIAS_BASELINE)}
        log.info("Bias baseline of %s: %s", artifact,
                 {f"{facet}={value}:{name}": v for (facet, value, name), v in bias.metric_values(doc).items()})
    if spec.drift.feature_attribution is not None:
        hook.put_json(output("analysis.json"), bucket, f"{base}/{clarify.EXPLAINABILITY_BASELINE}")
        hook.put_json(output("baseline_row.json"), bucket, f"{base}/{clarify.BASELINE_ROW}")
        metrics["Explainability"] = {"Report": ref(clarify.EXPLAINABILITY_BASELINE)}
    return metrics


def baseline_tasks(spec: ModelSpec, evaluation, prepared):
    """The three tasks in the retrain DAG; returns the XComArg of the ModelMetrics to register."""
    from airflow.sdk import task

    from hybrid_mlops.operators.drift import AttributionsJobOperator

    @task(task_id="clarify_inputs")
    def inputs(evaluation: dict, prepared: dict) -> dict:
        """The validation rows and the attributions script for the baseline job."""
        return clarify_inputs(spec, evaluation, prepared)

    @task(task_id="clarify_reports")
    def reports(evaluation: dict, prepared: dict, job: dict) -> dict:
        """Bias and explainability baselines beside model.tar.gz; the ModelMetrics to register."""
        return clarify_reports(spec, evaluation, prepared, job)

    evaluated = {"model_data_url": evaluation["model_data_url"], "lineage": evaluation["lineage"],
                 "metrics": evaluation["metrics"], "model_metrics": evaluation["model_metrics"]}
    job = AttributionsJobOperator(task_id="clarify_baseline", config=inputs(evaluated, prepared),
                                  aws_conn_id=settings.aws_conn_id(), region_name=settings.region())
    return reports(evaluated, prepared, job.output)
