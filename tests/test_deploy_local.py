"""The local target's deploy: artifact from the moto S3, predictor on 127.0.0.1, a swap behind the
front door that fails no request, a re-deploy that changes nothing, a bad version that never takes
traffic. A stand-in predictor keeps this fast; the last test runs the project's real predictor."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tarfile
import threading
import urllib.request
from pathlib import Path

import pytest

from hybrid_mlops.local.serving import LocalServing, free_port, s3_fetch
from hybrid_mlops.hooks.kserve import KServeHook
from hybrid_mlops.serving import smoke
from serving_helpers import fraud_smoke_sample

ROOT = Path(__file__).resolve().parents[1]
MODEL = "fraud-detection"
SAMPLE = fraud_smoke_sample(4)


def tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload(key: str, data: bytes) -> str:
    import boto3

    bucket = os.environ["HYBRID_MLOPS_BUCKET"]
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


def smoke_test(url: str) -> str | None:
    try:
        answer = KServeHook.infer_v2(url, MODEL, smoke.v2_request(SAMPLE))
    except RuntimeError as err:
        return str(err)
    return smoke.response_problem(answer, SAMPLE)


def infer(url: str) -> tuple[int, str]:
    req = urllib.request.Request(f"{url}/v2/models/{MODEL}/infer", data=json.dumps(smoke.v2_request(fraud_smoke_sample(2))).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.headers["X-Model-Version"]


@pytest.fixture
def standin_dir(tmp_path):
    pkg = tmp_path / "serving" / "predictor"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copy(ROOT / "tests" / "data" / "kserve" / "standin_predictor.py", pkg / "__main__.py")
    return tmp_path / "serving"


@pytest.fixture
def serving(tmp_path, standin_dir):
    s = LocalServing(MODEL, state_dir=tmp_path / "state", serving_dir=standin_dir, python=sys.executable,
                     port=free_port(), ready_timeout=20, drain_seconds=0.5)
    yield s
    s.stop()


def test_swap_drops_no_request_and_rerun_changes_nothing(aws, serving):
    v1 = upload("models/fraud-detection/job-1/output/model.tar.gz", tarball({"model.onnx": b"1"}))
    v2 = upload("models/fraud-detection/job-2/output/model.tar.gz", tarball({"model.onnx": b"2"}))
    first = serving.deploy(1, v1, package_arn="arn:1", fetch=s3_fetch(), smoke_test=smoke_test)
    assert first["outcome"] == "deployed" and first["url"] == serving.url
    assert (serving.root / "v1" / "model" / "model.onnx").read_bytes() == b"1"
    old_pid = serving.current()["pid"]

    results, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                results.append(infer(serving.url))
            except Exception as err:  # any failure is a dropped request
                results.append((0, repr(err)))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        second = serving.deploy(2, v2, package_arn="arn:2", fetch=s3_fetch(), smoke_test=smoke_test)
        for _ in range(20):
            infer(serving.url)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert second["outcome"] == "deployed" and second["replaced"] == 1
    failures = [r for r in results if r[0] != 200]
    assert failures == [] and len(results) > 20
    assert {v for _, v in results} == {"1", "2"}
    assert not os.path.exists(f"/proc/{old_pid}") or "Z" in open(f"/proc/{old_pid}/stat").read().split(")")[-1][:3]

    state = json.loads((serving.root / "current.json").read_text())
    again = serving.deploy(2, v2, package_arn="arn:2", fetch=s3_fetch(), smoke_test=smoke_test)
    assert again["outcome"] == "unchanged"
    assert json.loads((serving.root / "current.json").read_text()) == state


def test_bad_version_never_takes_traffic(aws, serving):
    good = upload("models/m/good.tar.gz", tarball({"model.onnx": b"ok"}))
    bad = upload("models/m/bad.tar.gz", tarball({"BROKEN": b""}))
    serving.deploy(1, good, fetch=s3_fetch(), smoke_test=smoke_test)
    with pytest.raises(RuntimeError, match="version 2 exited: cannot load model: BROKEN"):
        serving.deploy(2, bad, fetch=s3_fetch(), smoke_test=smoke_test)
    assert serving.current()["version"] == 1 and infer(serving.url) == (200, "1")
    with pytest.raises(RuntimeError, match="smoke test of version 3 .* failed: nope"):
        serving.deploy(3, good, fetch=s3_fetch(), smoke_test=lambda url: "nope")
    assert serving.current()["version"] == 1 and infer(serving.url) == (200, "1")


REAL = (ROOT / ".venv-serve" / "bin" / "python").exists() and (ROOT / "include/serving/predictor/__main__.py").exists()


@pytest.mark.skipif(not REAL, reason="the predictor or .venv-serve is not installed (bin/setup)")
def test_real_predictor_swap(aws, tmp_path, artifacts_dir):
    sys.path.insert(0, str(ROOT / "tests"))
    from serving_helpers import build_standin_model, make_tarball

    model_dir = build_standin_model(artifacts_dir / "standin-model")
    data = make_tarball(model_dir, tmp_path / "model.tar.gz").read_bytes()
    uri = upload("models/fraud-detection/real/output/model.tar.gz", data)
    s = LocalServing(MODEL, state_dir=tmp_path / "state", port=free_port(), ready_timeout=120, drain_seconds=0.5)
    try:
        assert s.deploy(1, uri, fetch=s3_fetch(), smoke_test=smoke_test)["outcome"] == "deployed"
        assert s.deploy(2, uri, fetch=s3_fetch(), smoke_test=smoke_test)["replaced"] == 1
        assert smoke_test(s.url) is None and infer(s.url)[1] == "2"
    finally:
        s.stop()


def test_two_models_at_once_and_a_port_held_by_another_program(aws, tmp_path, standin_dir, monkeypatch):
    """Each model gets its own front door; a port another program holds (answering 200 to anything,
    as the Airflow UI would) is never taken for ours: the deploy fails naming it, and nothing is left running."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Anything(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    other = ThreadingHTTPServer(("127.0.0.1", 0), Anything)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    held = other.server_address[1]
    monkeypatch.delenv("HYBRID_MLOPS_SERVING_PORT", raising=False)
    artifact = upload("models/m/good.tar.gz", tarball({"model.onnx": b"ok"}))

    def serving(model: str, **kwargs) -> LocalServing:
        return LocalServing(model, state_dir=tmp_path / model, serving_dir=standin_dir, python=sys.executable,
                            ready_timeout=20, drain_seconds=0.2, **kwargs)

    blocked = serving(MODEL, port=held)
    try:
        with pytest.raises(RuntimeError, match=f"port {held} is held by another program"):
            blocked.deploy(1, artifact, fetch=s3_fetch(), smoke_test=smoke_test)
        assert blocked.current() is None and blocked.front_door() is None  # the predictor was stopped too
    finally:
        blocked.stop()
        other.shutdown()

    first, second = serving(MODEL), serving("other-model")
    try:
        first.deploy(1, artifact, fetch=s3_fetch(), smoke_test=smoke_test)
        second.deploy(1, artifact, fetch=s3_fetch(), smoke_test=None)
        assert first.url != second.url
        assert infer(first.url) == (200, "1")
        assert json.loads(urllib.request.urlopen(f"{second.url}/-/upstream", timeout=5).read())["version"] == 1
    finally:
        first.stop()
        second.stop()
