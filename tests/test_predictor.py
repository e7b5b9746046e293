"""The KServe predictor as a real subprocess: scores, protocols, validation, capture, logger service.

The predictor runs in ``.venv-serve`` (kserve, onnxruntime); reference scores come from a plain
onnxruntime session in that environment, built independently of the predictor's own encoding.
"""

from __future__ import annotations

from http.client import HTTPConnection
import json
import os
import subprocess
import time

import boto3
import numpy as np
import pytest
from serving_helpers import (
    MODEL_NAME,
    ROOT,
    PredictorProcess,
    free_port,
    request as http,
    make_tarball,
    run_in_serve_env,
    v1_json,
    v2_binary,
    v2_json,
)

from hybrid_mlops.data.generator import CATEGORICAL_FEATURES, NUMERIC_FEATURES, DriftKnobs, generate

INFER = f"/v2/models/{MODEL_NAME}/infer"
PREDICT = f"/v1/models/{MODEL_NAME}:predict"
JSON = {"Content-Type": "application/json"}
# missing numerics, missing and unseen categories: what the model must cope with
KNOBS = dict(nulls={"distance_km": 0.1, "channel": 0.05}, new_category={"country": ("ZZ", 0.1)})

REFERENCE = r"""
import json, sys
import numpy as np, onnxruntime as ort
args = json.load(sys.stdin)
sys.path.insert(0, args["plugins"])
from hybrid_mlops.data.generator import DriftKnobs, generate
cols = generate(args["n"], seed=args["seed"], drift=DriftKnobs(**args["knobs"]))
schema = json.load(open(args["model_dir"] + "/input_schema.json"))
numeric = np.stack([np.asarray(cols[f], dtype=np.float64) for f in schema["numeric"]], axis=1).astype(np.float32)
categorical = np.array(
    [[vocab.index(v) if v in vocab else -1 for v in cols[f]] for f, vocab in schema["categorical"].items()],
    dtype=np.int64).T
sess = ort.InferenceSession(args["model_dir"] + "/model.onnx", providers=["CPUExecutionProvider"])
(prob,) = sess.run([schema["output"]], {"numeric": numeric, "categorical": categorical})
print(json.dumps({"probability": prob.astype(float).tolist(), "threshold": schema["threshold"]}))
"""


def _knobs():
    return DriftKnobs(nulls=KNOBS["nulls"], new_category={k: v for k, v in KNOBS["new_category"].items()})


@pytest.fixture(scope="module")
def model_dir(trained_model_dir):
    return trained_model_dir


@pytest.fixture(scope="module")
def sample():
    """300 generated transactions with NaNs, missing and unseen categories, and their reference scores."""
    return generate(300, seed=5, drift=_knobs())


@pytest.fixture(scope="module")
def reference(model_dir):
    out = run_in_serve_env(REFERENCE, {"plugins": str(ROOT / "plugins"), "n": 300, "seed": 5,
                                       "knobs": {"nulls": KNOBS["nulls"], "new_category": KNOBS["new_category"]},
                                       "model_dir": str(model_dir)})
    return np.asarray(out["probability"]), out["threshold"]


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("predictor") / "predictor.log"
    proc = PredictorProcess(model_dir, args=["--max-body-bytes", "1000000", "--max-rows", "5000"], log_path=log)
    with proc:
        yield proc


def _outputs(body: bytes) -> dict:
    doc = json.loads(body)
    return {o["name"]: o for o in doc["outputs"]}


