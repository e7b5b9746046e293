"""Everything the Models page shows, read from the stores the DAGs write to, with bounded work.

Per model spec:

- **registry**: ``ListModelPackages`` (one page of up to 100 summaries: version, approval status and, on
  ``aws``, ``ModelLifeCycle``) and the group's registry index (one GET: each version's status, stage and
  metadata as the project last wrote them, see :class:`~hybrid_mlops.hooks.registry.ModelRegistryHook`).
  A version the index shows as the registry lists it is taken from the index; one it lacks or shows
  otherwise (changed outside the project, in the SageMaker console say) is described
  (``DescribeModelPackage``) when it is among the newest :data:`DETAILED_VERSIONS` or served, cached per
  version and described again only when its listed status or stage changed;
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


def _agrees(summary: dict, entry: dict | None) -> bool:
    """Whether the index entry shows the version as ListModelPackages does (status, and the stage where
    the summary has one: on the local target it has none, and only the project writes stages there)."""
    if not entry or entry.get("ModelPackageArn") != summary["ModelPackageArn"]:
        return False
    if "ModelLifeCycle" not in summary:
        return entry.get("ModelApprovalStatus") == summary.get("ModelApprovalStatus")
    return _fingerprint(entry) == _fingerprint(summary)


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
        self._hooks: tuple[float, Any, Any] | None = None
        self.requests = 0  #: DescribeModelPackage requests of the last collect (for the benchmark)

    def _clients(self):
        from hybrid_mlops.hooks.records import RecordsHook
        from hybrid_mlops.hooks.registry import ModelRegistryHook

        with self._lock:
            if self._hooks is None or time.monotonic() - self._hooks[0] > CLIENT_TTL_SECONDS:
                registry = ModelRegistryHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
                records = RecordsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
                # The S3 client now, once, before the threads share it; the SageMaker client (the larger model to
                # load) in collect, while the first S3 reads run.
                registry.use_s3_client(records.conn)
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
            reads = {s.name: (pool.submit(records.deployment_record, bucket, s.name),
                              pool.submit(records.newest_drift_report, bucket, s.name)) for s in specs}
            with self._lock:
                registry.conn  # noqa: B018 - built once, here, before the threads share it
            jobs = {s.name: (pool.submit(self._registry, registry, s), *reads[s.name]) for s in specs}
            first = {name: self._versions(*(f.result() for f in fs), detailed) for name, fs in jobs.items()}
            # Versions the index lacks or shows otherwise, among those detailed: described (cached per state).
            todo = [s for f in first.values() for s in f["summaries"] if s["ModelPackageArn"] in f["detailed"]
                    and s["ModelPackageArn"] not in f["indexed"]
                    and self._described.get(s["ModelPackageArn"], ((),))[0] != _fingerprint(s)]
            for s, described in zip(todo, pool.map(lambda s: registry.describe_package(s["ModelPackageArn"]), todo)):
                with self._lock:
                    self._described[s["ModelPackageArn"]] = (_fingerprint(s), described)
            self.requests = len(todo)
            cost = cost_f.result()
        models = [self._model(spec, first[spec.name], cost, bucket, registry) for spec in specs]
        return {
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "target": settings.target(),
            "cost_day": (cost or {}).get("day", day),
            "cost_status": (cost or {}).get("status", "missing"),
            "models": models,
        }

    @staticmethod
    def _registry(registry, spec: ModelSpec) -> tuple[list[dict], dict[str, dict]]:
        summaries = registry.list_versions(spec.registry.model_package_group, limit=MAX_VERSIONS)
        return summaries, (registry.registry_index(summaries[0]["ModelPackageArn"]) if summaries else {})

    @staticmethod
    def _versions(registry: tuple[list[dict], dict[str, dict]], deployment: dict | None, drift: dict | None,
                  detailed: int) -> dict:
        summaries, index = registry
        served = {(deployment or {}).get("version")} | {
            e.get("version") for e in ((deployment or {}).get("regions") or {}).values()}
        indexed = {}
        for s in summaries:
            entry = index.get(str(s.get("ModelPackageVersion")))
            if _agrees(s, entry):
                indexed[s["ModelPackageArn"]] = entry
                if "ModelLifeCycle" not in s and entry.get("ModelLifeCycle"):
                    s["ModelLifeCycle"] = entry["ModelLifeCycle"]
        return {
            "summaries": summaries,
            "indexed": indexed,
            "detailed": {s["ModelPackageArn"] for i, s in enumerate(summaries)
                         if i < detailed or s.get("ModelPackageVersion") in served},
            "deployment": deployment,
            "drift": drift,
        }

    # -- assembly ----------------------------------------------------------------------------------

    def _model(self, spec: ModelSpec, first: dict, cost: dict | None, bucket: str, registry) -> dict:
        metric_names = [*spec.approval.rules, "oracle_roc_auc"]
        versions = []
        for s in first["summaries"]:
            detailed = s["ModelPackageArn"] in first["detailed"]
            described = (first["indexed"].get(s["ModelPackageArn"])
                         or self._described.get(s["ModelPackageArn"], ((), {}))[1]) if detailed else {}
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
