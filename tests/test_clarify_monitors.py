"""Bias drift and feature attribution drift: hand-computed Clarify metrics, nDCG edges, the spec's checks,
the attributions script in the serving env, and one monitor run end to end on the moto server."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import numpy as np
import pytest

from hybrid_mlops.drift import attribution, bias

ROOT = Path(__file__).resolve().parents[1]
HOUR = datetime(2026, 5, 1, 10, tzinfo=timezone.utc)

# Ten rows: group d (country BR) is the first four.
FACET = np.array(["BR"] * 4 + ["US"] * 6, dtype=object)
LABELS = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0], dtype=object)
PREDICTED = np.array([1, 0, 1, 0, 1, 1, 0, 0, 0, 0], dtype=bool)


class _Config:
    facet, facet_values, facet_threshold = "country", ["BR"], None
    label_values, label_threshold = [1], None
    metrics = [*bias.PRE_TRAINING, *bias.POST_TRAINING]


def test_pre_training_metrics_by_hand():
    d = bias.facet_mask(FACET, ["BR"], None)
    y = bias.positive(LABELS, [1], None)
    got = bias.pre_training_metrics(d, y, groups=np.array(["g"] * 10, dtype=object))
    # n_a = 6, n_d = 4; positive share q_a = 1/6, q_d = 1/2; label distributions P_a = (5/6, 1/6), P_d = (1/2, 1/2)
    m = (2 / 3, 1 / 3)
    want = {
        "CI": (6 - 4) / 10,
        "DPL": 1 / 6 - 1 / 2,
        "KL": 5 / 6 * math.log((5 / 6) / 0.5) + 1 / 6 * math.log((1 / 6) / 0.5),
        "JS": 0.5 * (5 / 6 * math.log((5 / 6) / m[0]) + 1 / 6 * math.log((1 / 6) / m[1])
                     + 0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])),
        "LP": math.sqrt(2 * (1 / 3) ** 2),
        "TVD": 1 / 3,
        "KS": 1 / 3,
        "CDDL": 2 / 7 - 2 / 3,  # one group: d's share of the rejected (2 of 7) minus of the accepted (2 of 3)
    }
    assert got == pytest.approx(want, abs=1e-12)


def test_post_training_metrics_by_hand():
    d = bias.facet_mask(FACET, ["BR"], None)
    y = bias.positive(LABELS, [1], None)
    got = bias.post_training_metrics(d, y, PREDICTED)
    # d: TP 1, FN 1, FP 1, TN 1;  a: TP 1, FP 1, FN 0, TN 4
    b = np.array([1, 0, 2, 1, 1, 2, 1, 1, 1, 1], dtype=float)  # predicted - observed + 1
    want = {
        "DPPL": 2 / 6 - 2 / 4, "DI": (2 / 4) / (2 / 6), "DCAcc": 1 / 2 - 2 / 2, "DCR": 5 / 4 - 2 / 2,
        "RD": 1 / 1 - 1 / 2, "SD": 1 / 2 - 4 / 5, "DAR": 1 / 2 - 1 / 2, "DRR": 1 / 2 - 4 / 4,
        "AD": 5 / 6 - 2 / 4, "TE": 1 / 1 - 0 / 1, "GE": ((b / b.mean()) ** 2 - 1).mean() / 2,
    }
    assert {k: v for k, v in got.items() if k != "CDDPL"} == pytest.approx(want, abs=1e-12)
    assert math.isnan(got["CDDPL"])  # no group column


def test_numeric_facet_and_label_thresholds():
    assert bias.facet_mask(np.array([17.0, 18.0, np.nan, 40.0]), None, 18.0).tolist() == [False, False, False, True]
    assert bias.positive(np.array([0.2, 3.5, np.nan]), None, 1.0).tolist() == [False, True, False]
    assert bias.positive(np.array([1.0, 0.0, "1", None], dtype=object), [1], None).tolist() == [True, False, True, False]


def test_analysis_shape_and_bias_drift_violations():
    doc = bias.analysis(_Config, facet_values=FACET, labels=LABELS, predicted_positive=PREDICTED, label_name="label")
    pre, post = doc["pre_training_bias_metrics"], doc["post_training_bias_metrics"]
    assert pre["label"] == "label" and pre["label_value_or_threshold"] == "1"
    (entry,) = pre["facets"]["country"]
    assert entry["value_or_threshold"] == "BR"
    assert {"name": "CI", "description": "Class Imbalance (CI)", "value": pytest.approx(0.2)} in entry["metrics"]
    assert [m["name"] for m in post["facets"]["country"][0]["metrics"]] == list(bias.POST_TRAINING)
    assert next(m for m in post["facets"]["country"][0]["metrics"] if m["name"] == "CDDPL")["value"] is None

    # the same data as the baseline: nothing drifted
    assert bias.violations(doc, doc, tolerance=0.0) == []
    baseline = json.loads(json.dumps(doc))
    for m in baseline["post_training_bias_metrics"]["facets"]["country"][0]["metrics"]:
        if m["name"] == "DPPL":
            m["value"] = 0.05  # baseline 0.05; the window's -0.1667 is 0.1167 farther from 0
    found = bias.violations(doc, baseline, tolerance=0.1)
    assert [v["metric_name"] for v in found] == ["DPPL"]
    assert found[0] == {"facet": "country", "facet_value": "BR", "metric_name": "DPPL",
                        "constraint_check_type": "bias_drift_check", "description": found[0]["description"]}
    assert found[0]["description"].startswith("Value -0.166667 does not meet the constraint requirement")
    assert bias.violations(doc, baseline, tolerance=0.12) == []
    # DI's ideal is 1: |1.5 - 1| = 0.5 passes a 0.6 bound, not a 0.4 one (whatever the baseline)
    assert bias.violations(doc, doc, thresholds={"DI": 0.6}) == []
    assert [v["metric_name"] for v in bias.violations(doc, doc, thresholds={"DI": 0.4})] == ["DI"]


def test_ndcg_edges():
    base = {"a": 3.0, "b": 2.0, "c": 1.0}
    assert attribution.ndcg(base, {"a": 0.9, "b": 0.5, "c": 0.1}) == pytest.approx(1.0)
    ideal = 3 + 2 / math.log2(3) + 1 / 2
    assert attribution.ndcg(base, {"a": 0.1, "b": 0.5, "c": 0.9}) == pytest.approx((1 + 2 / math.log2(3) + 3 / 2) / ideal)
    # tied scores share their positions' discounts (scikit-learn's ndcg_score, ignore_ties=False)
    assert attribution.ndcg(base, {"a": 1, "b": 1, "c": 1}) == pytest.approx(2 * (1 + 1 / math.log2(3) + 1 / 2) / ideal)
    assert attribution.ndcg(base, {"b": 1.0}) == pytest.approx((2 + (3 + 1) / 2 * (1 / math.log2(3) + 1 / 2)) / ideal)
    assert attribution.ndcg({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 2.0}) == 1.0  # no relevance at all
    assert attribution.ndcg(base, {"a": -3.0, "b": 2.0, "c": 1.0}) == pytest.approx(1.0)  # magnitudes rank

    def doc(values):
        return {"version": "1.0", "explanations": {"kernel_shap": {"probability": {"global_shap_values": values,
                                                                                     "expected_value": 0.1}}}}

    scores, violations = attribution.compare(doc({"a": 0.1, "b": 0.5, "c": 0.9}), doc(base), threshold=0.9)
    assert scores["probability"] < 0.9
    assert violations == [{"label": "probability", "metric_name": "shap",
                           "constraint_check_type": "feature_attribution_drift_check",
                           "description": violations[0]["description"]}]
    assert violations[0]["description"].startswith(f"Feature attribution drift {scores['probability']:.4f} exceeds "
                                                   "threshold 0.9")
    assert attribution.compare(doc(base), doc(base))[1] == []


@pytest.mark.parametrize("drift, message", [
    ({"bias": {"facet": "nope", "facet_values": ["x"]}}, "drift.bias.facet='nope': is not a feature of schema.features"),
    ({"bias": {"facet": "country", "facet_values": ["BR"], "facet_threshold": 1}},
     "drift.bias: give exactly one of facet_values"),
    ({"bias": {"facet": "country", "facet_threshold": 1.0}}, "drift.bias.facet_threshold: facet 'country' is categorical"),
    ({"bias": {"facet": "country", "facet_values": ["BR"], "metrics": ["DPPL", "XYZ"]}},
     "drift.bias: metrics: ['XYZ'] are not bias metrics"),
    ({"bias": {"facet": "country", "facet_values": ["BR"], "metrics": ["CDDL"]}}, "CDDL / CDDPL need group"),
    ({"bias": {"facet": "country", "facet_values": ["BR"], "label_threshold": 0.5}},
     "drift.bias.label_threshold: applies to regression"),
    ({"feature_attribution": {"ndcg_threshold": 1.5}}, "drift.feature_attribution.ndcg_threshold=1.5"),
    ({"feature_attribution": {"baseline_row": {"colour": 1}}}, "drift.feature_attribution.baseline_row: ['colour']"),
])
def test_spec_errors_name_the_field(drift, message):
    import yaml

    from hybrid_mlops.specs.model import SpecError, parse_spec

    data = yaml.safe_load((ROOT / "include/models/fraud-detection.yaml").read_text())
    data["drift"] = {k: v for k, v in data["drift"].items() if k not in ("bias", "feature_attribution")} | drift
    with pytest.raises(SpecError) as err:
        parse_spec(data, "fraud.yaml")
    assert message in str(err.value)


def _standin(artifacts_dir) -> Path:
    from serving_helpers import build_standin_model

    return build_standin_model(artifacts_dir / "standin-model")


_SERVE_CHECK = r"""
import json, sys
import numpy as np
import attributions as a
schema, scorer = a.load_model(a.Path(sys.argv[1]))
model = a.Model(schema, scorer)
rng = np.random.default_rng(0)
rows = np.empty((6, len(model.features)), dtype=object)
cats = {"merchant_category": "grocery", "channel": "online", "country": "BR"}
for j, f in enumerate(model.features):
    rows[:, j] = [cats.get(f, "x") if j >= model.n_numeric else float(v) for v in rng.normal(5, 3, 6)]
