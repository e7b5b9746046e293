"""SageMaker's container contract: ``GET /ping`` and ``POST /invocations`` on the same server.

A SageMaker real-time endpoint and a Batch Transform job run the image as ``<image> serve``
(:func:`serve_argv` turns that into the predictor's options from the Model's environment) and call:

``application/json``
    a v2 inference request (``{"inputs": [...]}``, what the deploy's smoke test sends through
    ``InvokeEndpoint``) answered as on ``/v2/models/<name>/infer``; or a v1 ``{"instances": [...]}``.
``application/jsonlines``
    one JSON object of features per line (the schema's id, when present, is ignored), answered with
    one line ``{"<output>": value}`` per record (Batch Transform, ``SplitType: Line``,
    ``BatchStrategy: MultiRecord``: many records per call, one output line each, in order).
``text/csv``
    one record per line, no header: the numeric features, then the categorical ones, in
    ``input_schema.json``'s order (Batch Transform's ``InputFilter: $[1:]`` drops the id column
    first); answered with one line per record (the output; a multiclass model's probabilities
    comma-separated).

.. seealso::
    https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html
    https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-batch-code.html
"""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np
import orjson
from kserve.errors import InvalidInput

JSON, JSONLINES, CSV = "application/json", "application/jsonlines", "text/csv"
JSONLINES_ALIASES = {JSONLINES, "application/x-jsonlines", "application/jsonl"}


def serve_argv(environ: dict | None = None) -> list[str]:
    """The predictor's options for ``<image> serve``, from the SageMaker Model's environment.

    ``HYBRID_MLOPS_MODEL_NAME`` (required), ``HYBRID_MLOPS_MODEL_VERSION``, ``HYBRID_MLOPS_ID_COLUMN``,
    ``HYBRID_MLOPS_CAPTURE_BUCKET`` (the project's request capture, read by the drift monitor);
    SageMaker mounts the model at ``/opt/ml/model`` and sends traffic to port 8080
    (``SAGEMAKER_BIND_TO_PORT`` when it sets one).
    """
    env = os.environ if environ is None else environ
    name = env.get("HYBRID_MLOPS_MODEL_NAME")
    if not name:
        raise SystemExit("serve: HYBRID_MLOPS_MODEL_NAME is not set in the SageMaker Model's environment")
    argv = ["--model-name", name, "--model-uri", env.get("SM_MODEL_DIR", "/opt/ml/model"),
            "--model-version", env.get("HYBRID_MLOPS_MODEL_VERSION", "1"),
            "--http-port", env.get("SAGEMAKER_BIND_TO_PORT", "8080"),
            "--grpc-port", env.get("HYBRID_MLOPS_GRPC_PORT", "8081")]
    for option, variable in (("--id-column", "HYBRID_MLOPS_ID_COLUMN"), ("--capture-bucket", "HYBRID_MLOPS_CAPTURE_BUCKET")):
        if env.get(variable):
            argv += [option, env[variable]]
    return argv


def _content_type(headers: dict) -> str:
    return (headers.get("content-type") or JSON).split(";")[0].strip().lower()


def _csv_value(text: str, numeric: bool, where: str):
    text = text.strip()
    if text == "":
        return None
    if not numeric:
        return text
    try:
        return float(text)
    except ValueError:
        raise InvalidInput(f"{where}: {text!r} is not a number") from None


def _records_from_csv(body: bytes, schema) -> list[dict]:
    features = [*schema.numeric, *schema.categorical]
    records = []
    for i, row in enumerate(csv.reader(io.StringIO(body.decode("utf-8")))):
        if not row:
            continue
        if len(row) != len(features):
            raise InvalidInput(f"line {i + 1}: {len(row)} fields, expected {len(features)} "
                               f"({', '.join(features)}; no header, no id)")
        records.append({f: _csv_value(v, j < len(schema.numeric), f"line {i + 1}, {f}")
                        for j, (f, v) in enumerate(zip(features, row))})
    return records


def _records_from_jsonlines(body: bytes, id_column: str | None) -> list[dict]:
    lines = [line for line in body.splitlines() if line.strip()]
    try:  # one parse for the whole payload; line by line only to name a bad line
        records = orjson.loads(b"[" + b",".join(lines) + b"]")
    except orjson.JSONDecodeError:
        records = None
    if records is not None and len(records) == len(lines) and all(isinstance(r, dict) for r in records):
        if id_column:
            for record in records:
                record.pop(id_column, None)
        return records
    records = []
    for i, line in enumerate(body.splitlines()):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"line {i + 1}: not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise InvalidInput(f"line {i + 1}: expected an object of features, got {type(record).__name__}")
        if id_column:
            record.pop(id_column, None)
        records.append(record)
    return records


def _number(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


async def invocations(model, body: bytes, headers: dict) -> tuple[int, bytes, list]:
    """Answer one ``POST /invocations``: ``(status, body, headers)``; bad input raises ``InvalidInput``."""
    from .server import encode_v2, parse_v2

    ctype = _content_type(headers)
    if ctype == JSON:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"body: not valid JSON ({exc})") from None
        if isinstance(doc, dict) and "inputs" in doc:
            request = parse_v2(body, headers, model.name)
            response, _ = await model(request, headers=headers)
            payload, json_len = encode_v2(response, request)
            if json_len is not None:
                raise InvalidInput("binary tensor outputs are not available on /invocations; ask for JSON")
            return 200, payload, [(b"content-type", JSON.encode())]
        response, _ = await model(doc, headers=headers)
        return 200, orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY), [(b"content-type", JSON.encode())]
    schema = model.schema
    if ctype in JSONLINES_ALIASES:
        records = _records_from_jsonlines(body, schema.id_column)
    elif ctype == CSV:
        records = _records_from_csv(body, schema)
    else:
        return 415, orjson.dumps({"error": f"content type {ctype!r}: send {JSON}, {JSONLINES} or {CSV}"}), \
            [(b"content-type", JSON.encode())]
    if not records:
        raise InvalidInput("body: no records")
    response, _ = await model({"instances": records}, headers=headers)
    scores = np.asarray(response["predictions"])
    name = schema.output
    if ctype == CSV:
        lines = [",".join(repr(float(v)) for v in row) if scores.ndim == 2 else repr(float(row)) for row in scores]
        return 200, ("\n".join(lines) + "\n").encode(), [(b"content-type", CSV.encode())]
    lines = [orjson.dumps({name: [float(v) for v in row] if scores.ndim == 2 else _number(row)}) for row in scores]
    return 200, b"\n".join(lines) + b"\n", [(b"content-type", JSONLINES.encode())]
