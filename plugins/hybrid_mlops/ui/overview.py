"""Everything the Models page shows, read from the stores the DAGs write to, with bounded work.

Per model spec:

- **registry**: ``ListModelPackages`` (one page of up to 100 summaries: version, approval status and, on
  ``aws``, ``ModelLifeCycle``). The newest :data:`DETAILED_VERSIONS` versions and every served one are
  detailed: metrics, the decision and the person from ``DescribeModelPackage``
  (``CustomerMetadataProperties``, ``ApprovalDescription``), cached per version and fetched again only
  when its approval status or stage changed, so a warm page load describes nothing that did not change;
  on ``local`` the ModelLifeCycle mirror is listed once and only changed blocks (by ETag) are fetched;
- **serving**: the deployment record ``record_deployment`` writes (``deployments/<model>.json``: version,
  target, regions with traffic and replicas) and, on ``local``, whether its predictor still runs;
- **drift**: the newest ``monitoring/<model>/<yyyy>/<mm>/<dd>/<hh>/report.json`` (the monitor's summary);
- **cost**: yesterday's ``cost-reports/<day>/cost.json`` (one read for the fleet).

All requests run on one thread pool of :data:`MAX_CONCURRENCY` workers (the registry's and S3's request
rates stay bounded whatever the fleet's size).
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from typing import Any

from hybrid_mlops import layout, settings
from hybrid_mlops.specs.model import ModelSpec

MAX_CONCURRENCY = 8
#: Versions listed per model (one ListModelPackages page).
MAX_VERSIONS = 100
#: Versions per model shown with their metrics and decision (the newest, plus every version a deployment
#: record names); older ones are listed from the summaries alone (version, approval status, stage on aws).
DETAILED_VERSIONS = 10
#: Rebuild the AWS clients this often (credentials of a rotated connection).
CLIENT_TTL_SECONDS = 600


def _fingerprint(summary: dict) -> tuple:
    lifecycle = summary.get("ModelLifeCycle") or {}
    return (summary.get("ModelApprovalStatus"), lifecycle.get("Stage"), lifecycle.get("StageStatus"),
            lifecycle.get("StageDescription"))


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


class ModelsOverview:
    """Collects the Models page's data for a set of specs; one instance per process keeps the caches.

    :param aws_conn_id: the Airflow AWS connection (default ``settings.aws_conn_id()``).
    :param max_workers: concurrent requests at most.
    """

    def __init__(self, *, aws_conn_id: str | None = None, region_name: str | None = None,
                 max_workers: int = MAX_CONCURRENCY):
        self.aws_conn_id = aws_conn_id or settings.aws_conn_id()
        self.region_name = region_name or settings.region()
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._described: dict[str, tuple[tuple, dict]] = {}
        self._mirror: dict[str, tuple[str, dict | None]] = {}
        self._hooks: tuple[float, Any, Any] | None = None
        self.requests = 0  #: describe + mirror reads of the last collect (for the benchmark)

    def _clients(self):
        from hybrid_mlops.hooks.records import RecordsHook
        from hybrid_mlops.hooks.registry import ModelRegistryHook

        with self._lock:
            if self._hooks is None or time.monotonic() - self._hooks[0] > CLIENT_TTL_SECONDS:
                registry = ModelRegistryHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
                records = RecordsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
                registry.conn, records.conn  # noqa: B018 - build the clients once, before the threads share them
                registry._mirror_s3()
                self._hooks = (time.monotonic(), registry, records)
            return self._hooks[1], self._hooks[2]

    # -- collection --------------------------------------------------------------------------------

    def collect(self, specs: list[ModelSpec], *, today: date | None = None, detailed: int = DETAILED_VERSIONS) -> dict:
        """The page's document: ``{"generated_at", "target", "cost_day", "models": [...]}``.

        :param detailed: versions per model described (metrics, decision), newest first.
        """
        registry, records = self._clients()
        bucket = settings.bucket()
        day = ((today or datetime.now(timezone.utc).date()) - timedelta(days=1)).isoformat()
        self.requests = 0
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="models-page") as pool:
            cost_f = pool.submit(records.cost_report, bucket, day)
            firsts = {s.name: pool.submit(self._first_pass, registry, records, bucket, s, detailed) for s in specs}
            first = {name: f.result() for name, f in firsts.items()}
            # Second pass: every describe and mirror read the fleet needs, on the same pool.
            mirror_jobs = [(arn, etag) for f in first.values() for arn, etag in f["mirror_todo"]]
            for arn, lifecycle in zip([a for a, _ in mirror_jobs],
                                      pool.map(lambda j: registry.mirrored_lifecycle(j[0]), mirror_jobs)):
                etag = dict(mirror_jobs)[arn]
                with self._lock:
                    self._mirror[arn] = (etag, lifecycle)
            for f in first.values():
                for s in f["summaries"]:
                    if "ModelLifeCycle" not in s and s["ModelPackageArn"] in self._mirror:
                        lifecycle = self._mirror[s["ModelPackageArn"]][1]
                        if lifecycle:
                            s["ModelLifeCycle"] = lifecycle
            todo = [s for f in first.values() for s in f["summaries"] if s["ModelPackageArn"] in f["detailed"]
                    and self._described.get(s["ModelPackageArn"], ((),))[0] != _fingerprint(s)]
            for s, described in zip(todo, pool.map(lambda s: registry.describe_package(
                    s["ModelPackageArn"], with_mirror=False), todo)):
                with self._lock:
                    self._described[s["ModelPackageArn"]] = (_fingerprint(s), described)
            self.requests = len(mirror_jobs) + len(todo)
            cost = cost_f.result()
        models = [self._model(spec, first[spec.name], cost, bucket, registry) for spec in specs]
        return {
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "target": settings.target(),
            "cost_day": (cost or {}).get("day", day),
            "cost_status": (cost or {}).get("status", "missing"),
            "models": models,
        }

    def _first_pass(self, registry, records, bucket: str, spec: ModelSpec, detailed: int) -> dict:
        summaries = registry.list_versions(spec.registry.model_package_group, limit=MAX_VERSIONS)
        deployment = records.deployment_record(bucket, spec.name)
        served = {(deployment or {}).get("version")} | {
            e.get("version") for e in ((deployment or {}).get("regions") or {}).values()}
        chosen = {s["ModelPackageArn"] for i, s in enumerate(summaries)
                  if i < detailed or s.get("ModelPackageVersion") in served}
        mirror_todo: list[tuple[str, str]] = []
        if summaries and registry.mirrors_lifecycle() and any("ModelLifeCycle" not in s for s in summaries):
            etags = registry.lifecycle_mirror_etags(summaries[0]["ModelPackageArn"])
            for s in summaries:
                arn = s["ModelPackageArn"]
                if "ModelLifeCycle" in s or arn not in etags or arn not in chosen:
                    continue
                cached = self._mirror.get(arn)
                if cached is None or cached[0] != etags[arn]:
                    mirror_todo.append((arn, etags[arn]))
        return {
            "summaries": summaries,
            "detailed": chosen,
            "mirror_todo": mirror_todo,
            "deployment": deployment,
            "drift": records.newest_drift_report(bucket, spec.name),
        }

    # -- assembly ----------------------------------------------------------------------------------

    def _model(self, spec: ModelSpec, first: dict, cost: dict | None, bucket: str, registry) -> dict:
        metric_names = [*spec.approval.rules, "oracle_roc_auc"]
        versions = []
        for s in first["summaries"]:
            detailed = s["ModelPackageArn"] in first["detailed"]
            described = self._described.get(s["ModelPackageArn"], ((), {}))[1] if detailed else {}
            props = described.get("CustomerMetadataProperties") or {}
            lifecycle = s.get("ModelLifeCycle") or described.get("ModelLifeCycle") or {}
            metrics = {m: _number(props.get(m)) for m in metric_names if _number(props.get(m)) is not None}
            versions.append({
                "version": s.get("ModelPackageVersion"),
                "arn": s["ModelPackageArn"],
                "created": str(s.get("CreationTime", "")),
                "status": s.get("ModelApprovalStatus"),
                "stage": lifecycle.get("Stage"),
                "stage_status": lifecycle.get("StageStatus"),
                "stage_description": lifecycle.get("StageDescription"),
                "approval_description": described.get("ApprovalDescription"),
                "decision": props.get("decision"),
                "decided_by": props.get("decided_by"),
                "trigger": props.get("trigger"),
                "training_job": props.get("training_job"),
                "run_id": props.get("run_id"),
                "metrics": metrics,
                "detailed": detailed,
            })
        deployment = first["deployment"]
        if deployment and settings.is_local():
            from hybrid_mlops.local.serving import LocalServing

            live = LocalServing(spec.name).current()
            deployment = {**deployment, "running": bool(live and int(live["version"]) == int(deployment["version"]))}
        return {
            "model": spec.name,
            "team": spec.team,
            "task": spec.task,
            "group": spec.registry.model_package_group,
            "metric_names": metric_names,
            "versions": versions,
            "deployment": deployment,
            "drift": _drift(first["drift"]),
            "cost": _cost(cost, spec.name),
            "links": _links(spec, bucket, registry, first["drift"], cost),
        }


def _drift(report: dict | None) -> dict | None:
    if not report:
        return None
    return {k: report.get(k) for k in ("status", "message", "violations", "violated_features", "window_start",
                                       "window_end", "rows", "report_key", "model_package_arn")}


def _cost(cost: dict | None, model: str) -> dict | None:
    if not cost:
        return None
    entry = next((m for m in cost.get("models", []) if m.get("model") == model), None)
    if entry is None:
        return {"day": cost.get("day"), "status": "no figures for this model"}
    return {
        "day": cost.get("day"),
        "status": cost.get("status"),
        "final": cost.get("final"),
        "total_usd": (entry.get("totals") or {}).get("total_usd"),
        "serving_usd": (entry.get("totals") or {}).get("serving_usd"),
        "training_usd": (entry.get("totals") or {}).get("training_usd"),
        "budget_usd": entry.get("budget_usd"),
        "predictions": entry.get("predictions"),
        "cost_per_1k_predictions_usd": entry.get("cost_per_1k_predictions_usd"),
    }


def _links(spec: ModelSpec, bucket: str, registry, drift: dict | None, cost: dict | None) -> dict:
    """Airflow pages (relative to the UI), the report routes of this app, and the AWS consoles (the
    operator extra links' own URL formats)."""
    from airflow.providers.amazon.aws.links.base_aws import BaseAwsLink

    from hybrid_mlops.links.kserve import InferenceServiceLink
    from hybrid_mlops.links.registry import ModelPackageLink
    from hybrid_mlops.links.reports import CostReportLink, DriftReportLink

    region = registry.conn_region_name or settings.region()
    domain = BaseAwsLink.get_aws_domain(registry.conn_partition or "aws")
    suffix = spec.dag_suffix
    links = {
        "retrain_runs": f"dags/retrain_{suffix}/runs",
        "deploy_runs": f"dags/deploy_{suffix}/runs",
        "monitor_runs": f"dags/monitor_{suffix}/runs",
        "cost_report_runs": "dags/cost_report/runs",
        "registry_console": ModelPackageLink().format_link(
            aws_domain=domain, region_name=region,
            model_package_group=urllib.parse.quote(spec.registry.model_package_group, safe="")),
        "eks_consoles": {r: InferenceServiceLink.eks_console_url(r, spec.serving.cluster_name.format(region=r))
                         for r in spec.serving.regions},
    }
    if drift:
        prefix = drift["report_key"].rsplit("/", 1)[0] + "/"
        links["drift_report"] = f"reports/{drift['report_key']}"
        links["drift_console"] = DriftReportLink().format_link(
            aws_domain=domain, region_name=region, bucket=bucket, prefix=urllib.parse.quote(prefix, safe="/"))
    if cost:
        prefix = layout.cost_report_prefix(cost["day"])
        links["cost_report"] = f"reports/{prefix}report.html"
        links["cost_console"] = CostReportLink().format_link(
            aws_domain=domain, region_name=region, bucket=bucket, prefix=urllib.parse.quote(prefix, safe="/"))
    return links
