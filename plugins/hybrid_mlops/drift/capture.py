"""Capture records in the predictor's format, from columns (for tests, demos and backfills).

One JSON line per request: ``{"id", "time", "model", "version", "protocol", "inputs": {feature:
[values...], <id column>: [...]}, "outputs": {<output>: [...]}}``; missing numbers are ``null``. Files live at ``capture/<model>/<yyyy>/<mm>/<dd>/<hh>/<epoch_ms>-<uuid>.jsonl``.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone

import numpy as np

from hybrid_mlops.layout import capture_prefix


def _clean(values: np.ndarray) -> list:
    out = values.tolist()
    return [None if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in out]


def capture_lines(
    columns: dict[str, np.ndarray],
    features: list[str],
    *,
    model: str,
    version: str = "1",
    hour: datetime,
    batch: int = 50,
    protocol: str = "v2",
    id_column: str | None = None,
    outputs: np.ndarray | None = None,
    output: str = "probability",
) -> list[str]:
    """JSON lines of requests of ``batch`` rows each (features absent from ``columns`` are left out).

    :param outputs: the model's output per row ([N], or [N, K] class probabilities); 0.5 when absent.
    """
    n = len(next(iter(columns.values())))
    scores = np.full(n, 0.5) if outputs is None else np.asarray(outputs, dtype=np.float64)
    lines = []
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        inputs = {f: _clean(columns[f][sl]) for f in features if f in columns}
        if id_column and id_column in columns:
            inputs[id_column] = _clean(columns[id_column][sl])
        t = hour.replace(tzinfo=timezone.utc) if hour.tzinfo is None else hour
        lines.append(json.dumps({
            "id": str(uuid.uuid4()), "time": t.replace(minute=start % 60).isoformat(), "model": model,
            "version": version, "protocol": protocol, "inputs": inputs,
            "outputs": {output: scores[sl].tolist() if scores.ndim == 2 else _clean(scores[sl])},
        }))
    return lines


def capture_key(model: str, hour: datetime) -> str:
    epoch_ms = int(hour.replace(tzinfo=hour.tzinfo or timezone.utc).timestamp() * 1000)
    return f"{capture_prefix(model, hour)}{epoch_ms}-{uuid.uuid4()}.jsonl"


def _sagemaker_body(part: dict) -> str:
    import base64

    data = part.get("data") or ""
    return base64.b64decode(data).decode("utf-8") if part.get("encoding") == "BASE64" else data


def from_sagemaker_capture(line: str, *, model: str, version: str, numeric: list[str], categorical: list[str],
                           output: str, id_column: str | None = None) -> str | None:
    """One SageMaker DataCapture record as the monitor's capture line (``None`` when it has no rows).

    SageMaker writes ``{"captureData": {"endpointInput": {"observedContentType", "mode", "data",
    "encoding"}, "endpointOutput": {...}}, "eventMetadata": {"eventId", "inferenceTime"}, "eventVersion"}``
    (``data`` is the body: text for ``encoding`` JSON or CSV, base64 otherwise) under
    ``capture-sagemaker/<model>/<endpoint>/<variant>/<yyyy>/<mm>/<dd>/<hh>/``. The bodies are the
    predictor's ``/invocations`` contract (v2 JSON, JSON lines, CSV in numeric-then-categorical order),
    so ``inputs`` and ``outputs`` map column by column; the line goes under ``capture/<model>/`` of the
    same hour.
    """
    try:
        record = json.loads(line)
        capture = record["captureData"]
        request, response = capture["endpointInput"], capture["endpointOutput"]
        kind = (request.get("observedContentType") or "application/json").split(";")[0].strip()
        body, answer = _sagemaker_body(request), _sagemaker_body(response)
        features = [*numeric, *categorical]
        if kind == "application/json":
            doc, out = json.loads(body), json.loads(answer)
            inputs = {i["name"]: i["data"] for i in doc["inputs"]} if "inputs" in doc else \
                {f: [row.get(f) for row in doc["instances"]] for f in [*features, id_column] if f}
            outputs = {o["name"]: o["data"] for o in out["outputs"] if o["name"] == output} if "outputs" in out \
                else {output: out["predictions"]}
            protocol = "v2" if "inputs" in doc else "v1"
        elif kind == "text/csv":
            import csv
            import io

            rows = [r for r in csv.reader(io.StringIO(body)) if r]
            inputs = {f: [(float(r[j]) if r[j] != "" else None) if j < len(numeric) else (r[j] or None) for r in rows]
                      for j, f in enumerate(features)}
            values = [[float(v) for v in r] for r in csv.reader(io.StringIO(answer)) if r]
            outputs = {output: [v[0] for v in values] if all(len(v) == 1 for v in values) else values}
            protocol = "csv"
        else:  # JSON lines
            rows = [json.loads(x) for x in body.splitlines() if x.strip()]
            inputs = {f: [r.get(f) for r in rows] for f in [*features, id_column] if f and any(f in r for r in rows)}
            outputs = {output: [json.loads(x)[output] for x in answer.splitlines() if x.strip()]}
            protocol = "jsonlines"
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if not any(inputs.values()):
        return None
    meta = record.get("eventMetadata") or {}
    return json.dumps({"id": meta.get("eventId") or str(uuid.uuid4()), "time": meta.get("inferenceTime"),
                       "model": model, "version": str(version), "protocol": protocol, "inputs": inputs,
                       "outputs": outputs})
