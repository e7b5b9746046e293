"""SHAP feature attributions of a model artifact, in SageMaker Clarify's ``analysis.json`` shape.

Runs where the model runs: the serving image / ``.venv-serve`` (onnxruntime and the predictor package),
as a SageMaker Processing job on ``aws`` and as a subprocess on ``local``; Airflow never imports it.

    python attributions.py --model model.tar.gz --data rows.json --output out/ [--predict]

Inputs: ``model.tar.gz`` (or its extracted folder) with ``model.onnx`` and ``input_schema.json``;
``rows.json`` = ``{"columns": {feature: [values...]}, "baseline_row": {feature: value} | null,
"samples", "num_samples", "exact_max_features", "seed"}``.

Outputs in ``--output``:
* ``analysis.json``: ``{"version": "1.0", "explanations": {"kernel_shap": {<label>: {"global_shap_values":
  {feature: mean |SHAP|}, "expected_value": f(baseline row)}}}}``, one label per model output
  (``probability`` / ``prediction``, or each class of a multiclass model);
* ``baseline_row.json``: the reference row the values are relative to (the given one, else the medians of
  the numeric features and the modes of the categorical ones over the rows), so later windows reuse it;
* ``predictions.json`` with ``--predict``: ``{"outputs": [...]}``, the model's output for every row.

Method: each explained row ``x`` (``samples`` of the rows, drawn with ``seed``) is explained against the
one baseline row ``b`` with the value function ``v(S) = f(x_S, b_rest)`` (baseline Shapley, what Kernel
SHAP estimates with a single background row, and what Clarify computes with a one-row baseline). Up to
``exact_max_features`` features every coalition is evaluated (exact Shapley values); above, Kernel SHAP:
``num_samples`` coalitions drawn from the Shapley kernel, solved by weighted least squares with the
efficiency constraint ``sum(phi) = f(x) - f(b)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np


def load_model(path: Path):
    """``(InputSchema, OnnxScorer)`` from ``model.tar.gz`` or a folder holding its members."""
    from predictor.runtime import OnnxScorer  # onnxruntime only (predictor.schema would import kserve)

    if path.is_dir() and not any(path.rglob("model.onnx")):  # a processing input: the folder of model.tar.gz
        path = next(path.rglob("*.tar.gz"), path)
    if path.is_file():
        dest = Path(tempfile.mkdtemp(prefix="attributions-"))
        with tarfile.open(path) as tar:
            tar.extractall(dest, filter="data")
        path = dest
    found = {p.name: p for p in path.rglob("*") if p.name in ("model.onnx", "input_schema.json")}
    if len(found) < 2:
        raise SystemExit(f"{path}: model.onnx and input_schema.json are required (found {sorted(found)})")
    schema = Schema(json.loads(found["input_schema.json"].read_text()))
    scorer = OnnxScorer(found["model.onnx"], len(schema.numeric), len(schema.categorical), schema.output,
                        device="cpu")
    return schema, scorer


class Schema:
    """The parts of ``input_schema.json`` attributions need (the predictor's InputSchema, without kserve)."""

    OUTPUTS = {"binary": "probability", "multiclass": "probabilities", "regression": "prediction"}

    def __init__(self, doc: dict):
        self.task = str(doc.get("task", "binary"))
        self.numeric = tuple(doc.get("numeric") or ())
        self.categorical = tuple((doc.get("categorical") or {}))
        self.lookup = {n: {v: i for i, v in enumerate(vs)} for n, vs in (doc.get("categorical") or {}).items()}
        self.output = str(doc.get("output", self.OUTPUTS.get(self.task, "")))
        self.classes = tuple(str(c) for c in doc.get("classes") or ())


class Model:
    """The model as a function of a [N, F] object matrix of feature values (numeric then categorical)."""

    def __init__(self, schema, scorer, batch: int = 65536):
        self.schema, self.scorer, self.batch = schema, scorer, batch
        self.features = list(schema.numeric) + list(schema.categorical)
        self.n_numeric = len(schema.numeric)

    def encode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        numeric = np.array(rows[:, : self.n_numeric], dtype=np.float64).astype(np.float32)
        cats = np.full((rows.shape[0], len(self.schema.categorical)), -1, dtype=np.int64)
        for j, name in enumerate(self.schema.categorical):
            lut = self.schema.lookup[name]
            cats[:, j] = [lut.get(v, -1) if isinstance(v, str) else -1 for v in rows[:, self.n_numeric + j]]
        return numeric, cats

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Outputs [N, K] (K = 1 for probability / prediction)."""
        out = []
        for start in range(0, rows.shape[0], self.batch):
            numeric, cats = self.encode(rows[start : start + self.batch])
            y = np.asarray(self.scorer(numeric, cats), dtype=np.float64)
            out.append(y.reshape(len(numeric), -1))
        return np.concatenate(out) if out else np.empty((0, 1))

    def labels(self) -> list[str]:
        return list(self.schema.classes) if self.schema.task == "multiclass" else [self.schema.output]


def rows_matrix(columns: dict, features: list[str], n_numeric: int) -> np.ndarray:
    missing = [f for f in features if f not in columns]
    if missing:
        raise SystemExit(f"rows.json: columns {missing} are missing (the model takes {features})")
    n = len(columns[features[0]])
    out = np.empty((n, len(features)), dtype=object)
    for j, f in enumerate(features):
        values = columns[f]
        out[:, j] = [np.nan if v is None else float(v) for v in values] if j < n_numeric else \
            [None if v is None else str(v) for v in values]
    return out


def default_baseline_row(rows: np.ndarray, features: list[str], n_numeric: int) -> dict:
    """Medians of the numeric features, modes of the categorical ones."""
    out = {}
    for j, f in enumerate(features):
        col = rows[:, j]
        if j < n_numeric:
            v = np.asarray(col, dtype=np.float64)
            v = v[~np.isnan(v)]
            out[f] = float(np.median(v)) if v.size else 0.0
        else:
            present = [c for c in col if c is not None]
            values, counts = np.unique(np.asarray(present, dtype=str), return_counts=True) if present else ([None], [1])
            out[f] = None if values[0] is None else str(values[int(np.argmax(counts))])
    return out


def _shapley_weights(m: int) -> np.ndarray:
    """w[s] = s! (m - s - 1)! / m!: the weight of a coalition of size s in feature i's marginal sum."""
    return np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)])