def test_ready_metadata_and_provider_logged(server):
    status, _, body = http("GET", f"{server.url}/v2/models/{MODEL_NAME}/ready")
    assert status == 200 and json.loads(body)["ready"] is True
    status, _, body = http("GET", f"{server.url}/v2/models/{MODEL_NAME}")
    meta = json.loads(body)
    assert [i["name"] for i in meta["inputs"]] == [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
    assert {o["name"] for o in meta["outputs"]} == {"probability", "label"}
    assert "running on CPUExecutionProvider" in server.log()


def test_v2_json_scores_equal_onnxruntime(server, sample, reference):
    expected, threshold = reference
    status, _, body = http("POST", server.url + INFER, v2_json(sample, request_id="req-1"), JSON)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["id"] == "req-1" and doc["model_name"] == MODEL_NAME and doc["model_version"] == "1"
    out = _outputs(body)
    prob = np.asarray(out["probability"]["data"])
    assert out["probability"]["datatype"] == "FP32" and out["probability"]["shape"] == [300]
    np.testing.assert_allclose(prob, expected, rtol=0, atol=1e-6)
    assert out["label"]["data"] == [int(p >= threshold) for p in prob]
    assert 0 < sum(out["label"]["data"]) < 300 or threshold >= 1  # both classes on a drifted sample


def test_single_rows_v2_and_v1(server, sample, reference):
    expected, _ = reference
    for i in (0, 7, 42):
        status, _, body = http("POST", server.url + INFER, v2_json(sample, i, i + 1, with_id=False), JSON)
        assert status == 200, body
        assert _outputs(body)["probability"]["data"][0] == pytest.approx(expected[i], abs=1e-6)
    status, _, body = http("POST", server.url + PREDICT, v1_json(sample, 0, 50), JSON)
    assert status == 200, body
    np.testing.assert_allclose(json.loads(body)["predictions"], expected[:50], rtol=0, atol=1e-6)


def test_v2_binary_tensors_in_and_out(server, sample, reference):
    expected, threshold = reference
    body, json_len = v2_binary(sample, 0, 300)
    status, headers, resp = http("POST", server.url + INFER, body, {
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_len)})
    assert status == 200, resp
    head_len = int({k.lower(): v for k, v in headers.items()}["inference-header-content-length"])
    head = json.loads(resp[:head_len])
    blobs, offset = {}, head_len
    for out in head["outputs"]:
        size = out["parameters"]["binary_data_size"]
        blobs[out["name"]] = resp[offset : offset + size]
        offset += size
    prob = np.frombuffer(blobs["probability"], dtype=np.float32)
    # the sample's missing categories travel as the string "None" here: unseen, like the reference's None
    np.testing.assert_allclose(prob, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.frombuffer(blobs["label"], dtype=np.int8), (prob >= threshold).astype(np.int8))


GRPC_CLIENT = r"""
import json, struct, sys
import grpc, numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pbg
args = json.load(sys.stdin)
cols = args["cols"]
stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(args["target"]))
n = len(cols["amount"])
def tensors(raw):
    inputs, blobs = [], []
    for f in args["numeric"]:
        vals = [float("nan") if v is None else v for v in cols[f]]
        t = pb.ModelInferRequest.InferInputTensor(name=f, datatype="FP32", shape=[n])
        if raw: blobs.append(np.asarray(vals, dtype=np.float32).tobytes())
        else: t.contents.fp32_contents.extend(vals)
        inputs.append(t)
    for f in args["categorical"]:
        vals = [str(v).encode() for v in cols[f]]
        t = pb.ModelInferRequest.InferInputTensor(name=f, datatype="BYTES", shape=[n])
        if raw: blobs.append(b"".join(struct.pack("<I", len(v)) + v for v in vals))
        else: t.contents.bytes_contents.extend(vals)
        inputs.append(t)
    return inputs, blobs
out = {}
for raw in (False, True):
    inputs, blobs = tensors(raw)
    resp = stub.ModelInfer(pb.ModelInferRequest(model_name=args["model"], id="g-%d" % raw, inputs=inputs,
                                                raw_input_contents=blobs))
    names = [o.name for o in resp.outputs]
    prob = np.frombuffer(resp.raw_output_contents[names.index("probability")], dtype=np.float32)
    out["raw" if raw else "contents"] = {"id": resp.id, "probability": prob.astype(float).tolist()}
bad = pb.ModelInferRequest(model_name=args["model"], inputs=tensors(False)[0][1:])
try:
    stub.ModelInfer(bad)
    out["bad"] = "OK"
except grpc.RpcError as e:
    out["bad"] = [e.code().name, e.details()]
print(json.dumps(out))
"""


def test_grpc_scores_equal_onnxruntime_and_bad_request_is_invalid_argument(server, sample, reference):
    expected, _ = reference
    cols = {f: [None if v != v else float(v) for v in sample[f][:100]] for f in NUMERIC_FEATURES}
    cols.update({f: [str(v) for v in sample[f][:100]] for f in CATEGORICAL_FEATURES})
    out = run_in_serve_env(GRPC_CLIENT, {"cols": cols, "target": f"127.0.0.1:{server.grpc_port}", "model": MODEL_NAME,
                                         "numeric": list(NUMERIC_FEATURES), "categorical": list(CATEGORICAL_FEATURES)})
    for kind in ("contents", "raw"):
        assert out[kind]["id"] == ("g-0" if kind == "contents" else "g-1")
        np.testing.assert_allclose(out[kind]["probability"], expected[:100], rtol=0, atol=1e-6)
    code, details = out["bad"]
    assert code == "INVALID_ARGUMENT" and "amount" in details


