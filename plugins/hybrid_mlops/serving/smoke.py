"""The smoke test a new model version must pass before it takes traffic (pure functions, no I/O).

A few synthetic transactions go out as an Open Inference Protocol (v2) request, shaped for the
runtime that serves them:

``columns`` (the project's predictor)
    one input per feature, shape [N]: numeric features FP32, categorical features BYTES (strings);
``tensors`` (Triton, which runs the ONNX graph as is)
    ``numeric`` [N, 7] FP32 and ``categorical`` [N, 3] INT64 category codes (-1 = unknown).

The answer must carry one fraud probability in [0, 1] per row, as output ``probability``.

.. seealso::
    Open Inference Protocol, REST: https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol
"""

from __future__ import annotations

import math

OUTPUT = "probability"


STYLES = ("columns", "tensors")


def style_for(runtime: str) -> str:
    """The request style of a ``serving.runtime``."""
    return "tensors" if runtime == "triton" else "columns"


def v2_request(rows: int = 8, seed: int = 11, style: str = "columns") -> dict:
    """A v2 ``InferRequest`` body with ``rows`` synthetic transactions."""
    from hybrid_mlops.data.generator import CATEGORICAL_FEATURES, NUMERIC_FEATURES, generate

    if style not in STYLES:
        raise ValueError(f"style={style!r} must be one of {STYLES}")
    cols = generate(rows, seed=seed)
    if style == "columns":
        inputs = [
            {"name": f, "shape": [rows], "datatype": "FP32", "data": [float(x) for x in cols[f]]}
            for f in NUMERIC_FEATURES
        ] + [
            {"name": f, "shape": [rows], "datatype": "BYTES", "data": [str(x) for x in cols[f]]}
            for f in CATEGORICAL_FEATURES
        ]
        return {"id": "smoke-test", "inputs": inputs}
    numeric = [float(cols[f][i]) for i in range(rows) for f in NUMERIC_FEATURES]
    categorical = [
        list(values).index(cols[f][i]) if cols[f][i] in values else -1
        for i in range(rows)
        for f, values in CATEGORICAL_FEATURES.items()
    ]
    return {
        "id": "smoke-test",
        "inputs": [
            {"name": "numeric", "shape": [rows, len(NUMERIC_FEATURES)], "datatype": "FP32",
             "data": [None if math.isnan(x) else x for x in numeric]},
            {"name": "categorical", "shape": [rows, len(CATEGORICAL_FEATURES)], "datatype": "INT64",
             "data": categorical},
        ],
    }


def response_problem(response: dict, rows: int) -> str | None:
    """Why a v2 ``InferResponse`` fails the smoke test, or ``None`` when it passes."""
    outputs = {o.get("name"): o for o in response.get("outputs") or [] if isinstance(o, dict)}
    if OUTPUT not in outputs:
        return f"response has no {OUTPUT!r} output (outputs: {sorted(map(str, outputs))})"
    data = outputs[OUTPUT].get("data") or []
    if len(data) != rows:
        return f"{OUTPUT!r} has {len(data)} values for {rows} rows"
    bad = [p for p in data if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0]
    if bad:
        return f"{OUTPUT!r} values outside [0, 1]: {bad[:3]}"
    return None
