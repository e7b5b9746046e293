"""What the bias and feature-attribution monitors share: file names, the attributions job request, rows.

The model runs only in ``include/monitoring/attributions.py`` (serving image / ``.venv-serve``), started as a
SageMaker Processing job (``CreateProcessingJob``; on ``local`` the same request runs as a subprocess,
see ``local/processing.py``). Its input is ``rows.json`` (columns of the rows, the reference row, the
sample sizes), its output ``analysis.json`` (Clarify's explainability shape), ``baseline_row.json`` and,
at registration, ``predictions.json`` (the model's output on the validation rows, for the post-training
bias baseline).

Baselines live beside ``model.tar.gz`` with the data-quality ones: ``analysis_bias.json``,
``analysis_explainability.json`` and ``explainability_baseline_row.json``.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from hybrid_mlops.settings import INCLUDE_DIR

ATTRIBUTIONS_SCRIPT = INCLUDE_DIR / "monitoring" / "attributions.py"  # beside the DAGs on MWAA, like the specs
BIAS_BASELINE = "analysis_bias.json"
EXPLAINABILITY_BASELINE = "analysis_explainability.json"
BASELINE_ROW = "explainability_baseline_row.json"
CLARIFY_BASELINES = (BIAS_BASELINE, EXPLAINABILITY_BASELINE, BASELINE_ROW)
#: Rows of the validation data sent to the job at registration (their predictions feed the bias baseline).
MAX_BASELINE_ROWS = 20_000
PROCESSING_ROOT = "/opt/ml/processing"


def script_digest() -> str:
    return hashlib.sha256(ATTRIBUTIONS_SCRIPT.read_bytes()).hexdigest()[:16]


def code_key(digest: str | None = None) -> str:
    """Where the script is uploaded (content-addressed: a changed script gets a new key)."""
    return f"code/monitoring/attributions-{digest or script_digest()}/attributions.py"


def job_name(model: str, kind: str, stamp: str) -> str:
    """``<model>-<kind>-<stamp>``, at most 63 characters of ``[a-zA-Z0-9-]`` (CreateProcessingJob's pattern)."""
    stamp = re.sub(r"[^a-zA-Z0-9-]+", "-", stamp).strip("-")
    digest = hashlib.sha256(f"{model}/{kind}/{stamp}".encode()).hexdigest()[:8]
    head = f"{model}-{kind}"[: 63 - len(digest) - 2 - min(len(stamp), 20)]
    return f"{head}-{stamp[-20:]}-{digest}".strip("-")[:63]


def processing_config(*, name: str, model_data_url: str, code_uri: str, rows_uri: str, output_uri: str,
                      image_uri: str, instance_type: str, role_arn: str, predict: bool = False,
                      tags: dict[str, str] | None = None, max_runtime_seconds: int = 3600) -> dict:
    """The ``CreateProcessingJob`` request of one attributions run (the serving image runs the script)."""
    root = PROCESSING_ROOT

    def s3_input(input_name: str, uri: str, local: str) -> dict:
        return {"InputName": input_name, "S3Input": {"S3Uri": uri, "LocalPath": f"{root}/input/{local}",
                                                     "S3DataType": "S3Prefix", "S3InputMode": "File"}}

    return {
        "ProcessingJobName": name,
        "ProcessingInputs": [s3_input("code", code_uri, "code"), s3_input("model", model_data_url, "model"),
                             s3_input("rows", rows_uri, "rows")],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "analysis", "S3Output": {
            "S3Uri": output_uri, "LocalPath": f"{root}/output", "S3UploadMode": "EndOfJob"}}]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type,
                                                  "VolumeSizeInGB": 30}},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime_seconds},
        "AppSpecification": {
            "ImageUri": image_uri,
            "ContainerEntrypoint": ["python3", f"{root}/input/code/attributions.py"],
            "ContainerArguments": ["--model", f"{root}/input/model", "--data", f"{root}/input/rows",
                                   "--output", f"{root}/output", *(["--predict"] if predict else [])],
        },
        "Environment": {"PYTHONPATH": "/app", "OMP_NUM_THREADS": "1"},  # the predictor package of the image
        "RoleArn": role_arn,
        "Tags": [{"Key": k, "Value": v} for k, v in sorted((tags or {}).items())],
    }


def _json_value(value):
    if value is None:
        return None
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    return value if isinstance(value, (int, str, bool)) else str(value)


def rows_document(columns: dict[str, np.ndarray], features: list[str], fa, *, baseline_row: dict | None,
                  seed: int) -> dict:
    """``rows.json`` for the job: the rows' feature columns and how to explain them (``fa``: the spec's
    ``drift.feature_attribution``, or None when only predictions are wanted)."""
    return {
        "columns": {f: [_json_value(v) for v in np.asarray(columns[f]).tolist()] for f in features if f in columns},
        "baseline_row": baseline_row or (dict(fa.baseline_row) if fa and fa.baseline_row else None),
        "samples": fa.samples if fa else 10, "num_samples": fa.num_samples if fa else 64,
        "exact_max_features": fa.exact_max_features if fa else 12, "seed": int(seed),
    }


def predicted_positive(task: str, outputs: np.ndarray, bias, *, threshold: float = 0.5,
                       classes: list[str] | None = None) -> np.ndarray:
    """The predicted outcome as the bias spec's positive outcome (see drift/bias.py)."""
    from hybrid_mlops.drift.bias import positive

    out = np.asarray(outputs, dtype=np.float64)
    if task == "binary":
        label = np.where(np.isnan(out), np.nan, (out >= threshold).astype(np.float64))
        return positive(label, bias.label_values or [1], None)
    if task == "multiclass":
        names = np.array(classes or [], dtype=object)
        ok = ~np.isnan(out).any(axis=1) if out.ndim == 2 and out.size else np.zeros(len(out), bool)
        label = np.full(len(out), None, dtype=object)
        label[ok] = names[np.argmax(out[ok], axis=1)]
        return positive(label, bias.label_values, None)
    return positive(out, bias.label_values, bias.label_threshold)