base = rows[0].copy()
phi, expected = a.exact_shap(model, rows, base)
f = model(rows)[:, 0]
kernel, _ = a.kernel_shap(model, rows, base, 4096, rng)
print(json.dumps({"efficiency": float(np.abs(phi[:, :, 0].sum(axis=1) - (f - expected[0])).max()),
                  "kernel_vs_exact": float(np.abs(kernel - phi).max()), "scale": float(np.abs(phi).max()),
                  "first_row_zero": float(np.abs(phi[0]).max())}))
"""


def test_attributions_exact_and_kernel_in_the_serving_env(artifacts_dir):
    """The script in .venv-serve on a real ONNX model: exact Shapley values add up to f(x) - f(b) (efficiency),
    Kernel SHAP with enough coalitions matches them, and the reference row itself gets zeros."""
    from hybrid_mlops import settings

    model_dir = _standin(artifacts_dir)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{ROOT / 'include/serving'}:{ROOT / 'include/monitoring'}"}
    out = subprocess.run([settings.serving_python(), "-c", _SERVE_CHECK, str(model_dir)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["scale"] > 1e-4
    assert got["efficiency"] < 1e-5 and got["first_row_zero"] < 1e-9
    assert got["kernel_vs_exact"] < 1e-4 * max(1.0, got["scale"] * 1e3)


# ------------------------------------------------------------------------------------------ end to end


def _bucket():
    return os.environ["HYBRID_MLOPS_BUCKET"]


def _read(key):
    return json.loads(boto3.client("s3").get_object(Bucket=_bucket(), Key=key)["Body"].read())


def _register(spec, model_dir: Path, tmp_path: Path) -> None:
    """Registration as the retrain DAG does it: the data-quality baseline, then the Clarify baselines through
    clarify_steps (rows.json, the attributions job run locally, the reports), then an Approved package."""
    from hybrid_mlops import clarify_steps
    from hybrid_mlops.data.generator import CATEGORICAL_FEATURES, NUMERIC_FEATURES, generate, write_parquet
    from hybrid_mlops.drift.monitor_format import dataset_statistics, suggest_constraints
    from hybrid_mlops.local.processing import run_processing_job

    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    for name, rows, seed in (("train", 20_000, 7), ("validation", 5_000, 8)):
        write_parquet(generate(rows, seed=seed), tmp_path / f"{name}.parquet")
        s3.upload_file(str(tmp_path / f"{name}.parquet"), _bucket(), f"data/fraud-detection/run1/{name}/part-0.parquet")
    stats = dataset_statistics(generate(20_000, seed=7), list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
        for name, doc in {"statistics.json": stats, "constraints.json": suggest_constraints(stats),
                          "evaluation.json": {"roc_auc": 0.9, "threshold": 0.5}}.items():
            raw = json.dumps(doc).encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    artifact = f"s3://{_bucket()}/models/fraud-detection/job1/output/model.tar.gz"
    s3.put_object(Bucket=_bucket(), Key="models/fraud-detection/job1/output/model.tar.gz", Body=buf.getvalue())
    evaluation = {"model_data_url": artifact, "lineage": {"training_job": "fraud-detection-job1"},
                  "metrics": {"threshold": 0.5}, "model_metrics": {"ModelQuality": {"Statistics": {
                      "ContentType": "application/json", "S3Uri": artifact.replace("model.tar.gz", "evaluation.json")}}}}
    prepared = {"validation_uri": f"s3://{_bucket()}/data/fraud-detection/run1/validation"}
    config = clarify_steps.clarify_inputs(spec, evaluation, prepared)
    sm.create_processing_job(**config)  # the request, checked against botocore's model by strict_aws
    run = run_processing_job(config, s3)
    metrics = clarify_steps.clarify_reports(spec, evaluation, prepared, {"output_uri": run["outputs"]["analysis"]})
    assert set(metrics) == {"ModelQuality", "Bias", "Explainability"}
    group = spec.registry.model_package_group
    sm.create_model_package_group(ModelPackageGroupName=group)
    sm.create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus="Approved", ModelMetrics=metrics,
        InferenceSpecification={"Containers": [{"Image": spec.registry.inference_image, "ModelDataUrl": artifact}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]},
        CustomerMetadataProperties={"train_data_uri": f"s3://{_bucket()}/data/fraud-detection/run1/train"})


def test_monitor_runs_bias_and_attribution_drift_end_to_end(aws, airflow_db, spec, artifacts_dir, tmp_path):
    """Registration's baselines, then one hour of traffic in which the model flags every BR / IN transaction:
    the bias monitor reports Clarify's metrics and a bias_drift_check on DPPL, the attributions job (the
    serving env, locally) explains a sample of the window and the nDCG is compared, the violations go to
    S3, CloudWatch and the drift asset event."""
    from airflow.utils.state import DagRunState

    from hybrid_mlops.dags.monitor import build
    from hybrid_mlops.data.generator import CATEGORICAL_FEATURES, NUMERIC_FEATURES, generate
    from hybrid_mlops.drift.capture import capture_key, capture_lines
    from hybrid_mlops.layout import monitoring_prefix

    model_dir = _standin(artifacts_dir)
    _register(spec, model_dir, tmp_path)
    base = "models/fraud-detection/job1/output/"
    baseline_bias = _read(base + "analysis_bias.json")
    assert set(baseline_bias) == {"version", "pre_training_bias_metrics", "post_training_bias_metrics"}
    baseline_shap = _read(base + "analysis_explainability.json")["explanations"]["kernel_shap"]["probability"]
    assert set(baseline_shap["global_shap_values"]) == {*NUMERIC_FEATURES, *CATEGORICAL_FEATURES}

    window = generate(3000, seed=31)
    flagged = np.isin(window["country"], ["BR", "IN"])
    outputs = np.where(flagged, 0.95, window["true_probability"] * 0.2)
    body = "\n".join(capture_lines(window, [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES], model="fraud-detection",
                                   hour=HOUR, id_column="transaction_id", outputs=outputs))
    s3 = boto3.client("s3")
    s3.put_object(Bucket=_bucket(), Key=capture_key("fraud-detection", HOUR), Body=body)
    labels = "\n".join(json.dumps({"transaction_id": t, "label": int(y)})
                       for t, y in zip(window["transaction_id"].tolist(), window["label"].tolist()))
    s3.put_object(Bucket=_bucket(), Key="labels/fraud-detection/2026/05/01/part-0.jsonl", Body=labels)

    (dag,) = build([spec])
    run = dag.test(logical_date=HOUR + timedelta(hours=1), run_after=HOUR + timedelta(hours=1))
    assert run.state == DagRunState.SUCCESS
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert {t: tis[t].state for t in ("bias_drift", "attributions", "feature_attribution_drift", "signal_drift")} \
        == dict.fromkeys(("bias_drift", "attributions", "feature_attribution_drift", "signal_drift"), "success")

    prefix = monitoring_prefix("fraud-detection", HOUR)
    analysis = _read(prefix + "model-bias/analysis.json")
    post = {m["name"]: m["value"] for m in analysis["post_training_bias_metrics"]["facets"]["country"][0]["metrics"]}
    d = flagged
    assert post["DPPL"] == pytest.approx(float((outputs[~d] >= 0.5).mean() - 1.0))  # every BR / IN row flagged
    violations = _read(prefix + "model-bias/constraint_violations.json")["violations"]
    assert {"facet": "country", "facet_value": "BR,IN", "metric_name": "DPPL",
            "constraint_check_type": "bias_drift_check"}.items() <= next(
                v for v in violations if v["metric_name"] == "DPPL").items()
    report = _read(prefix + "model-bias/report.json")
    assert report["labelled_rows"] == 3000 and report["violations"] == len(violations) > 0

    explained = _read(prefix + "feature-attribution/output/analysis.json")
    assert explained["method"] == {"name": "exact", "explained_rows": 200, "num_samples": 1024,
                                   "seed": int(HOUR.timestamp())}
    fa = _read(prefix + "feature-attribution/report.json")
    assert 0 < fa["ndcg"]["probability"] <= 1
    fa_violations = _read(prefix + "feature-attribution/constraint_violations.json")["violations"]
    assert (fa["status"] == "violations") == (fa["ndcg"]["probability"] < 0.9) == bool(fa_violations)

    cw = boto3.client("cloudwatch").list_metrics(Namespace="hybrid-mlops/data-metrics")["Metrics"]
    names = {(m["MetricName"], {x["Name"]: x["Value"] for x in m["Dimensions"]}["Feature"]) for m in cw}
    assert ("bias_metric_DPPL", "country=BR,IN") in names and ("feature_attribution_ndcg", "probability") in names

    extra = tis["signal_drift"].xcom_pull(task_ids="signal_drift")
    assert extra["monitors"]["model-bias"]["report_uri"] == f"s3://{_bucket()}/{prefix}model-bias/constraint_violations.json"
    assert "country:DPPL" in extra["violated_features"]

    # a retry of the attributions task reuses the first try's analysis.json
    from hybrid_mlops.operators.drift import AttributionsJobOperator

    config = tis["attribution_inputs"].xcom_pull(task_ids="attribution_inputs")
    again = AttributionsJobOperator(task_id="again", config=config, aws_conn_id=None).execute({})
    assert again["reused"] is True
