"""Any model, any data: specs other than the fraud reference, on their own data, through the whole
lifecycle on the local target: retrain -> registry -> approval -> local deploy (smoke-tested with the
model's own validation rows) -> traffic -> monitor, where a shifted numeric feature must be flagged.

- ``customer-churn`` (written here, none of the shipped three): binary, its own feature names, its own
  CSV in the moto S3 (``s3`` source);
- ``diabetes-progression`` (shipped): regression, an SQL query over a CSV table (DuckDB on local);
- ``wine-cultivar`` (shipped): multiclass, a Feature Store feature group's offline store.
"""

from __future__ import annotations

import json
import math
import re
import os
import random
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
import yaml

from conftest import ROOT
from hybrid_mlops.local.dag_runner import run_dag

CHURN = {
    "name": "customer-churn",
    "description": "Subscription churn classifier (a team's own CSV in S3)",
    "team": "growth-ml",
    "task": "binary",
    "schedule": {"retrain": "30 2 * * *", "monitor": "@hourly"},
    "schema": {
        "id": "customer_id", "label": "churned", "event_time": "snapshot_time",
        "features": {"tenure_months": "numeric", "monthly_charges": "numeric", "support_calls": "numeric",
                     "contract": {"type": "categorical", "domain": ["monthly", "annual", "two_year"]},
                     "payment method": "categorical"},
    },
    "data": {"source": {"type": "s3", "uri": "s3://{bucket}/teams/growth/churn/", "format": "csv"},
             "window_days": 60, "validation_fraction": 0.25},
    "training": {"image_uri": "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:2.8.0-cpu-py312-ubuntu22.04-sagemaker",
                 "instance_type": "ml.m5.xlarge", "spot": False,
                 "hyperparameters": {"epochs": 12, "batch-size": 64, "learning-rate": 0.01, "hidden": 16}},
    "registry": {"model_package_group": "customer-churn-models", "inference_image": "ghcr.io/hybrid-mlops/predictor:latest"},
    "approval": {"rules": {"roc_auc": {"approve_at": 0.75, "reject_below": 0.6},
                           "log_loss": {"approve_at": 0.6, "reject_above": 0.75}}},
    "serving": {"gpu": 0, "regions": ["us-west-2"], "min_replicas": 1},
    "drift": {"min_window_rows": 50},
    "cost": {"daily_budget_usd": 10},
}


def churn_rows(n: int, seed: int = 5) -> dict[str, list]:
    """Customers whose churn follows a known rule (short tenure, high charges, many calls, monthly plans)."""
    rng = random.Random(seed)
    cols = {k: [] for k in ("customer_id", "tenure_months", "monthly_charges", "support_calls", "contract",
                            "payment method", "churned")}
    for i in range(n):
        tenure = rng.randint(1, 72)
        charges = round(rng.uniform(20, 120), 2)
        calls = rng.randint(0, 8)
        contract = rng.choices(["monthly", "annual", "two_year"], [0.55, 0.3, 0.15])[0]
        z = -1.0 - 0.045 * tenure + 0.03 * (charges - 70) + 0.35 * calls + {"monthly": 1.0, "annual": -0.5, "two_year": -1.5}[contract]
        cols["customer_id"].append(f"cust-{seed}-{i:05d}")
        cols["tenure_months"].append(tenure)
        cols["monthly_charges"].append(charges)
        cols["support_calls"].append(calls)
        cols["contract"].append(contract)
        cols["payment method"].append(rng.choice(["card", "bank transfer", "invoice"]))
        cols["churned"].append(int(rng.random() < 1 / (1 + math.exp(-z))))
    return cols


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """A specs folder of the test's own: the DAG files (which dag.test() parses) build from it."""
    path = tmp_path / "models"
    path.mkdir()
    monkeypatch.setenv("HYBRID_MLOPS_MODELS_DIR", str(path))
    return path


def _lifecycle(spec_file: Path, models_dir: Path, load, drift_feature: str, traffic: dict[str, list]) -> dict:
    """retrain -> registry -> approval -> local deploy -> traffic (drifted) -> monitor; what each step left."""
    from hybrid_mlops import layout, settings
    from hybrid_mlops.factory import build_dags
    from hybrid_mlops.local.serving import LocalServing
    from hybrid_mlops.local.traffic import captured_rows, send_rows, shifted
    from hybrid_mlops.specs import load_spec

    spec = load_spec(spec_file)
    load(spec)
    retrain = build_dags("retrain", models_dir)[f"retrain_{spec.dag_suffix}"]
    run = run_dag(retrain, conf={"deploy": True}, hitl_choice="Approve to staging", responder="test-reviewer")
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    summary = run.get_task_instance("summary").xcom_pull(task_ids="summary")
    assert summary["status"] == "Approved", summary
    serving = LocalServing(spec.name)
    try:
        served = serving.current()
        assert served and served["version"] == summary["version"]
        hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        outputs = send_rows(serving.url, spec, shifted(traffic, drift_feature, 3.0))
        s3 = boto3.client("s3")
        deadline = time.time() + 60
        while captured_rows(s3, settings.bucket(), layout.capture_prefix(spec.name, hour)) < len(outputs):
            assert time.time() < deadline, "capture records did not land"
            time.sleep(1)
        monitor = build_dags("monitor", models_dir)[f"monitor_{spec.dag_suffix}"]
        mrun = run_dag(monitor, logical_date=hour + timedelta(hours=1))  # reports the hour before
        assert mrun.state == "success", {ti.task_id: ti.state for ti in mrun.get_task_instances()}
        prefix = layout.monitoring_prefix(spec.name, hour)
        read = lambda name: json.loads(s3.get_object(Bucket=settings.bucket(), Key=prefix + name)["Body"].read())  # noqa: E731
        return {"spec": spec, "summary": summary, "outputs": outputs, "report": read("report.json"),
                "violations": read("constraint_violations.json")["violations"], "statistics": read("statistics.json")}
    finally:
        serving.stop()


