"""Operators of the daily cost report. They wire hooks to the pure code in :mod:`hybrid_mlops.cost`.

``cost_explorer`` ─┐
``training_jobs`` ─┼─> ``report`` (cost.json, cost.csv, report.html) ─> ``signals`` (CloudWatch, SNS, Slack)
``predictions``   ─┘

Every operator takes the reported ``day`` (templated, ``YYYY-MM-DD``) and writes nothing but its
day's prefix, so a re-run of a day overwrites it and a backfill is a loop over days.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from airflow.providers.amazon.aws.notifications.sns import SnsNotifier
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from hybrid_mlops import layout, settings
from hybrid_mlops.cost import explorer, pricing, report, split
from hybrid_mlops.hooks.cost import (CostAlertHook, CostExplorerHook, CostMetricsHook, CostS3Hook, SplitCostHook,
                                     TrainingCostHook)
from hybrid_mlops.links.reports import CostReportLink

METRIC_NAMESPACE = "HybridMLOps/Cost"
#: CloudWatch refuses datums older than two weeks.
METRIC_MAX_AGE = timedelta(days=14)


def parse_day(value: Any, field: str = "day") -> date:
    """The reported day from a rendered template; a configuration error names the field."""
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise AirflowFailException(
            f"{field}={value!r} is not a date: pass YYYY-MM-DD (the DAG's 'day' param, or leave it empty "
            "for the day before the logical date)"
        ) from None


def _check_models(models: Any) -> list[dict[str, Any]]:
    required = {"name", "budget_usd", "anomaly_sigma", "trailing_days", "restate_days", "tags", "clusters"}
    if not isinstance(models, list) or not models:
        raise AirflowFailException("models must be a non-empty list of model settings (see dags/cost_report.py)")
    for m in models:
        if missing := required - set(m):
            raise AirflowFailException(f"models: {m.get('name', m)!r} lacks {sorted(missing)}")
    return models


class CostExplorerOperator(AwsBaseOperator[CostExplorerHook]):
    """Fetch the window's SageMaker, EKS and S3 cost from Cost Explorer, every page, within a request budget.

    .. seealso::
        :external+boto3:py:meth:`CostExplorer.Client.get_cost_and_usage`

    :param day: the reported day, ``YYYY-MM-DD`` (templated).
    :param models: per-model settings from the specs (templated).
    :param history_days: days of history fetched with the day (charts and the anomaly rule).
    :param max_pages_per_query: pages one query may take; the run's request bound is three times this.
    """

    aws_hook_class = CostExplorerHook
    template_fields: Sequence[str] = aws_template_fields("day", "models", "max_pages_per_query")
    template_fields_renderers = {"models": "json"}

    def __init__(self, *, day: str, models: list[dict[str, Any]], history_days: int = 30,
                 max_pages_per_query: int | str = explorer.DEFAULT_MAX_PAGES, **kwargs):
        super().__init__(**kwargs)
        if history_days < 2:
            raise ValueError(f"history_days={history_days} must be >= 2")
        self.day = day
        self.models = models
        self.history_days = history_days
        self.max_pages_per_query = max_pages_per_query

    def execute(self, context) -> dict[str, Any]:
        day = parse_day(self.day)
        try:
            max_pages = int(self.max_pages_per_query)
            if max_pages < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise AirflowFailException(
                f"max_pages_per_query={self.max_pages_per_query!r} must be a whole number >= 1"
            ) from None
        scope = explorer.Scope.from_models(_check_models(self.models))
        start, end = explorer.window(day, self.history_days)
        rows: list[dict] = []
        days: dict[str, bool] = {}
        queries = []
        for query in explorer.plan_queries(scope, start, end):
            pages = self.hook.get_cost_and_usage_pages(query["request"], max_pages=max_pages,
                                                       name=query["name"])
            q_rows, q_days = explorer.parse_pages(query["name"], query["request"], pages)
            rows += q_rows
            for d in q_days:
                days[d["day"]] = days.get(d["day"], False) or d["estimated"]
            queries.append({"name": query["name"], "pages": len(pages), "rows": len(q_rows),
                            "filter": query["request"]["Filter"], "group_by": query["request"]["GroupBy"]})
        max_requests = max_pages * len(queries)
        self.log.info("Cost Explorer: %s request(s) (bound %s) for %s..%s, %s row(s)", self.hook.requests_sent,
                      max_requests, start, end, len(rows))
        return {
            "window": {"start": start, "end": end},
            "rows": rows,
            "days": [{"day": d, "estimated": e} for d, e in sorted(days.items())],
            "requests": self.hook.requests_sent,
            "max_requests": max_requests,
            "queries": queries,
        }


class EksSplitCostOperator(AwsBaseOperator[SplitCostHook]):
    """Each model's EKS pod cost per day from AWS split cost allocation data (CUR 2.0), queried with Athena.

    Per-model NodePools were the other way; see :mod:`hybrid_mlops.cost.split` for why pods' split cost
    was chosen. The result is attributed in the report task (:func:`split.attribute`).

    .. seealso::
        https://docs.aws.amazon.com/cur/latest/userguide/split-cost-allocation-data.html

    :param day: the reported day, ``YYYY-MM-DD`` (templated).
    :param models: per-model settings from the specs (templated).
    :param history_days: days fetched with the day (the same window as the Cost Explorer task).
    :param database: the Glue database of the CUR 2.0 table (templated; default ``settings.cur_database()``).
    :param table: the CUR 2.0 table with split cost allocation data (templated; default ``settings.cur_table()``).
    :param workgroup: the Athena workgroup (templated; default ``settings.athena_workgroup()``).
    :param output_location: ``ResultConfiguration.OutputLocation`` (templated; default
        ``settings.athena_output_location()``). Settings are read at run time: a missing one fails the task
        naming its variable, never the DAG file's import.
    """

    aws_hook_class = SplitCostHook
    template_fields: Sequence[str] = aws_template_fields("day", "models", "database", "table", "workgroup",
                                                         "output_location")
    template_fields_renderers = {"models": "json"}

    def __init__(self, *, day: str, models: list[dict[str, Any]], database: str | None = None,
                 table: str | None = None, workgroup: str | None = None, output_location: str | None = None,
                 history_days: int = 30, poll_seconds: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.day = day
        self.models = models
        self.database = database
        self.table = table
        self.workgroup = workgroup
        self.output_location = output_location
        self.history_days = history_days
        self.poll_seconds = poll_seconds

    def execute(self, context) -> dict[str, Any]:
        day = parse_day(self.day)
        models = _check_models(self.models)
        start, end = split.window(day, self.history_days)
        clusters = sorted({c for m in models for c in m["clusters"]})
        try:
            database, table = self.database or settings.cur_database(), self.table or settings.cur_table()
            workgroup = self.workgroup or settings.athena_workgroup()
            output_location = self.output_location or settings.athena_output_location()
        except settings.SettingMissing as err:
            raise AirflowFailException(str(err)) from None
        query = split.split_cost_query(database, table, start, end, clusters)
        qid, rows = self.hook.query_rows(query, database=database, workgroup=workgroup,
                                         output_location=output_location, poll_seconds=self.poll_seconds)
        parsed = split.parse_result(rows, [m["name"] for m in models])
        self.log.info("Split cost allocation data (Athena %s): %s row(s) for %s..%s", qid, len(parsed), start, end)
        return {"window": {"start": start, "end": end}, "query_execution_id": qid, "table": f"{database}.{table}",
                "rows": parsed}


class TrainingJobCostOperator(AwsBaseOperator[TrainingCostHook]):
    """List the training jobs that ended on the day, with their timings and instance price.

    Prices come from the pinned table ``include/pricing/sagemaker-training.json``; on the ``aws`` target the
    Pricing API answers for what the table lacks. A job whose price or timings are unknown is reported as
    such, never as zero.

    .. seealso::
        :external+boto3:py:meth:`SageMaker.Client.describe_training_job`

    :param day: the reported day, ``YYYY-MM-DD`` (templated).
    :param models: model names (templated).
    :param price_region: region whose prices apply (templated; default: the hook's region).
    :param price_table: path of the pinned price table.
    """

    aws_hook_class = TrainingCostHook
    template_fields: Sequence[str] = aws_template_fields("day", "models", "price_region")

    def __init__(self, *, day: str, models: list[str], price_region: str | None = None,
                 price_table: str | Path = pricing.PRICE_TABLE, **kwargs):
        super().__init__(**kwargs)
        self.day = day
        self.models = models
        self.price_region = price_region
        self.price_table = str(price_table)

    def execute(self, context) -> list[dict[str, Any]]:
        day = parse_day(self.day)
        local = settings.is_local()
        region = self.price_region or self.hook.conn_region_name or settings.region()
        jobs = self.hook.jobs_ended_on(list(self.models), day, local=local)
        for job in jobs:
            price, source = pricing.pinned_price(region, job["instance_type"], self.price_table), "pinned"
            if price is None and not local:
                price, source = self.hook.on_demand_price(region, job["instance_type"]), "pricing-api"
            job.update(price_per_hour=price, price_source=source if price is not None else None, region=region)
            self.log.info("Training job %s: %s x %s, ran %s s, billed %s s, %s USD/h (%s)", job["job_name"],
                          job["instance_type"], job["instance_count"], job["training_seconds"],
                          job["billable_seconds"], price, source)
        return jobs


class CapturePredictionsOperator(AwsBaseOperator[CostS3Hook]):
    """Count each model version's requests and predictions of the day in the capture files.

    .. seealso::
        :external+boto3:py:meth:`S3.Client.get_object`

    :param day: the reported day, ``YYYY-MM-DD`` (templated).
    :param models: model names (templated).
    :param bucket: the artifacts bucket (templated).
    """

    aws_hook_class = CostS3Hook
    template_fields: Sequence[str] = aws_template_fields("day", "models", "bucket")

    def __init__(self, *, day: str, models: list[str], bucket: str, **kwargs):
        super().__init__(**kwargs)
        self.day = day
        self.models = models
        self.bucket = bucket

    def execute(self, context) -> dict[str, Any]:
        day = parse_day(self.day)
        midnight = datetime.combine(day, time.min)
        out = {}
        for model in self.models:
            prefix = layout.capture_prefix(model) + midnight.strftime("%Y/%m/%d/")
            out[model] = self.hook.count_predictions(self.bucket, prefix)
            self.log.info("Capture s3://%s/%s: %s file(s), %s", self.bucket, prefix, out[model]["files"],
                          out[model]["versions"])
        return out


class CostReportOperator(AwsBaseOperator[CostS3Hook]):
    """Compute the day's report and write ``cost.json``, ``cost.csv`` and ``report.html`` under its prefix.

    It reads the reports already published for the re-stated days (and for the day itself) to show what
    changed and to carry over which alerts were already sent.

    .. seealso::
        :external+boto3:py:meth:`S3.Client.put_object`

    :param day: the reported day, ``YYYY-MM-DD`` (templated).
    :param models: per-model settings from the specs (templated).
    :param bucket: the artifacts bucket (templated).
    :param cost_explorer: the Cost Explorer task's result (templated: an XComArg).
    :param training_jobs: the training-job task's result (templated).
    :param predictions: the capture task's result (templated).
    :param eks_split: the split cost allocation task's result (templated; None: EKS cost stays unallocated).
    :param local_dir: also write the files to ``<local_dir>/<day>/`` (templated); default: the local
        target's state directory, none on ``aws``.
    """

    aws_hook_class = CostS3Hook
    template_fields: Sequence[str] = aws_template_fields(
        "day", "models", "bucket", "cost_explorer", "training_jobs", "predictions", "local_dir", "eks_split"
    )
    template_fields_renderers = {"models": "json"}
    operator_extra_links = (CostReportLink(),)

    def __init__(self, *, day: str, models: list[dict[str, Any]], bucket: str, cost_explorer: Any,
                 training_jobs: Any, predictions: Any, local_dir: str | None = None, eks_split: Any = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.day = day
        self.models = models
        self.bucket = bucket
        self.cost_explorer = cost_explorer
        self.training_jobs = training_jobs
        self.predictions = predictions
        self.local_dir = local_dir
        self.eks_split = eks_split

    def execute(self, context) -> dict[str, Any]:
        day = parse_day(self.day)
        models = _check_models(self.models)
        restate = max(m["restate_days"] for m in models)
        previous = {}
        for offset in range(restate + 1):
            d = (day - timedelta(days=offset)).isoformat()
            previous[d] = self.hook.read_json(self.bucket, layout.cost_report_prefix(d) + "cost.json")
        ce, split_warnings = self.cost_explorer, []
        if self.eks_split:
            ce, split_warnings = split.attribute(self.cost_explorer, self.eks_split["rows"])
        doc = report.build_document(
            day=day.isoformat(),
            models=models,
            ce=ce,
            jobs=self.training_jobs or [],
            predictions={m: p["versions"] for m, p in (self.predictions or {}).items()},
            previous=previous,
            generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            target=settings.target(),
        )
        doc["warnings"] += split_warnings
        if self.eks_split:
            doc["eks_split"] = {k: self.eks_split[k] for k in ("table", "query_execution_id", "window")}
            doc["eks_split"]["attributed_usd"] = {
                m["model"]: sum(r["unblended"] for r in ce["rows"]
                                if r["source"] == split.SOURCE and r["model"] == m["model"] and r["day"] == doc["day"])
                for m in doc["models"]}
        for model, p in sorted((self.predictions or {}).items()):
            if p.get("invalid_lines"):
                doc["warnings"].append(f"{model}: {p['invalid_lines']} capture line(s) were not request records "
                                       "and are not counted.")
        doc["published"] = (previous.get(day.isoformat()) or {}).get("published", {})
        files = {"cost.json": (report.to_json(doc), "application/json"),
                 "cost.csv": (report.to_csv(doc), "text/csv"),
                 "report.html": (report.to_html(doc), "text/html; charset=utf-8")}
        prefix = layout.cost_report_prefix(day.isoformat())
        uris = {name: self.hook.put_text(self.bucket, prefix + name, body, ctype)
                for name, (body, ctype) in files.items()}
        CostReportLink.persist_prefix(context, self, self.bucket, prefix)
        local_dir = self.local_dir or (str(settings.local_state_dir() / "cost-reports") if settings.is_local() else "")
        local_paths = {}
        if local_dir:
            folder = Path(local_dir) / day.isoformat()
            folder.mkdir(parents=True, exist_ok=True)
            for name, (body, _) in files.items():
                (folder / name).write_text(body)
                local_paths[name] = str(folder / name)
        head = report.headline(doc)
        self.log.info("Cost report %s: %s", day, json.dumps(head))
        for warning in doc["warnings"]:
            self.log.warning("%s", warning)
        return {"uris": uris, "local": local_paths, "headline": head}


def metric_data(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One CloudWatch datum per figure of the day: per model, per model version, and for all models."""
    ts = datetime.combine(date.fromisoformat(doc["day"]), time(12), tzinfo=timezone.utc)

    def datum(name: str, value: float | None, unit: str = "None", **dims: str) -> list[dict]:
        if value is None:
            return []
        return [{"MetricName": name, "Timestamp": ts, "Value": float(value), "Unit": unit,
                 "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]}]

    out: list[dict] = []
    t = doc["totals"]
    for c in ("training", "serving", "processing", "storage", "total"):
        out += datum(f"{c.capitalize()}Cost", t[f"{c}_usd"], Model="ALL")
    out += datum("SpotSavings", t["spot_savings_usd"], Model="ALL")
    for m in doc["models"]:
        for c in ("training", "serving", "processing", "storage", "total"):
            out += datum(f"{c.capitalize()}Cost", m["totals"][f"{c}_usd"], Model=m["model"])
        out += datum("SpotSavings", m["training"]["spot_savings_usd"], Model=m["model"])
        out += datum("BudgetUtilisation", (m["signals"].get("budget") or {}).get("utilisation"), Model=m["model"])
        out += datum("Predictions", m["predictions"], "Count", Model=m["model"])
        out += datum("CostPer1kPredictions", m["cost_per_1k_predictions_usd"], Model=m["model"])
        for v in m["versions"]:
            out += datum("ServingCost", v["serving_usd"], Model=m["model"], Version=v["version"])
            out += datum("CostPer1kPredictions", v["cost_per_1k_predictions_usd"], Model=m["model"],
                         Version=v["version"])
    return out


def _fingerprint(data: list[dict]) -> str:
    plain = [{**d, "Timestamp": d["Timestamp"].isoformat()} for d in data]
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


class CostSignalsOperator(AwsBaseOperator[CostMetricsHook]):
    """Publish the day's figures as CloudWatch metrics and send its alerts (SNS, and Slack when configured).

    Idempotent: the figures are re-published only when they changed since the last run of the day, and an
    alert already sent for the day is not sent again. What was done is recorded in ``cost.json``.

    .. seealso::
        :external+boto3:py:meth:`CloudWatch.Client.put_metric_data`, :external+boto3:py:meth:`SNS.Client.publish`

    :param day: the reported day, ``YYYY-MM-DD`` (templated).
    :param bucket: the artifacts bucket (templated).
    :param topic_name: SNS topic of cost alerts, created if missing (templated).
    :param namespace: CloudWatch namespace (templated).
    :param notify: send alerts (templated; metrics are published either way).
    :param slack_conn_id: a Slack incoming-webhook connection; used when it exists and the Slack provider
        is installed (templated).
    """

    aws_hook_class = CostMetricsHook
    template_fields: Sequence[str] = aws_template_fields("day", "bucket", "topic_name", "namespace", "notify",
                                                         "slack_conn_id")

    def __init__(self, *, day: str, bucket: str, topic_name: str = "hybrid-mlops-cost-alerts",
                 namespace: str = METRIC_NAMESPACE, notify: bool | str = True,
                 slack_conn_id: str | None = "slack_cost_alerts", **kwargs):
        super().__init__(**kwargs)
        self.day = day
        self.bucket = bucket
        self.topic_name = topic_name
        self.namespace = namespace
        self.notify = notify
        self.slack_conn_id = slack_conn_id

    @cached_property
    def s3_hook(self) -> CostS3Hook:
        return CostS3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify)

    @cached_property
    def alert_hook(self) -> CostAlertHook:
        return CostAlertHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify)

    def execute(self, context) -> dict[str, Any]:
        day = parse_day(self.day)
        key = layout.cost_report_prefix(day.isoformat()) + "cost.json"
        doc = self.s3_hook.read_json(self.bucket, key)
        if doc is None:
            raise AirflowFailException(f"s3://{self.bucket}/{key} does not exist: run the report task first")
        published = doc.setdefault("published", {})
        now = datetime.now(timezone.utc)
        result = {"metrics": 0, "metrics_skipped": None, "alerts_sent": [], "alerts_already_sent": []}

        data = metric_data(doc) if doc["status"] in ("ok", "empty") else []
        fingerprint = _fingerprint(data)
        if not data:
            result["metrics_skipped"] = f"status {doc['status']}: no figures to publish"
        elif now - data[0]["Timestamp"] > METRIC_MAX_AGE:
            result["metrics_skipped"] = f"{day} is older than CloudWatch accepts (14 days)"
        elif published.get("metrics_fingerprint") == fingerprint:
            result["metrics_skipped"] = "unchanged since the last run of this day"
        else:
            result["metrics"] = self.hook.put_metrics(self.namespace, data)
            published.update(metrics_fingerprint=fingerprint, metrics_at=now.isoformat(timespec="seconds"),
                             metrics=result["metrics"], namespace=self.namespace)
        if result["metrics_skipped"]:
            self.log.info("CloudWatch metrics not published: %s", result["metrics_skipped"])

        notify = self.notify if isinstance(self.notify, bool) else str(self.notify).lower() in ("true", "1", "yes")
        pending = [a for a in doc["alerts"] if not a.get("notified_at")]
        result["alerts_already_sent"] = [a["id"] for a in doc["alerts"] if a.get("notified_at")]
        if pending and notify:
            topic_arn = self.alert_hook.ensure_topic(self.topic_name, {"project": "hybrid-mlops"})
            slack = self._slack_notifier()
            for alert in pending:
                subject = f"Cost alert {doc['day']}: {alert['model']} {alert['rule']} ({alert['metric']})"
                SnsNotifier(aws_conn_id=self.aws_conn_id, region_name=self.region_name, target_arn=topic_arn,
                            subject=subject[:100], message=json.dumps({**alert, "day": doc["day"]}),
                            message_attributes={"model": alert["model"], "rule": alert["rule"]}).notify(context)
                if slack is not None:
                    slack(text=f":rotating_light: {alert['message']}").notify(context)
                alert["notified_at"] = now.isoformat(timespec="seconds")
                result["alerts_sent"].append(alert["id"])
                self.log.warning("Cost alert sent to %s: %s", topic_arn, alert["message"])
        elif pending:
            self.log.info("%s alert(s) not sent: notify is off", len(pending))
        if result["alerts_sent"] or result["metrics"]:
            self.s3_hook.put_text(self.bucket, key, report.to_json(doc), "application/json")
        return result

    def _slack_notifier(self):
        """A Slack webhook notifier factory when the provider and the connection both exist, else None."""
        if not self.slack_conn_id:
            return None
        try:
            from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
        except ImportError:
            self.log.debug("Slack provider not installed: cost alerts go to SNS only")
            return None
        try:
            from airflow.sdk import BaseHook

            BaseHook.get_connection(self.slack_conn_id)
        except Exception:  # the connection is optional: any lookup failure means "not configured"
            self.log.info("No connection %r: cost alerts go to SNS only", self.slack_conn_id)
            return None
        return lambda text: SlackWebhookNotifier(slack_webhook_conn_id=self.slack_conn_id, text=text)
