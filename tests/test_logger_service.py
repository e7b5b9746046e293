"""The capture logger service as a real process (``.venv-serve``) over HTTP, writing to the moto server.

A small generic input schema (two numeric features, one categorical) stands in for a model: the
service only needs its input order. One schema is a local file, the other is read from S3.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import boto3
from serving_helpers import ROOT, free_port, request as http

SCHEMA = {"model": "m1", "task": "binary", "numeric": ["x1", "x2"], "categorical": {"colour": ["red", "blue"]},
          "output": "probability", "threshold": 0.5}
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


def _post(url, ce_id, half, body, *, model="m1", legacy=False, ce_time=None, raw=None):
    headers = {"ce-id": ce_id, "ce-type": REQUEST if half == "request" else RESPONSE, "ce-specversion": "1.0",
               "ce-source": "http://localhost:9081/", "Content-Type": "application/json"}
    headers["ce-inferenceservice" if legacy else "ce-inferenceservicename"] = model
    if ce_time:
        headers["ce-time"] = ce_time
    status, _, reply = http("POST", url, raw if raw is not None else json.dumps(body).encode(), headers)
    return status, json.loads(reply) if reply else {}


def _records(bucket, prefix):
    s3 = boto3.client("s3")
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out += [json.loads(x) for x in s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().splitlines() if x]
    return out


def _counters(url):
    for _ in range(150):
        try:
            status, _, body = http("GET", url, timeout=1)
            if status == 200:
                return json.loads(body)
        except OSError:
            time.sleep(0.2)
    raise AssertionError("logger service did not answer")


def test_logger_service_lists_time_idempotency_and_bad_bodies(aws, tmp_path):
    bucket = os.environ["HYBRID_MLOPS_BUCKET"]
    (tmp_path / "input_schema.json").write_text(json.dumps(SCHEMA))
    boto3.client("s3").put_object(Bucket=bucket, Key="models/m2/input_schema.json",
                                  Body=json.dumps({**SCHEMA, "model": "m2", "numeric": ["b", "a"]}))
    port = free_port()
    log_path = tmp_path / "logger.log"
    proc = subprocess.Popen(
        [str(ROOT / ".venv-serve" / "bin" / "python"), "-m", "predictor.logger_service", "--capture-bucket", bucket,
         "--port", str(port), "--capture-flush-seconds", "600", "--model-name", "m1",
         "--input-schema", str(tmp_path / "input_schema.json"),
         "--input-schema", f"m2=s3://{bucket}/models/m2/input_schema.json"],
        cwd=ROOT / "include" / "serving", env={**os.environ, **aws.environ()}, stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        assert _counters(url)["joined"] == 0, log_path.read_text()
        rows = {"instances": [[1.5, 2.0, "red"], [3.0, None, "green"]]}
        # v1 rows as lists, legacy header, the request's ce-time is the record's time
        assert _post(url, "e1", "request", rows, legacy=True, ce_time="2026-05-01T10:15:30.250Z")[0] == 202
        assert _post(url, "e1", "response", {"predictions": [0.1, 0.9]}, legacy=True,
                     ce_time="2026-05-01T10:15:31Z")[0] == 202
        # redelivered halves of a written event: nothing new
        assert _post(url, "e1", "request", rows, legacy=True) == (200, {"status": "duplicate"})
        assert _post(url, "e1", "response", {"predictions": [0.1, 0.9]}, legacy=True)[0] == 200
        # a redelivered request while its response is awaited is a duplicate; a different one is a conflict
        first = {"instances": [{"x1": 1.0, "x2": 2.0, "colour": "blue"}]}
        assert _post(url, "e2", "request", first)[0] == 202
        assert _post(url, "e2", "request", first)[0] == 200
        status, reply = _post(url, "e2", "request", {"instances": [{"x1": 9.0, "x2": 9.0, "colour": "red"}]})
        assert status == 409 and "first one is kept" in reply["error"]
        assert _post(url, "e2", "response", {"predictions": [0.7]})[0] == 202
        # input order from an input_schema.json in S3
        assert _post(url, "e3", "request", {"instances": [[10, 20, "red"]]}, model="m2")[0] == 202
        assert _post(url, "e3", "response", {"predictions": [0.2]}, model="m2")[0] == 202
        # bad bodies: 4xx naming the problem, counted, never stored
        bad = [
            _post(url, "b1", "request", None, raw=b"\x00\x01 not json"),
            _post(url, "b2", "request", {"foo": 1}),
            _post(url, "b3", "request", {"instances": [[1.0, 2.0]]}),
            _post(url, "b4", "request", {"instances": [[1.0, 2.0, "red"]]}, model="no-schema"),
            _post(url, "b5", "request", first, ce_time="yesterday"),
            _post(url, "b6", "response", {"nothing": []}),
        ]
        assert [s for s, _ in bad] == [400, 422, 422, 422, 400, 422]
        assert "not JSON" in bad[0][1]["error"] and "instances[0]: 2 values, expected 3" in bad[2][1]["error"]
        assert "--input-schema" in bad[3][1]["error"] and "ce-time" in bad[4][1]["error"]
        counters = _counters(url)
        assert counters == {"status": "ok", "joined": 3, "partial": 0, "duplicates": 3, "conflicts": 1,
                            "rejected": 6, "waiting": 0}
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = log_path.read_text()
    assert "e2: a second, different request arrived before the pair was complete; kept the first" in log
    records = {r["id"]: r for r in _records(bucket, "capture/")}
    assert set(records) == {"e1", "e2", "e3"}
    e1 = records["e1"]
    assert e1["model"] == "m1" and e1["protocol"] == "v1" and e1["time"] == "2026-05-01T10:15:30.250Z"
    assert e1["inputs"] == {"x1": [1.5, 3.0], "x2": [2.0, None], "colour": ["red", "green"]}
    assert e1["outputs"] == {"probability": [0.1, 0.9]}
    assert records["e2"]["inputs"] == {"x1": [1.0], "x2": [2.0], "colour": ["blue"]}
    assert records["e3"]["model"] == "m2" and records["e3"]["inputs"] == {"b": [10], "a": [20], "colour": ["red"]}
