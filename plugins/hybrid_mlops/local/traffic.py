"""Traffic for a locally served model: rows of its own schema, sent as v2 requests (demo, tests).

Works for any spec: features by type from ``schema``, the id column passed along so ground truth can
be joined later, and a drift knob that shifts a numeric feature by a number of its standard
deviations (what the monitor must then flag).
"""

from __future__ import annotations

import json
import math
import urllib.request

from hybrid_mlops.serving.smoke import OUTPUTS
from hybrid_mlops.specs.model import ModelSpec


def shifted(columns: dict[str, list], feature: str, sigmas: float) -> dict[str, list]:
    """A copy of the rows with ``feature`` moved by ``sigmas`` of its own standard deviation."""
    values = [float(v) for v in columns[feature] if v not in (None, "")]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0
    return {**columns, feature: [None if v in (None, "") else float(v) + sigmas * sd for v in columns[feature]]}


def v2_body(spec: ModelSpec, columns: dict[str, list], lo: int, hi: int) -> dict:
    schema = spec.data_schema
    n = hi - lo

    def num(v):
        return None if v in (None, "") else float(v)

    inputs = [{"name": f, "shape": [n], "datatype": "FP32", "data": [num(v) for v in columns[f][lo:hi]]}
              for f in schema.numeric]
    inputs += [{"name": f, "shape": [n], "datatype": "BYTES",
                "data": [None if v is None else str(v) for v in columns[f][lo:hi]]} for f in schema.categorical]
    if schema.id in columns:
        inputs.append({"name": schema.id, "shape": [n], "datatype": "BYTES",
                       "data": [str(v) for v in columns[schema.id][lo:hi]]})
    return {"inputs": inputs}


def send_rows(url: str, spec: ModelSpec, columns: dict[str, list], *, batch: int = 50) -> list:
    """POST the rows in batches to ``<url>/v2/models/<model>/infer``; the model's outputs, row by row."""
    total = len(next(iter(columns.values())))
    outputs = []
    for lo in range(0, total, batch):
        hi = min(lo + batch, total)
        req = urllib.request.Request(f"{url}/v2/models/{spec.name}/infer",
                                     json.dumps(v2_body(spec, columns, lo, hi)).encode(),
                                     {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
        first = next(o for o in answer["outputs"] if o["name"] == OUTPUTS[spec.task])
        data = first["data"]
        if data and isinstance(data[0], list):  # a server may nest [N, K] rows
            data = [x for row in data for x in row]
        width = first["shape"][1] if len(first["shape"]) == 2 else 1
        outputs += [data[i * width:(i + 1) * width] for i in range(hi - lo)] if width > 1 else data
    return outputs


def captured_rows(s3, bucket: str, prefix: str) -> int:
    """Rows of the capture records under a prefix (what the predictor has flushed so far)."""
    rows = 0
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
        for line in body.splitlines():
            if line.strip():
                record = json.loads(line)
                rows += len(next(iter(record["outputs"].values())))
    return rows