@pytest.fixture
def fast_capture(monkeypatch):
    monkeypatch.setenv("HYBRID_MLOPS_CAPTURE_FLUSH_SECONDS", "1")
    monkeypatch.setenv("HYBRID_MLOPS_CAPTURE_WAIT_SECONDS", "1")


def _drifted(result: dict, feature: str) -> None:
    checks = {(v["feature_name"], v["constraint_check_type"]) for v in result["violations"]}
    assert (feature, "baseline_drift_check") in checks, result["violations"]
    assert result["report"]["status"] == "violations" and not result["report"]["unchecked_features"]


def load_churn_csv(spec) -> None:
    """The team's CSV: 4,000 customer snapshots of the last 30 days, where the churn spec's source reads them."""
    from hybrid_mlops import settings
    from hybrid_mlops.data.loaders import upload_csv, with_event_times

    rows = with_event_times(churn_rows(4000), "snapshot_time", days=30)
    upload_csv(boto3.client("s3"), rows, f"s3://{settings.bucket()}/teams/growth/churn/2026/customers.csv")


def test_own_binary_model_on_its_own_csv(aws, airflow_db, models_dir, fast_capture):
    spec_file = models_dir / "customer-churn.yaml"
    spec_file.write_text(yaml.safe_dump(CHURN, sort_keys=False))
    result = _lifecycle(spec_file, models_dir, load_churn_csv, "monthly_charges", churn_rows(400, seed=9))
    assert result["summary"]["metrics"]["roc_auc"] > 0.75
    assert all(0.0 <= p <= 1.0 for p in result["outputs"])
    _drifted(result, "monthly_charges")
    features = {f["name"] for f in result["statistics"]["features"]}
    assert features == {"tenure_months", "monthly_charges", "support_calls", "contract", "payment method"}


def _shipped(models_dir: Path, name: str) -> Path:
    return Path(shutil.copy(ROOT / "include" / "models" / f"{name}.yaml", models_dir / f"{name}.yaml"))


def _example_loader(spec):
    from hybrid_mlops.local.datasets import load_example_data

    load_example_data(spec, boto3.client("sagemaker"), boto3.client("s3"))


def _example_rows(name: str) -> dict[str, list]:
    from hybrid_mlops.data.loaders import read_csv

    rows = read_csv(ROOT / "include" / "datasets" / f"{name}.csv")
    return {k: v * 2 for k, v in rows.items()}  # enough rows for the window's distribution checks


def test_shipped_regression_model_from_sql(aws, airflow_db, models_dir, fast_capture):
    result = _lifecycle(_shipped(models_dir, "diabetes-progression"), models_dir, _example_loader, "bmi",
                        _example_rows("diabetes-progression"))
    metrics = result["summary"]["metrics"]
    assert metrics["r2"] >= 0.35 and metrics["rmse"] <= 60
    assert all(isinstance(p, float) and 0 < p < 400 for p in result["outputs"])
    _drifted(result, "bmi")


def test_shipped_multiclass_model_from_feature_store(aws, airflow_db, models_dir, fast_capture):
    result = _lifecycle(_shipped(models_dir, "wine-cultivar"), models_dir, _example_loader, "proline",
                        _example_rows("wine-cultivar"))
    assert result["summary"]["metrics"]["accuracy"] >= 0.9
    assert all(len(p) == 3 and abs(sum(p) - 1) < 1e-4 for p in result["outputs"])
    _drifted(result, "proline")


