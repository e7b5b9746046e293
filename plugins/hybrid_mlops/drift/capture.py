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
