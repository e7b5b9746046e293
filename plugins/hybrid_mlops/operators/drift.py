"""Computes one window's drift and model-quality reports and sends the signals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from hybrid_mlops import layout
from hybrid_mlops.hooks.drift import DriftHook
from hybrid_mlops.links.reports import DriftReportLink

BASELINE_FILES = ("statistics.json", "constraints.json", "evaluation.json")


def _hour(value: Any) -> datetime:
    if isinstance(value, datetime):
        dt = value
    else:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    dt = dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


class DriftReportOperator(AwsBaseOperator[DriftHook]):
    """Compares one hour of captured requests with the training baseline; writes Model Monitor reports.

    Steps: resolve the baseline (the newest Approved package of the group: its ``train_data_uri``
    and the ``statistics.json`` / ``constraints.json`` / ``evaluation.json`` in its ``model.tar.gz``),
    flatten the window's capture files (DuckDB over S3 on ``local``, Athena on ``aws``), compute the drift figures and verdicts, write
    ``statistics.json``, ``constraint_violations.json``, ``drift_metrics.json`` and ``report.json``
    under ``monitoring/<model>/<yyyy>/<mm>/<dd>/<hh>/`` (model quality under ``model-quality/`` when
    labels have arrived), put the per-feature figures to CloudWatch and publish to SNS on violations.
    Returns the summary (``report.json`` plus ``report_uri``).

    .. seealso:: https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-pre-and-post-processing.html

    :param model: model name (templated).
    :param bucket: artifacts bucket (templated).
    :param window_start: start of the hour to check, ISO 8601 (templated).
    :param drift_config: ``spec.drift`` as a dict (templated).
    :param schema: the model's schema document (``schema.json`` of training's config channel: task,
        id, label, numeric, categorical, classes), which names the features to compare and the
        columns ground truth is joined on.
    :param model_package_group: registry group whose newest Approved package is the baseline (templated).
    :param train_data_uri: baseline training data (S3 prefix of Parquet); overrides the package's (templated).
    :param model_data_url: ``model.tar.gz`` with the baseline files; overrides the package's (templated).
    :param sns_topic: SNS topic name or ARN notified on violations (templated); None disables.
    :param emit_metrics: put the per-feature figures to CloudWatch.
    :param athena_database: on ``aws``, the Athena (Glue) database of the capture table (default: the
        ``HYBRID_MLOPS_ATHENA_DATABASE`` setting); on ``local`` DuckDB reads the capture in the worker.
    :param athena_workgroup: the workgroup the capture queries run in (``HYBRID_MLOPS_ATHENA_WORKGROUP``).
    :param athena_output_location: ``ResultConfiguration.OutputLocation`` of the queries
        (``HYBRID_MLOPS_ATHENA_OUTPUT``); the rows are read where Athena reports it wrote them.
    :param quality_tolerance: how much worse than the baseline each model-quality metric may get.
    """

    aws_hook_class = DriftHook
    template_fields: Sequence[str] = aws_template_fields(
        "model", "bucket", "window_start", "drift_config", "schema", "model_package_group", "train_data_uri",
        "model_data_url", "sns_topic", "athena_database", "athena_workgroup", "athena_output_location")
    template_fields_renderers = {"drift_config": "json", "schema": "json"}
    operator_extra_links = (DriftReportLink(),)

    def __init__(self, *, model: str, bucket: str, window_start: str, drift_config: dict, schema: dict,
                 model_package_group: str | None = None, train_data_uri: str | None = None,
                 model_data_url: str | None = None, sns_topic: str | None = None, emit_metrics: bool = True,
                 athena_database: str | None = None, athena_workgroup: str | None = None,
                 athena_output_location: str | None = None, quality_tolerance: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.bucket = bucket
        self.window_start = window_start
        self.drift_config = drift_config
        self.schema = schema
        self.model_package_group = model_package_group
        self.train_data_uri = train_data_uri
        self.model_data_url = model_data_url
        self.sns_topic = sns_topic
        self.emit_metrics = emit_metrics
        self.athena_database = athena_database
        self.athena_workgroup = athena_workgroup
        self.athena_output_location = athena_output_location
        self.quality_tolerance = quality_tolerance

    # ------------------------------------------------------------------------------------------
    def _baseline(self) -> dict:
        package = None
        train_uri, model_url = self.train_data_uri, self.model_data_url
        if not (train_uri and model_url) and self.model_package_group:
            package = self.hook.latest_approved_package(self.model_package_group)
            if package:
                train_uri = train_uri or package["CustomerMetadataProperties"].get("train_data_uri")
                model_url = model_url or package["ModelDataUrl"]
        artifacts = self.hook.read_model_artifacts(model_url, BASELINE_FILES) if model_url else {}
        return {"package": package, "train_data_uri": train_uri, "model_data_url": model_url, **artifacts}

    def athena_config(self) -> dict | None:
        """``{database, workgroup, output_location}`` on ``aws`` (what was passed, else the settings; a
        missing one fails naming its variable), None on ``local`` (DuckDB reads the capture)."""
        from airflow.sdk.exceptions import AirflowFailException

        from hybrid_mlops import settings

        if settings.is_local():
            return None
        try:
            return {"database": self.athena_database or settings.athena_database(),
                    "workgroup": self.athena_workgroup or settings.athena_workgroup(),
                    "output_location": self.athena_output_location or settings.athena_output_location()}
        except settings.SettingMissing as err:
            raise AirflowFailException(str(err)) from None

    def execute(self, context) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from hybrid_mlops import settings
        from hybrid_mlops.drift import report as reporting
        from hybrid_mlops.serving.smoke import OUTPUTS
        from hybrid_mlops.specs.model import DriftSpec

        try:
            drift_spec = DriftSpec.model_validate(self.drift_config)
        except ValueError as err:
            raise AirflowFailException(f"drift_config is not a valid drift spec: {err}") from None
        hour = _hour(self.window_start)
        end = hour + timedelta(hours=1)
        out_prefix = layout.monitoring_prefix(self.model, hour)
        baseline = self._baseline()
        numeric, categorical = list(self.schema["numeric"]), list(self.schema["categorical"])
        id_column, output = self.schema.get("id"), OUTPUTS[self.schema["task"]]
        capture = layout.capture_prefix(self.model, hour)
        athena = self.athena_config()
        if athena:
            window = self.hook.athena_capture_window(
                database=athena["database"], table=f"capture_{self.model.replace('-', '_')}",
                capture_location=f"s3://{self.bucket}/{layout.capture_prefix(self.model)}",
                hour=hour.strftime("%Y/%m/%d/%H"), numeric=numeric, categorical=categorical,
                output_location=athena["output_location"], workgroup=athena["workgroup"], id_column=id_column,
                output=output)
        else:
            window = self.hook.read_capture_window(self.bucket, capture, numeric, categorical, id_column=id_column,
                                                   output=output)
        self.log.info("Window %s: %s files, %s lines, %s malformed, %s rows", capture, window["files"],
                      window["lines"], window["malformed"], window["rows"])
        if not baseline.get("train_data_uri") and not baseline.get("statistics.json"):
            docs = reporting.build_report(window=window, baseline_columns={}, drift_spec=drift_spec, numeric=[],
                                          categorical=[], model=self.model, window_start=hour.isoformat(),
                                          window_end=end.isoformat())
            docs["report"].update(status="no_baseline", message=(
                f"No baseline: no Approved package in {self.model_package_group!r} and no train_data_uri given; "
                "register and approve a model version, or pass train_data_uri"))
        else:
            baseline_columns = (self.hook.read_parquet_columns(baseline["train_data_uri"], [*numeric, *categorical])
                                if baseline.get("train_data_uri") else {})
            docs = reporting.build_report(
                window=window, baseline_columns=baseline_columns, drift_spec=drift_spec, numeric=numeric,
                categorical=categorical, baseline_statistics=baseline.get("statistics.json"),
                baseline_constraints=baseline.get("constraints.json"), model=self.model,
                window_start=hour.isoformat(), window_end=end.isoformat(),
                identifiers=frozenset(filter(None, [id_column])))
        summary = docs["report"]
        if baseline.get("package"):
            summary["model_package_arn"] = baseline["package"]["ModelPackageArn"]
        summary["baseline_train_data_uri"] = baseline.get("train_data_uri")
        summary["quality"] = self._quality(window, baseline.get("evaluation.json"), hour, out_prefix)
        uris = {}
        for name in ("statistics", "constraint_violations", "drift_metrics"):
            uris[name] = self.hook.put_json(docs[name], self.bucket, f"{out_prefix}{name}.json")
        summary["report_uri"] = uris["constraint_violations"]
        summary["files_written"] = sorted(uris.values())
        self.hook.put_json(summary, self.bucket, f"{out_prefix}report.json")
        DriftReportLink.persist_prefix(context, self, self.bucket, out_prefix)
        if self.emit_metrics and docs["drift_metrics"]["features"]:
            n = self.hook.put_drift_metrics(self.model, reporting.cloudwatch_metrics(docs["drift_metrics"]), end)
            self.log.info("Put %s CloudWatch datums in %s", n, DriftHook.METRIC_NAMESPACE)
        if self.sns_topic and summary["violations"]:
            summary["sns_message_id"] = self.hook.publish_violations(
                self.sns_topic, f"Drift on {self.model}: {', '.join(summary['violated_features'])}"[:100],
                {k: summary[k] for k in ("model", "window_start", "window_end", "violated_features", "violations",
                                         "report_uri", "rows", "malformed_lines")}
                | {"details": docs["constraint_violations"]["violations"][:50]})
        self.log.info("Report %s: %s", summary["status"], summary["message"])
        return summary

    def _quality(self, window: dict, evaluation: dict | None, hour: datetime, out_prefix: str) -> dict | None:
        """Model-quality reports when ground truth for the window's rows has arrived."""
        from hybrid_mlops.drift import quality

        if not window["rows"]:
            return None
        days = sorted({hour, hour + timedelta(hours=1)}, key=lambda d: d.date())
        prefixes = sorted({layout.labels_prefix(self.model, d) for d in days})
        labels = self.hook.read_labels(self.bucket, prefixes, self.schema["id"], self.schema["label"])
        if not labels:
            return {"status": "no_labels", "labels_prefixes": prefixes}
        task = self.schema["task"]
        ids = window["ids"].tolist()
        labelled = [i for i, t in enumerate(ids) if t is not None and str(t) in labels]
        stats = quality.window_statistics(
            task, [labels[str(ids[i])] for i in labelled], window["outputs"][labelled],
            classes=self.schema.get("classes"), threshold=float((evaluation or {}).get("threshold", 0.5)),
            evaluation_time=(hour + timedelta(hours=1)).isoformat())
        base = quality.baseline_metrics(evaluation or {}, task)
        constraints = quality.quality_constraints(base, self.quality_tolerance, task)
        violations = quality.quality_violations(stats, constraints)
        prefix = f"{out_prefix}model-quality/"
        self.hook.put_json(stats, self.bucket, f"{prefix}statistics.json")
        self.hook.put_json(constraints, self.bucket, f"{prefix}constraints.json")
        uri = self.hook.put_json({"violations": violations}, self.bucket, f"{prefix}constraint_violations.json")
        figures = stats[quality.SECTIONS[task]]
        return {"status": "violations" if violations else "ok", "labelled_rows": stats["dataset"]["item_count"],
                **{name: figures[name]["value"] for name in quality.GATED[task]}, "baseline": base,
                "violations": violations, "report_uri": uri}
