"""Computes one window's drift and model-quality reports and sends the signals."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerProcessingOperator, serialize
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
    def _baseline(self, files: tuple[str, ...] = BASELINE_FILES) -> dict:
        package = None
        train_uri, model_url = self.train_data_uri, self.model_data_url
        if not (train_uri and model_url) and self.model_package_group:
            package = self.hook.latest_approved_package(self.model_package_group)
            if package:
                train_uri = train_uri or package["CustomerMetadataProperties"].get("train_data_uri")
                model_url = model_url or package["ModelDataUrl"]
        artifacts = self.hook.read_model_artifacts(model_url, files) if model_url else {}
        return {"package": package, "train_data_uri": train_uri, "model_data_url": model_url, **artifacts}

    def _prepared(self, baseline: dict, numeric: list[str], directory: str) -> tuple[dict, dict]:
        """The version's prepared baseline of the numeric features (memory-mapped from ``directory``) and
        their (mean, std), or ``({}, {})`` when it has none (registered before it existed, or a team's own
        baseline): then the numeric features are compared with the training data, sorted in this run."""
        url = baseline.get("model_data_url")
        prepared = (self.hook.load_prepared_baseline(url, numeric, directory, baseline.get("train_data_uri"))
                    if url and numeric else None)
        if prepared:
            self.log.info("Numeric baseline: the prepared baseline beside %s (%s features)", url, len(prepared[0]))
            return prepared
        self.log.info("Numeric baseline: no prepared baseline beside %s; reading the training data %s",
                      url, baseline.get("train_data_uri"))
        return {}, {}

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
        id_column = self.schema.get("id")
        window = self._read_window(hour)
        if not baseline.get("train_data_uri") and not baseline.get("statistics.json"):
            docs = reporting.build_report(window=window, baseline_columns={}, drift_spec=drift_spec, numeric=[],
                                          categorical=[], model=self.model, window_start=hour.isoformat(),
                                          window_end=end.isoformat())
            docs["report"].update(status="no_baseline", message=(
                f"No baseline: no Approved package in {self.model_package_group!r} and no train_data_uri given; "
                "register and approve a model version, or pass train_data_uri"))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                prepared, moments = self._prepared(baseline, numeric, tmp)
                needed = [*(n for n in numeric if n not in prepared), *categorical]
                baseline_columns = (self.hook.read_parquet_columns(baseline["train_data_uri"], needed)
                                    if baseline.get("train_data_uri") and needed else {})
                docs = reporting.build_report(
                    window=window, baseline_columns=baseline_columns, drift_spec=drift_spec, numeric=numeric,
                    categorical=categorical, baseline_statistics=baseline.get("statistics.json"),
                    baseline_constraints=baseline.get("constraints.json"), model=self.model,
                    window_start=hour.isoformat(), window_end=end.isoformat(),
                    identifiers=frozenset(filter(None, [id_column])), prepared=prepared, prepared_moments=moments)
            docs["report"]["numeric_baseline"] = "prepared" if prepared else "training_data"
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

    def _read_window(self, hour: datetime) -> dict:
        """The hour's capture, flattened (Athena on ``aws`` when configured, DuckDB in the worker otherwise)."""
        from hybrid_mlops.serving.smoke import OUTPUTS

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
        return window

    def _labelled(self, window: dict, hour: datetime) -> tuple[list[int], list, list[str]]:
        """``(row indices, their labels, label prefixes read)``: the window's rows whose ground truth arrived."""
        days = sorted({hour, hour + timedelta(hours=1)}, key=lambda d: d.date())
        prefixes = sorted({layout.labels_prefix(self.model, d) for d in days})
        labels = self.hook.read_labels(self.bucket, prefixes, self.schema["id"], self.schema["label"])
        ids = window["ids"].tolist()
        rows = [i for i, t in enumerate(ids) if t is not None and str(t) in labels]
        return rows, [labels[str(ids[i])] for i in rows], prefixes

    def _quality(self, window: dict, evaluation: dict | None, hour: datetime, out_prefix: str) -> dict | None:
        """Model-quality reports when ground truth for the window's rows has arrived."""
        from hybrid_mlops.drift import quality

        if not window["rows"]:
            return None
        labelled, labels, prefixes = self._labelled(window, hour)
        if not labelled:
            return {"status": "no_labels", "labels_prefixes": prefixes}
        task = self.schema["task"]
        stats = quality.window_statistics(
            task, labels, window["outputs"][labelled],
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


class _ClarifyMonitor(DriftReportOperator):
    """What the bias and feature-attribution monitors share with the data-quality one: the model's
    version and baselines, the window, the labels, the report files, CloudWatch and SNS."""

    monitor = ""  # the folder under monitoring/<model>/<yyyy>/<mm>/<dd>/<hh>/

    def _window_bounds(self) -> tuple[datetime, datetime, str]:
        hour = _hour(self.window_start)
        return hour, hour + timedelta(hours=1), f"{layout.monitoring_prefix(self.model, hour)}{self.monitor}/"

    def _finish(self, context, summary: dict, prefix: str, violations: list[dict], metrics: list[dict],
                end: datetime, subject: str) -> dict:
        """Write ``constraint_violations.json`` and ``report.json``, put the figures to CloudWatch, notify SNS."""
        summary["report_uri"] = self.hook.put_json({"version": "1.0", "violations": violations}, self.bucket,
                                                   f"{prefix}constraint_violations.json")
        self.hook.put_json(summary, self.bucket, f"{prefix}report.json")
        DriftReportLink.persist_prefix(context, self, self.bucket, prefix)
        if self.emit_metrics and metrics:
            n = self.hook.put_drift_metrics(self.model, metrics, end)
            self.log.info("Put %s CloudWatch datums in %s", n, DriftHook.METRIC_NAMESPACE)
        if self.sns_topic and violations:
            summary["sns_message_id"] = self.hook.publish_violations(
                self.sns_topic, subject, {k: summary.get(k) for k in (
                    "monitor", "model", "window_start", "window_end", "violated_features", "violations", "report_uri")}
                | {"details": violations[:50]})
        self.log.info("%s %s: %s", self.monitor, summary["status"], summary["message"])
        return summary

    def _summary(self, hour: datetime, end: datetime, status: str, message: str, **extra) -> dict:
        return {"monitor": self.monitor, "model": self.model, "window_start": hour.isoformat(),
                "window_end": end.isoformat(), "status": status, "message": message, "violations": 0,
                "violated_features": [], **extra}


class BiasDriftOperator(_ClarifyMonitor):
    """Model Monitor's bias drift of one window: Clarify's pre- and post-training bias metrics of the spec's
    facet over the window's labelled rows (captured inputs and outputs joined with ground truth, as model
    quality does), compared with the version's baseline (``analysis_bias.json`` beside ``model.tar.gz``,
    computed at registration on the validation data). Writes ``analysis.json``,
    ``constraint_violations.json`` (``bias_drift_check``) and ``report.json`` under
    ``monitoring/<model>/<yyyy>/<mm>/<dd>/<hh>/model-bias/``, one CloudWatch figure per metric
    (``bias_metric_<name>``, Feature ``<facet>=<value>``) and SNS on violations. Returns the summary.

    .. seealso:: https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-model-monitor-bias-drift.html

    :param bias_config: ``spec.drift.bias`` as a dict (templated).
    (The other parameters are :class:`DriftReportOperator`'s.)
    """

    monitor = "model-bias"
    template_fields: Sequence[str] = (*DriftReportOperator.template_fields, "bias_config")

    def __init__(self, *, bias_config: dict, **kwargs):
        super().__init__(**kwargs)
        self.bias_config = bias_config

    def execute(self, context) -> dict:
        import numpy as np
        from airflow.sdk.exceptions import AirflowFailException

        from hybrid_mlops.drift import bias, clarify
        from hybrid_mlops.specs.model import BiasDrift

        try:
            config = BiasDrift.model_validate(self.bias_config)
        except ValueError as err:
            raise AirflowFailException(f"bias_config is not a valid drift.bias: {err}") from None
        hour, end, prefix = self._window_bounds()
        baseline = self._baseline((clarify.BIAS_BASELINE, "evaluation.json"))
        reference = baseline.get(clarify.BIAS_BASELINE)
        if not reference:
            return self._finish(context, self._summary(hour, end, "no_baseline", (
                f"No bias baseline: {clarify.BIAS_BASELINE} is not beside {baseline.get('model_data_url')} (a version "
                "registered before drift.bias was set; the next registration computes it)")), prefix, [], [], end, "")
        window = self._read_window(hour)
        labelled, labels, _ = self._labelled(window, hour) if window["rows"] else ([], [], [])
        common = {"model_package_arn": (baseline.get("package") or {}).get("ModelPackageArn"),
                  "labelled_rows": len(labelled), "rows": window["rows"]}
        if len(labelled) < config.min_labelled_rows:
            return self._finish(context, self._summary(hour, end, "too_few_labels", (
                f"{len(labelled)} labelled rows < drift.bias.min_labelled_rows={config.min_labelled_rows}; "
                "bias metrics skipped"), **common), prefix, [], [], end, "")
        if config.facet not in window["columns"]:
            return self._finish(context, self._summary(hour, end, "no_facet", (
                f"The window carries no values of the facet {config.facet!r}"), **common), prefix, [], [], end, "")
        outputs = window["outputs"][labelled]
        predicted = clarify.predicted_positive(
            self.schema["task"], outputs, config, classes=self.schema.get("classes"),
            threshold=float((baseline.get("evaluation.json") or {}).get("threshold", 0.5)))
        groups = window["columns"][config.group][labelled] if config.group in window["columns"] else None
        doc = bias.analysis(config, facet_values=window["columns"][config.facet][labelled],
                            labels=np.asarray(labels, dtype=object), predicted_positive=predicted,
                            label_name=self.schema["label"], groups=groups)
        self.hook.put_json(doc, self.bucket, f"{prefix}analysis.json")
        violations = bias.violations(doc, reference, tolerance=config.tolerance, thresholds=config.thresholds)
        names = sorted({f"{v['facet']}:{v['metric_name']}" for v in violations})
        summary = self._summary(
            hour, end, "violations" if violations else "ok",
            f"{len(violations)} bias metric(s) past the baseline: {names}" if violations
            else "No bias metric drifted past the baseline.", **common)
        summary.update(violations=len(violations), violated_features=names)
        metrics = [{"feature": f"{facet}={value}", "metric": f"bias_metric_{name}", "value": v}
                   for (facet, value, name), v in bias.metric_values(doc).items()]
        return self._finish(context, summary, prefix, violations, metrics, end,
                            f"Bias drift on {self.model}: {', '.join(names)}"[:100])


class AttributionInputsOperator(_ClarifyMonitor):
    """The window's side of feature-attribution drift, before the model runs: up to
    ``drift.feature_attribution.samples`` rows of the window (seeded by the hour) as ``rows.json`` with the
    version's reference row, and the attributions script (content-addressed), uploaded; returns the
    ``CreateProcessingJob`` request for :class:`AttributionsJobOperator`. Skips (with the reason) when there
    is no baseline or the window is smaller than ``drift.min_window_rows``.

    .. seealso:: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateProcessingJob.html

    :param attribution_config: ``spec.drift.feature_attribution`` as a dict (templated).
    :param image_uri: the image the job runs (the serving image: onnxruntime and the predictor) (templated).
    :param role_arn: the job's execution role (templated; default: the ``HYBRID_MLOPS_SAGEMAKER_ROLE_ARN``
        setting, read at run time so a missing one fails the task naming it, not the DAG file).
    :param tags: tags of the job.
    """

    monitor = "feature-attribution"
    template_fields: Sequence[str] = (*DriftReportOperator.template_fields, "attribution_config", "image_uri",
                                      "role_arn")
    operator_extra_links = ()  # it writes the job's inputs, no report: no report link to look up

    def __init__(self, *, attribution_config: dict, image_uri: str, role_arn: str | None = None,
                 tags: dict[str, str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.attribution_config = attribution_config
        self.image_uri = image_uri
        self.role_arn = role_arn
        self.tags = tags or {}

    def execute(self, context) -> dict:
        import numpy as np
        from airflow.sdk.exceptions import AirflowSkipException

        from hybrid_mlops.drift import clarify
        from hybrid_mlops.specs.model import DriftSpec, FeatureAttributionDrift

        from hybrid_mlops import settings

        fa = FeatureAttributionDrift.model_validate(self.attribution_config)
        min_rows = DriftSpec.model_validate(self.drift_config).min_window_rows
        hour, _, prefix = self._window_bounds()
        baseline = self._baseline((clarify.EXPLAINABILITY_BASELINE, clarify.BASELINE_ROW))
        if not baseline.get(clarify.EXPLAINABILITY_BASELINE):
            raise AirflowSkipException(
                f"No attribution baseline: {clarify.EXPLAINABILITY_BASELINE} is not beside "
                f"{baseline.get('model_data_url')} (registered before drift.feature_attribution was set)")
        window = self._read_window(hour)
        if window["rows"] < min_rows:
            raise AirflowSkipException(f"{window['rows']} rows < drift.min_window_rows={min_rows}; nothing to explain")
        features = [*self.schema["numeric"], *self.schema["categorical"]]
        rng = np.random.default_rng(int(hour.timestamp()))
        pick = np.sort(rng.choice(window["rows"], min(window["rows"], fa.samples), replace=False))
        columns = {f: window["columns"][f][pick] for f in features if f in window["columns"]}
        columns |= {f: np.full(pick.size, None, dtype=object) for f in features if f not in columns}
        rows = clarify.rows_document(columns, features, fa, baseline_row=baseline.get(clarify.BASELINE_ROW),
                                     seed=int(hour.timestamp()))
        rows_uri = self.hook.put_json(rows, self.bucket, f"{prefix}input/rows.json")
        code_key = clarify.code_key()
        if not self.hook.check_for_key(code_key, self.bucket):
            self.hook.load_file(str(clarify.ATTRIBUTIONS_SCRIPT), code_key, self.bucket, replace=True)
        config = clarify.processing_config(
            name=clarify.job_name(self.model, "attr", hour.strftime("%Y%m%d%H")),
            model_data_url=baseline["model_data_url"], code_uri=f"s3://{self.bucket}/{code_key}", rows_uri=rows_uri,
            output_uri=f"s3://{self.bucket}/{prefix}output", image_uri=self.image_uri,
            instance_type=fa.processing_instance_type, role_arn=self.role_arn or settings.sagemaker_role_arn(),
            tags=self.tags)
        self.log.info("Attributions of %s rows of the window: job %s", pick.size, config["ProcessingJobName"])
        return config


class AttributionsJobOperator(SageMakerProcessingOperator):
    """``include/monitoring/attributions.py`` as a SageMaker Processing job (the serving image runs the
    model); on ``local`` the same request is created on the local SageMaker API and run as a subprocess in
    ``.venv-serve`` (:func:`hybrid_mlops.local.processing.run_processing_job`). A retry whose first try
    already wrote ``analysis.json`` reuses it. Returns ``{"Processing": <describe>, "output_uri"}``.

    .. seealso:: https://docs.aws.amazon.com/sagemaker/latest/dg/processing-job.html

    :param config: the ``CreateProcessingJob`` request (templated), from :class:`AttributionInputsOperator`
        or the registration's baseline step.
    """

    def __init__(self, *, config: dict, deferrable: bool = True, check_interval: int = 30,
                 max_ingestion_time: int = 3 * 3600, **kwargs):
        super().__init__(config=config, deferrable=deferrable, wait_for_completion=True, print_log=False,
                         check_interval=check_interval, max_ingestion_time=max_ingestion_time,
                         action_if_job_exists="timestamp", **kwargs)

    def _output_uri(self) -> str:
        return self.config["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]

    def execute(self, context) -> dict:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from hybrid_mlops import settings
        from hybrid_mlops.layout import split_s3_uri

        output = self._output_uri()
        s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        bucket, key = split_s3_uri(f"{output.rstrip('/')}/analysis.json")
        if s3.check_for_key(key, bucket):
            self.log.info("%s already exists (an earlier try); reusing it.", f"s3://{bucket}/{key}")
            return {"Processing": {"ProcessingJobName": self.config["ProcessingJobName"]}, "output_uri": output,
                    "reused": True}
        if not settings.is_local():
            result = super().execute(context)
            return {**result, "output_uri": output}
        from hybrid_mlops.local.processing import run_processing_job

        self.preprocess_config()
        name = self.config["ProcessingJobName"]
        try:
            self.hook.describe_processing_job(name)
        except Exception:  # noqa: BLE001  (not created yet: ValidationException)
            self.log.info("Creating processing job %s on the local SageMaker API.", name)
            self.hook.create_processing_job(self.config, wait_for_completion=False)
        self.log.info("Running %s locally under the processing container contract.", name)
        run = run_processing_job(self.config, s3.get_conn())
        self.log.info("Processing job %s: %.1fs, outputs %s", name, run["seconds"], run["outputs"])
        return {"Processing": serialize(self.hook.describe_processing_job(name)), "output_uri": output, "local": run}

    def execute_complete(self, context, event=None) -> dict:
        return {**super().execute_complete(context, event), "output_uri": self._output_uri()}


class FeatureAttributionDriftOperator(_ClarifyMonitor):
    """Model Monitor's feature attribution drift of one window: per label, the nDCG of the window's global
    SHAP ranking (the attributions job's ``analysis.json``) against the version's baseline
    (``analysis_explainability.json`` beside ``model.tar.gz``); below ``ndcg_threshold`` a
    ``feature_attribution_drift_check`` violation. Writes ``constraint_violations.json`` and ``report.json``
    beside the job's output, the nDCG to CloudWatch (``feature_attribution_ndcg``, Feature = the label) and
    SNS on violations. Returns the summary.

    .. seealso:: https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-model-monitor-feature-attribution-drift.html

    :param attribution_config: ``spec.drift.feature_attribution`` as a dict (templated).
    :param job: the attributions job's result (``output_uri``) (templated).
    """

    monitor = "feature-attribution"
    template_fields: Sequence[str] = (*DriftReportOperator.template_fields, "attribution_config", "job")

    def __init__(self, *, attribution_config: dict, job: dict, **kwargs):
        super().__init__(**kwargs)
        self.attribution_config = attribution_config
        self.job = job

    def execute(self, context) -> dict:
        import json

        from hybrid_mlops.drift import attribution, clarify
        from hybrid_mlops.layout import split_s3_uri
        from hybrid_mlops.specs.model import FeatureAttributionDrift

        fa = FeatureAttributionDrift.model_validate(self.attribution_config)
        hour, end, prefix = self._window_bounds()
        baseline = self._baseline((clarify.EXPLAINABILITY_BASELINE,))
        bucket, key = split_s3_uri(f"{self.job['output_uri'].rstrip('/')}/analysis.json")
        window = json.loads(self.hook.read_key(key, bucket))
        scores, violations = attribution.compare(window, baseline[clarify.EXPLAINABILITY_BASELINE], fa.ndcg_threshold)
        labels = sorted(v["label"] for v in violations)
        summary = self._summary(
            hour, end, "violations" if violations else "ok",
            f"Feature attribution ranking drifted (nDCG < {fa.ndcg_threshold:g}) for {labels}" if violations
            else f"Feature attribution ranking holds (nDCG {scores})",
            model_package_arn=(baseline.get("package") or {}).get("ModelPackageArn"), ndcg=scores,
            explained_rows=(window.get("method") or {}).get("explained_rows"), analysis_uri=f"s3://{bucket}/{key}")
        summary.update(violations=len(violations), violated_features=[f"shap:{label}" for label in labels])
        metrics = [{"feature": label, "metric": "feature_attribution_ndcg", "value": v} for label, v in scores.items()]
        return self._finish(context, summary, prefix, violations, metrics, end,
                            f"Feature attribution drift on {self.model}: {', '.join(labels)}"[:100])