def _one_row(sample, **override) -> dict:
    doc = json.loads(v2_json(sample, 0, 1, with_id=False))
    for name, change in override.items():
        tensor = next(t for t in doc["inputs"] if t["name"] == name)
        if change is None:
            doc["inputs"].remove(tensor)
        else:
            tensor.update(change)
    return doc


BAD = [
    ("malformed JSON", INFER, b'{"inputs": [', JSON, 400, "not valid JSON"),
    ("non-JSON body", INFER, bytes(range(256)) * 4, {"Content-Type": "application/octet-stream"}, 400, "JSON"),
    ("JSON but not an object", INFER, b"[1, 2, 3]", JSON, 400, "inputs"),
    ("no inputs", INFER, b'{"inputs": []}', JSON, 400, "inputs"),
    ("v1 body on v2", INFER, b'{"instances": [{"amount": 1}]}', JSON, 400, "inputs"),
    ("bad binary header", INFER, b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, 400,
     "inference-header-content-length"),
    ("v1 malformed", PREDICT, b"{nope", JSON, 400, "not valid JSON"),
    ("v1 not a list", PREDICT, b'{"instances": 3}', JSON, 400, "instances"),
    ("v1 row not an object", PREDICT, b'{"instances": [[1, 2]]}', JSON, 400, "instances[0]"),
    ("v1 missing feature", PREDICT, b'{"instances": [{"amount": 3.0}]}', JSON, 400, "avg_amount_30d"),
]