OWN_SCRIPT = '''"""A team's own training script (script mode): logistic regression in numpy, exported with onnx."""
import argparse, glob, json, os

import numpy as np
import onnx
import pyarrow.parquet as pq
from onnx import TensorProto, helper

import metrics  # the project's metrics module, bundled beside the entry point

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=300)
args, _ = p.parse_known_args()
schema = json.load(open(os.path.join(os.environ["SM_CHANNEL_CONFIG"], "schema.json")))
assert not schema["categorical"], "this script takes numeric features only"


def read(channel):
    files = glob.glob(os.path.join(os.environ[f"SM_CHANNEL_{channel.upper()}"], "*.parquet"))
    table = pq.read_table(files[0])
    x = np.stack([table.column(f).to_numpy().astype(np.float64) for f in schema["numeric"]], axis=1)
    return x, table.column(schema["label"]).to_numpy().astype(np.float64)


x, y = read("train")
mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
z = (x - mean) / std
w, b = np.zeros(z.shape[1]), 0.0
for _ in range(args.steps):
    p_ = 1 / (1 + np.exp(-(z @ w + b)))
    w -= 0.5 * z.T @ (p_ - y) / len(y)
    b -= 0.5 * float(np.mean(p_ - y))
# fold the scaling into the weights: probability = sigmoid(x @ (w / std) + (b - mean / std @ w))
weights = (w / std).astype(np.float32).reshape(-1, 1)
bias = np.array([b - float((mean / std) @ w)], dtype=np.float32)
graph = helper.make_graph(
    [helper.make_node("MatMul", ["numeric", "w"], ["logit2"]), helper.make_node("Add", ["logit2", "b"], ["logit"]),
     helper.make_node("Flatten", ["logit"], ["flat"], axis=0), helper.make_node("Sigmoid", ["flat"], ["sig"]),
     helper.make_node("Reshape", ["sig", "shape"], ["probability"])],
    "own", [helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["N", len(schema["numeric"])])],
    [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N"])],
    [helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.flatten()),
     helper.make_tensor("b", TensorProto.FLOAT, [1], bias), helper.make_tensor("shape", TensorProto.INT64, [1], [-1])])
model_dir = os.environ["SM_MODEL_DIR"]
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
          os.path.join(model_dir, "model.onnx"))
vx, vy = read("validation")
scores = 1 / (1 + np.exp(-(vx @ weights[:, 0] + bias[0])))
threshold = metrics.best_f1_threshold(vy, scores)
json.dump({"model": schema["model"], "task": "binary", "id": schema["id"], "numeric": schema["numeric"],
           "categorical": {}, "output": "probability", "threshold": threshold},
          open(os.path.join(model_dir, "input_schema.json"), "w"))
json.dump(metrics.binary_metrics(vy, scores, threshold), open(os.path.join(model_dir, "evaluation.json"), "w"))
print("own script done")
'''


def test_own_training_script_with_numeric_only_features(aws, airflow_db, models_dir, fast_capture, tmp_path):
    """Script mode with the team's own entry point (no torch: numpy + onnx), under the documented contract;
    the predictor serves a numeric-only model; the project computes its baseline and smoke rows."""
    source = tmp_path / "own-trainer"
    source.mkdir()
    (source / "fit.py").write_text(OWN_SCRIPT)
    spec = {**CHURN, "name": "churn-logit",
            "schema": {**CHURN["schema"], "features": {"tenure_months": "numeric", "monthly_charges": "numeric",
                                                       "support_calls": "numeric"}},
            "training": {**CHURN["training"], "source_dir": str(source), "entry_point": "fit.py",
                         "hyperparameters": {"steps": 400}},
            "registry": {**CHURN["registry"], "model_package_group": "churn-logit-models"}}
    spec_file = models_dir / "churn-logit.yaml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = _lifecycle(spec_file, models_dir, load_churn_csv, "tenure_months", churn_rows(400, seed=9))
    assert result["summary"]["metrics"]["roc_auc"] > 0.75
    _drifted(result, "tenure_months")


def test_contract_refuses_what_could_never_serve(spec):
    """An artifact that disagrees with its spec, or an ONNX file newer than the serving runtime loads,
    is refused before it is registered (no Approved version that no server can load)."""
    from airflow.sdk.exceptions import AirflowFailException

    from hybrid_mlops.retrain_steps import check_contract, onnx_ir_version

    good_schema = {"task": "binary", "numeric": spec.data_schema.numeric,
                   "categorical": {c: ["a"] for c in spec.data_schema.categorical}}
    evaluation = {"accuracy": 0.99, "roc_auc": 0.95, "onnx_max_abs_diff": 1e-7}
    check_contract(spec, "s3://b/m.tar.gz", evaluation, good_schema, bytes([0x08, 13]))
    assert onnx_ir_version(bytes([0x08, 0x0E, 0x12, 0x03]) + b"abc") == 14
    cases = [
        ({**good_schema, "numeric": ["x"]}, evaluation, b"", "must be the spec's numeric features in order"),
        (good_schema, {**evaluation, "onnx_max_abs_diff": float("nan")}, b"", "disagrees with the trained model by nan"),
        (good_schema, {"accuracy": 0.99, "onnx_max_abs_diff": 0.0}, b"", "lacks the approval metric(s) ['roc_auc']"),
        (good_schema, evaluation, bytes([0x08, 14]), "IR version 14; the serving image's onnxruntime loads up to 13"),
    ]
    for schema, ev, model, message in cases:
        with pytest.raises(AirflowFailException, match=re.escape(message)):
            check_contract(spec, "s3://b/m.tar.gz", ev, schema, model)
