"""A fleet of registered, deployed, monitored and costed models on the local target, written in the
stores and shapes the DAGs write (registry versions with lineage metadata and ModelLifeCycle, the
deployment record, hourly drift reports, the daily ``cost.json``), without running them: what the
Models page benchmark and tests read.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from hybrid_mlops import layout, settings
from hybrid_mlops.specs.model import TASK_METRICS, ModelSpec


def _metrics(spec: ModelSpec, version: int) -> dict[str, str]:
    figures = {}
    for i, name in enumerate(TASK_METRICS[spec.task]):
        base = 0.8 + 0.002 * version + 0.01 * i if name not in ("log_loss", "mae", "rmse") else 0.4 - 0.001 * version
        figures[name] = f"{base:.6f}"
    return figures


def seed_model(spec: ModelSpec, versions: int, *, hours: int = 24, pool: ThreadPoolExecutor | None = None,
               now: datetime | None = None) -> dict:
    """Register ``versions`` versions of ``spec`` (the newest pending, the one before it served in prod,
    older ones archived, rejected or in staging), its deployment record and ``hours`` hourly drift
    reports (the newest with violations). Returns ``{"prod_version", "drift_window"}``."""
    from hybrid_mlops.hooks.records import RecordsHook
    from hybrid_mlops.hooks.registry import ModelRegistryHook, model_life_cycle

    now = (now or datetime.now(timezone.utc)).replace(minute=0, second=0, microsecond=0)
    conn, region, bucket = settings.aws_conn_id(), settings.region(), settings.bucket()
    registry = ModelRegistryHook(aws_conn_id=conn, region_name=region)
    records = RecordsHook(aws_conn_id=conn, region_name=region)
    group = spec.registry.model_package_group
    registry.ensure_group(group, spec.registry.description, spec.cost_tags())
    prod = versions - 1 if versions > 1 else 1

    def status_of(v: int) -> tuple[str, dict]:
        if v == versions and versions > 1:
            return "PendingManualApproval", model_life_cycle("dev", "PendingApproval", "awaiting approval")
        if v == prod:
            return "Approved", model_life_cycle("prod", "Deployed", f"Served in {' '.join(spec.serving.regions)}")
        if v % 5 == 0:
            return "Rejected", model_life_cycle("dev", "Rejected", "Rejected by the rules")
        if v % 7 == 0:
            return "Approved", model_life_cycle("staging", "Approved", "Approved by the rules")
        return "Approved", model_life_cycle("archived", "Retired", f"Replaced in prod by version {v + 1}")

    # Versions are numbered in creation order: create them one after another.
    for v in range(1, versions + 1):
        status, lifecycle = status_of(v)
        job = f"{spec.name}-v{v}"
        uri = layout.model_artifact_uri(bucket, spec.name, job)
        registry.create_package({
            "ModelPackageGroupName": group,
            "ModelPackageDescription": f"{spec.name} version {v}",
            "ModelApprovalStatus": status,
            "InferenceSpecification": {"Containers": [{"Image": spec.registry.inference_image, "ModelDataUrl": uri}],
                                       "SupportedContentTypes": ["application/json"],
                                       "SupportedResponseMIMETypes": ["application/json"]},
            "CustomerMetadataProperties": {"training_job": job, "trigger": "schedule", "decision": "rules",
                                           **_metrics(spec, v)},
            "ModelLifeCycle": lifecycle,
        })
    prod_package = registry.package_by_version(group, prod)
    records.put_deployment_record(bucket, spec.name, {
        "model": spec.name, "target": settings.target(), "version": prod,
        "package_arn": prod_package["ModelPackageArn"],
        "storage_uri": prod_package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],
        "previous_version": prod - 1 if prod > 1 else None,
        "deployed_at": (now - timedelta(hours=hours)).isoformat(),
        "regions": {r: {"version": prod, "traffic_percent": 100, "min_replicas": spec.serving.min_replicas,
                        "max_replicas": spec.serving.max_replicas, "url": None, "outcome": "deployed",
                        "deployed_at": (now - timedelta(hours=hours)).isoformat()} for r in spec.serving.regions},
    })
    features = [*spec.data_schema.numeric, *spec.data_schema.categorical][:1]

    def report(h: int) -> None:
        start = now - timedelta(hours=h + 1)
        drifted = h == 0
        body = {"model": spec.name, "window_start": start.isoformat(), "window_end": (start + timedelta(hours=1)).isoformat(),
                "status": "violations" if drifted else "ok", "rows": 1200, "violations": len(features) if drifted else 0,
                "violated_features": features if drifted else [],
                "message": f"1 violation(s) on {features}" if drifted else "No feature violates the baseline.",
                "model_package_arn": prod_package["ModelPackageArn"]}
        records.conn.put_object(Bucket=bucket, Key=f"{layout.monitoring_prefix(spec.name, start)}report.json",
                                Body=json.dumps(body).encode(), ContentType="application/json")

    list((pool.map if pool else map)(report, range(hours)))
    return {"prod_version": prod, "drift_window": (now - timedelta(hours=1)).isoformat()}


def seed_cost_report(specs: list[ModelSpec], day: str) -> dict:
    """``cost-reports/<day>/cost.json`` (schema ``hybrid-mlops/cost-report/v1``, the fields the page reads)."""
    from hybrid_mlops.hooks.records import RecordsHook

    models = []
    for i, spec in enumerate(specs):
        total, predictions = 12.5 + i, 250_000 + 1000 * i
        models.append({"model": spec.name, "budget_usd": spec.cost.daily_budget_usd, "estimated": False,
                       "totals": {"training_usd": 4.0, "serving_usd": total - 4.0, "processing_usd": 0.0,
                                  "storage_usd": 0.0, "other_usd": 0.0, "total_usd": total},
                       "predictions": predictions,
                       "cost_per_1k_predictions_usd": (total - 4.0) / predictions * 1000, "versions": []})
    doc = {"schema": "hybrid-mlops/cost-report/v1", "day": day, "target": settings.target(), "status": "ok",
           "final": True, "currency": "USD", "basis": "UnblendedCost", "models": models}
    hook = RecordsHook(aws_conn_id=settings.aws_conn_id(), region_name=settings.region())
    hook.conn.put_object(Bucket=settings.bucket(), Key=f"{layout.cost_report_prefix(day)}cost.json",
                         Body=json.dumps(doc).encode(), ContentType="application/json")
    return doc
