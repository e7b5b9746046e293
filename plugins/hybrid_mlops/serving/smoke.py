"""The smoke test a new model version must pass before it takes traffic (pure functions, no I/O).

Rows sampled from the version's own validation data go out as an Open Inference Protocol (v2)
request, shaped from the artifact's ``input_schema.json`` for the runtime that serves them:

``columns`` (the project's predictor)
    one input per feature, shape [N]: numeric features FP32, categorical features BYTES (strings);
``tensors`` (Triton, which runs the ONNX graph as is)
    ``numeric`` [N, n] FP32 and ``categorical`` [N, m] INT64 category codes (-1 = unknown), each
    only when the model has such features.

The answer must carry the task's output for every row: ``probability`` in [0, 1] (binary),
``probabilities`` [N, K] summing to 1 (multiclass), a finite ``prediction`` (regression).

.. seealso::
    Open Inference Protocol, REST: https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol
"""

from __future__ import annotations

import math

OUTPUTS = {"binary": "probability", "multiclass": "probabilities", "regression": "prediction"}
STYLES = ("columns", "tensors")


def style_for(runtime: str) -> str:
    """The request style of a ``serving.runtime``."""
    return "tensors" if runtime == "triton" else "columns"


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _text(value) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def v2_request(sample: dict, style: str = "columns") -> dict:
    """A v2 ``InferRequest`` body for a sample ``{"schema": input_schema.json, "rows": {column: [...]}}``."""
    if style not in STYLES:
        raise ValueError(f"style={style!r} must be one of {STYLES}")
    schema, rows = sample["schema"], sample["rows"]
    numeric, vocab = list(schema.get("numeric") or []), dict(schema.get("categorical") or {})
    missing = [f for f in (*numeric, *vocab) if f not in rows]
    if missing:
        raise ValueError(f"smoke sample lacks feature column(s) {missing}")
    n = len(rows[(numeric or list(vocab))[0]])
    if style == "columns":
        inputs = [{"name": f, "shape": [n], "datatype": "FP32", "data": [_number(x) for x in rows[f]]} for f in numeric]
        inputs += [{"name": f, "shape": [n], "datatype": "BYTES", "data": [_text(x) for x in rows[f]]} for f in vocab]
        return {"id": "smoke-test", "inputs": inputs}
    inputs = []
    if numeric:
        inputs.append({"name": "numeric", "shape": [n, len(numeric)], "datatype": "FP32",
                       "data": [_number(rows[f][i]) for i in range(n) for f in numeric]})
    if vocab:
        codes = {f: {v: j for j, v in enumerate(values)} for f, values in vocab.items()}
        inputs.append({"name": "categorical", "shape": [n, len(vocab)], "datatype": "INT64",
                       "data": [codes[f].get(_text(rows[f][i]), -1) for i in range(n) for f in vocab]})
    return {"id": "smoke-test", "inputs": inputs}


def sample_size(sample: dict) -> int:
    schema, rows = sample["schema"], sample["rows"]
    first = (list(schema.get("numeric") or []) or list(schema.get("categorical") or {}))[0]
    return len(rows[first])


def response_problem(response: dict, sample: dict) -> str | None:
    """Why a v2 ``InferResponse`` fails the smoke test, or ``None`` when it passes."""
    schema, n = sample["schema"], sample_size(sample)
    task = schema.get("task", "binary")
    name = OUTPUTS[task]
    outputs = {o.get("name"): o for o in response.get("outputs") or [] if isinstance(o, dict)}
    if name not in outputs:
        return f"response has no {name!r} output (outputs: {sorted(map(str, outputs))})"
    data = outputs[name].get("data") or []
    if data and isinstance(data[0], list):
        data = [x for row in data for x in row]
    width = len(schema.get("classes") or []) if task == "multiclass" else 1
    if len(data) != n * width:
        return f"{name!r} has {len(data)} values for {n} rows" + (f" x {width} classes" if width > 1 else "")
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in data):
        return f"{name!r} has values that are not finite numbers: {[x for x in data if not isinstance(x, (int, float)) or not math.isfinite(x)][:3]}"
    if task == "binary":
        bad = [p for p in data if not 0.0 <= p <= 1.0]
        if bad:
            return f"{name!r} values outside [0, 1]: {bad[:3]}"
    if task == "multiclass":
        sums = [sum(data[i * width:(i + 1) * width]) for i in range(n)]
        bad = [round(s, 4) for s in sums if abs(s - 1.0) > 1e-3]
        if bad:
            return f"{name!r} rows do not sum to 1: {bad[:3]}"
    return None