def exact_shap(model: Model, x: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact baseline Shapley values [N, F, K] and f(b) [K], every coalition evaluated."""
    n, m = x.shape
    masks = ((np.arange(2**m)[:, None] >> np.arange(m)[None, :]) & 1).astype(bool)  # [2^m, m]
    values = []
    for i in range(n):
        rows = np.where(masks, x[i][None, :], base[None, :])
        values.append(model(rows))
    v = np.stack(values)  # [N, 2^m, K]
    size = masks.sum(axis=1)
    w = _shapley_weights(m)
    phi = np.zeros((n, m, v.shape[2]))
    for j in range(m):
        without = np.flatnonzero(~masks[:, j])
        with_j = without | (1 << j)
        phi[:, j, :] = np.einsum("s,nsk->nk", w[size[without]], v[:, with_j, :] - v[:, without, :])
    return phi, v[0, 0, :]


def kernel_shap(model: Model, x: np.ndarray, base: np.ndarray, num_samples: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Kernel SHAP [N, F, K] with ``num_samples`` coalitions from the Shapley kernel (sizes 1..m-1)."""
    n, m = x.shape
    sizes = np.arange(1, m)
    p = (m - 1) / (sizes * (m - sizes))
    size = rng.choice(sizes, num_samples, p=p / p.sum())
    z = np.zeros((num_samples, m), bool)
    for r, s in enumerate(size):
        z[r, rng.choice(m, s, replace=False)] = True
    f_base = model(base[None, :])[0]
    phi = np.zeros((n, m, f_base.size))
    for i in range(n):
        f_x = model(x[i][None, :])[0]
        v = model(np.where(z, x[i][None, :], base[None, :])) - f_base  # [S, K]
        total = f_x - f_base
        # eliminate the last feature with the constraint: phi_m = total - sum(phi_1..m-1); equal weights per
        # sample (the kernel is already the sampling distribution)
        a = z[:, :-1].astype(np.float64) - z[:, -1:].astype(np.float64)
        b = v - z[:, -1:] * total[None, :]
        coef, *_ = np.linalg.lstsq(a, b, rcond=None)
        phi[i, :-1, :] = coef
        phi[i, -1, :] = total - coef.sum(axis=0)
    return phi, f_base


def explain(model: Model, rows: np.ndarray, base_row: dict, *, samples: int, num_samples: int,
            exact_max_features: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    feats = model.features
    base = np.array([[base_row.get(f) if j >= model.n_numeric else float(base_row.get(f) or 0.0)
                      for j, f in enumerate(feats)]], dtype=object)[0]
    pick = np.sort(rng.choice(rows.shape[0], min(samples, rows.shape[0]), replace=False)) if rows.shape[0] else []
    x = rows[pick]
    if len(feats) <= exact_max_features:
        phi, expected = exact_shap(model, x, base)
        method = "exact"
    else:
        phi, expected = kernel_shap(model, x, base, num_samples, rng)
        method = "kernel"
    labels = model.labels()
    shap = {}
    for k, label in enumerate(labels):
        global_values = np.abs(phi[:, :, k]).mean(axis=0) if len(x) else np.zeros(len(feats))
        shap[label] = {"global_shap_values": {f: float(g) for f, g in zip(feats, global_values)},
                       "expected_value": float(expected[k])}
    return {"version": "1.0", "explanations": {"kernel_shap": shap},
            "method": {"name": method, "explained_rows": int(len(x)), "num_samples": num_samples if method == "kernel"
                       else 2 ** len(feats), "seed": seed}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--predict", action="store_true", help="also write the model's output for every row")
    args = ap.parse_args(argv)
    data_path = args.data if args.data.is_file() else next(args.data.rglob("*.json"))
    doc = json.loads(data_path.read_text())
    schema, scorer = load_model(args.model)
    model = Model(schema, scorer)
    rows = rows_matrix(doc["columns"], model.features, model.n_numeric)
    base_row = doc.get("baseline_row") or default_baseline_row(rows, model.features, model.n_numeric)
    args.output.mkdir(parents=True, exist_ok=True)
    result = explain(model, rows, base_row, samples=int(doc.get("samples", 200)),
                     num_samples=int(doc.get("num_samples", 2048)),
                     exact_max_features=int(doc.get("exact_max_features", 12)), seed=int(doc.get("seed", 0)))
    (args.output / "analysis.json").write_text(json.dumps(result, indent=1))
    (args.output / "baseline_row.json").write_text(json.dumps(base_row))
    if args.predict:
        y = model(rows)
        outputs = y.tolist() if schema.task == "multiclass" else y[:, 0].tolist()
        (args.output / "predictions.json").write_text(json.dumps({"outputs": outputs}))
    print(f"attributions: {result['method']} over {rows.shape[0]} rows -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