@pytest.mark.parametrize("label,path,body,headers,status,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_payloads_are_4xx(server, label, path, body, headers, status, needle):
    code, _, resp = http("POST", server.url + path, body, headers)
    assert code == status, resp
    assert needle in json.loads(resp)["error"]


SCHEMA_ERRORS = [
    ("missing feature", {"hour": None}, "hour"),
    ("string in numeric", {"amount": {"data": ["12.5"]}}, "amount"),
    ("bool in numeric", {"card_present": {"data": [True]}}, "card_present"),
    ("number in categorical", {"channel": {"data": [3]}}, "channel"),
    ("object in categorical", {"country": {"data": [{"x": 1}]}}, "country"),
    ("categorical as FP32", {"channel": {"datatype": "FP32", "data": [1.0]}}, "channel"),
    ("numeric as BYTES", {"amount": {"datatype": "BYTES", "data": ["1"]}}, "amount"),
    ("shape and data disagree", {"amount": {"shape": [2]}}, "amount"),
    ("rows disagree", {"hour": {"shape": [2], "data": [1, 2]}}, "hour"),
    ("2-D shape", {"amount": {"shape": [1, 2], "data": [1, 2]}}, "amount"),
    ("unknown input", {"amount": {"name": "amount_usd"}}, "amount_usd"),
    ("too many rows", {n: {"shape": [6000], "data": [1.0] * 6000} for n in ["amount"]}, "amount"),
]


@pytest.mark.parametrize("label,override,needle", SCHEMA_ERRORS, ids=[s[0] for s in SCHEMA_ERRORS])
def test_schema_violations_are_400_naming_the_field(server, sample, label, override, needle):
    code, _, resp = http("POST", server.url + INFER, json.dumps(_one_row(sample, **override)).encode(), JSON)
    assert code == 400, resp
    assert needle in json.loads(resp)["error"]


def _oversized(port: int, path: str, chunked: bool) -> tuple[int, dict]:
    """POST a body over the 1 MB limit; the server may answer before it is all sent."""
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", "1500000")))
    conn.endheaders()
    try:
        for _ in range(15):
            chunk = b" " * 100_000
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and hung up before the whole body was sent
    resp = conn.getresponse()
    try:
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_oversized_bodies_are_413_and_the_server_stays_healthy(server, sample, reference):
    for path in (INFER, PREDICT):
        for chunked in (False, True):  # declared too large, or cut off at the limit while streaming
            status, doc = _oversized(server.http_port, path, chunked)
            assert status == 413 and "limit of 1000000 bytes" in doc["error"], (path, chunked, doc)
    # still serving, and still right
    status, _, body = http("GET", f"{server.url}/v2/health/live")
    assert status == 200
    status, _, body = http("POST", server.url + INFER, v2_json(sample, 3, 4), JSON)
    assert status == 200 and _outputs(body)["probability"]["data"][0] == pytest.approx(reference[0][3], abs=1e-6)
    assert server.proc.poll() is None


def test_provider_selection():
    out = run_in_serve_env(r"""
import json
from predictor.runtime import select_providers
res = {
    "auto_gpu": select_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    "auto_cpu": select_providers("auto", ["AzureExecutionProvider", "CPUExecutionProvider"]),
    "cpu_on_gpu": select_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
}
try:
    select_providers("cuda", ["CPUExecutionProvider"])
except RuntimeError as e:
    res["cuda_missing"] = str(e)
print(json.dumps(res))
""")
    assert out["auto_gpu"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert out["auto_cpu"] == ["CPUExecutionProvider"]
    assert out["cpu_on_gpu"] == ["CPUExecutionProvider"]
    assert "onnxruntime-gpu" in out["cuda_missing"]


def _capture_records(prefix: str = f"capture/{MODEL_NAME}/") -> tuple[list[str], list[dict]]:
    s3 = boto3.client("s3")
    bucket = os.environ["HYBRID_MLOPS_BUCKET"]
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in p.get("Contents", [])]
    records = []
    for key in sorted(keys):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        records += [json.loads(line) for line in body.splitlines() if line]
    return keys, records


def _wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


def test_s3_tarball_model_and_capture_on_interval(aws, model_dir, sample, reference, tmp_path):
    bucket = os.environ["HYBRID_MLOPS_BUCKET"]
    tar = make_tarball(model_dir, tmp_path / "model.tar.gz")
    boto3.client("s3").upload_file(str(tar), bucket, "models/fraud-detection/job-1/output/model.tar.gz")
    uri = f"s3://{bucket}/models/fraud-detection/job-1/output/model.tar.gz"
    proc = PredictorProcess(uri, env=aws.environ(), version="7", log_path=tmp_path / "p.log",
                            args=["--capture-bucket", bucket, "--capture-flush-seconds", "1"])
    with proc:
        status, _, body = http("POST", proc.url + INFER, v2_json(sample, 0, 20, request_id="cap-v2"), JSON)
        assert status == 200
        status, _, v1_body = http("POST", proc.url + PREDICT, v1_json(sample, 20, 25), {**JSON, "X-Request-Id": "cap-v1"})
        assert status == 200
        keys, records = _wait_for(lambda: (lambda kr: kr if len(kr[1]) >= 2 else None)(_capture_records()))
        assert proc.proc.poll() is None
    assert len(records) == 2
    for key in keys:
        parts = key.split("/")
        assert parts[:2] == ["capture", MODEL_NAME] and len(parts) == 7 and parts[-1].endswith(".jsonl")
        assert [len(p) for p in parts[2:6]] == [4, 2, 2, 2]
    by_id = {r["id"]: r for r in records}
    v2, v1 = by_id["cap-v2"], by_id["cap-v1"]
    for rec in (v2, v1):
        assert set(rec) == {"id", "time", "model", "version", "protocol", "inputs", "outputs"}
        assert rec["model"] == MODEL_NAME and rec["version"] == "7" and rec["time"].endswith("Z")
    assert v2["protocol"] == "v2" and v1["protocol"] == "v1"
    assert set(v2["inputs"]) == {*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, "transaction_id"}
    assert v2["inputs"]["transaction_id"] == [str(t) for t in sample["transaction_id"][:20]]
    assert v2["inputs"]["country"] == [None if v is None else str(v) for v in sample["country"][:20]]
    amounts = [None if a != a else a for a in sample["distance_km"][:20]]
    assert v2["inputs"]["distance_km"] == pytest.approx(amounts, nan_ok=True) or v2["inputs"]["distance_km"] == amounts
    np.testing.assert_allclose(v2["outputs"]["probability"], reference[0][:20], atol=1e-6)
    assert v1["outputs"]["probability"] == pytest.approx(json.loads(v1_body)["predictions"], abs=1e-7)
    assert len(v1["inputs"]["amount"]) == 5


def test_capture_is_flushed_on_sigterm(aws, model_dir, sample, tmp_path):
    bucket = os.environ["HYBRID_MLOPS_BUCKET"]
    tar = make_tarball(model_dir, tmp_path / "model.tar.gz")  # a local archive this time
    proc = PredictorProcess(tar, env=aws.environ(), log_path=tmp_path / "p.log",
                            args=["--capture-bucket", bucket, "--capture-flush-seconds", "600"])
    proc.start()
    try:
        ids = []
        for i in range(30):
            rid = f"term-{i}"
            status, _, _ = http("POST", proc.url + INFER, v2_json(sample, i, i + 1, request_id=rid), JSON)
            assert status == 200
            ids.append(rid)
        body, json_len = v2_binary(sample, 0, 100)
        status, _, _ = http("POST", proc.url + INFER, body, {"Inference-Header-Content-Length": str(json_len),
                                                             "X-Request-Id": "term-binary"})
        assert status == 200
        assert _capture_records()[1] == []  # nothing written yet: a 600 s interval
        assert proc.terminate() == 0
    finally:
        proc.stop()
    _, records = _capture_records()
    got = {r["id"]: r for r in records}
    assert set(got) == {*ids, "term-binary"}
    binary = got["term-binary"]
    assert binary["inputs"]["merchant_category"] == [str(v) for v in sample["merchant_category"][:100]]
    np.testing.assert_allclose(binary["inputs"]["amount"], sample["amount"][:100].astype(np.float32), rtol=1e-6)
    assert len(binary["outputs"]["probability"]) == 100


def test_load_failure_names_the_problem(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    proc = PredictorProcess(tmp_path, log_path=tmp_path / "p.log")
    with pytest.raises(RuntimeError) as exc:
        proc.start(timeout=30)
    assert "input_schema.json" in str(exc.value)


def _event(url, ce_id, ce_type, payload, model=MODEL_NAME):
    headers = {"ce-id": ce_id, "ce-type": f"org.kubeflow.serving.inference.{ce_type}", "ce-specversion": "1.0",
               "ce-source": "http://localhost:9081/", "ce-inferenceservicename": model, **JSON}
    return http("POST", url, json.dumps(payload).encode(), headers)[0]


def test_logger_service_joins_cloudevents(aws, sample, tmp_path):
    bucket = os.environ["HYBRID_MLOPS_BUCKET"]
    port = free_port()
    log = open(tmp_path / "logger.log", "wb")
    proc = subprocess.Popen(
        [str(ROOT / ".venv-serve" / "bin" / "python"), "-m", "predictor.logger_service", "--capture-bucket", bucket,
         "--port", str(port), "--capture-flush-seconds", "600", "--model-version", "fallback"],
        cwd=ROOT / "include" / "serving", env={**os.environ, **aws.environ()}, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    try:
        assert _wait_for(lambda: _safe_get(url) == 200, timeout=30), (tmp_path / "logger.log").read_text()
        v2_req = json.loads(v2_json(sample, 0, 3))
        v2_resp = {"id": "e1", "model_name": MODEL_NAME, "model_version": "5",
                   "outputs": [{"name": "probability", "datatype": "FP32", "shape": [3], "data": [0.1, 0.2, 0.3]},
                               {"name": "label", "datatype": "INT8", "shape": [3], "data": [0, 0, 1]}]}
        v1_req = json.loads(v1_json(sample, 3, 5))
        # halves interleaved and out of order, as the logger sidecar may deliver them
        assert _event(url, "e2", "response", {"predictions": [0.4, 0.5]}) == 202
        assert _event(url, "e1", "request", v2_req) == 202
        assert _event(url, "e2", "request", v1_req) == 202
        assert _event(url, "e1", "response", v2_resp) == 202
        assert _event(url, "e3", "request", v2_req) == 202  # never answered: written alone at shutdown
        status, _, body = http("POST", url, b"{}", {"ce-type": "something.else"})
        assert status == 400 and "ce-id" in json.loads(body)["error"]
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    _, records = _capture_records()
    got = {r["id"]: r for r in records}
    assert set(got) == {"e1", "e2", "e3"}
    e1, e2, e3 = got["e1"], got["e2"], got["e3"]
    assert e1["protocol"] == "v2" and e1["version"] == "5" and e1["model"] == MODEL_NAME
    assert e1["inputs"]["amount"] == [float(a) for a in sample["amount"][:3]]
    assert e1["inputs"]["transaction_id"] == [str(t) for t in sample["transaction_id"][:3]]
    assert e1["outputs"] == {"probability": [0.1, 0.2, 0.3]}
    assert e2["protocol"] == "v1" and e2["version"] == "fallback"
    assert e2["inputs"]["channel"] == [None if v is None else str(v) for v in sample["channel"][3:5]]
    assert e2["outputs"] == {"probability": [0.4, 0.5]}
    assert e3["outputs"] == {} and len(e3["inputs"]["hour"]) == 3


def _safe_get(url):
    try:
        return http("GET", url, timeout=1)[0]
    except OSError:
        return None
