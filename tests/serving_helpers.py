"""Helpers for the predictor tests and the serving benchmark.

The predictor runs in ``.venv-serve`` (kserve, onnxruntime) and the tests in ``.venv``; everything
that needs onnxruntime or torch runs as a subprocess of the right environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVING_DIR = ROOT / "include" / "serving"
SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"
TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"
MODEL_NAME = "fraud-detection"

# A tiny MLP with the trained model's contract (inputs ``numeric`` [N, 7] float32 with NaN allowed,
# ``categorical`` [N, 3] int64 with -1 = unknown; output ``probability`` [N]), exported with torch.
_STANDIN_SCRIPT = r"""
import json, os, sys
import numpy as np
import torch

sys.path.insert(0, sys.argv[2])
from hybrid_mlops.data.generator import CATEGORICAL_FEATURES, NUMERIC_FEATURES

out = sys.argv[1]
torch.manual_seed(0)
vocab = {k: list(v) for k, v in CATEGORICAL_FEATURES.items()}

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([60.0, 40.0, 14.0, 8.0, 3.0, 800.0, 0.5]))
        self.register_buffer("std", torch.tensor([80.0, 30.0, 5.0, 20.0, 1.7, 560.0, 0.5]))
        self.emb = torch.nn.ModuleList(torch.nn.Embedding(len(v) + 1, 4) for v in vocab.values())
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(7 + 4 * len(vocab), 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
        )

    def forward(self, numeric, categorical):
        x = torch.where(torch.isnan(numeric), self.mean, numeric)
        x = (x - self.mean) / self.std
        codes = categorical + 1  # -1 (unknown) -> row 0
        parts = [x] + [emb(codes[:, i]) for i, emb in enumerate(self.emb)]
        return torch.sigmoid(self.mlp(torch.cat(parts, dim=1))).squeeze(1)

net = Net().eval()
numeric = torch.randn(4, 7)
categorical = torch.zeros(4, 3, dtype=torch.int64)
os.makedirs(out, exist_ok=True)
torch.onnx.export(
    net, (numeric, categorical), os.path.join(out, "model.onnx"),
    input_names=["numeric", "categorical"], output_names=["probability"],
    dynamic_axes={"numeric": {0: "n"}, "categorical": {0: "n"}, "probability": {0: "n"}},
    opset_version=17, dynamo=False,
)
schema = {"model": "fraud-detection", "task": "binary", "id": "transaction_id", "numeric": list(NUMERIC_FEATURES),
          "categorical": vocab, "output": "probability", "threshold": 0.5}
with open(os.path.join(out, "input_schema.json"), "w") as f:
    json.dump(schema, f, indent=2)
"""


def build_standin_model(out_dir: str | Path) -> Path:
    """Write a model directory with the training contract (``model.onnx`` + ``input_schema.json``)."""
    out_dir = Path(out_dir)
    if not (out_dir / "model.onnx").exists():
        # Built aside and renamed into place: test workers running in parallel may build it at once.
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
            subprocess.run(
                [str(TRAIN_PYTHON), "-c", _STANDIN_SCRIPT, tmp + "/model", str(ROOT / "plugins")],
                check=True,
                capture_output=True,
                timeout=300,
            )
            with contextlib.suppress(OSError):  # another worker renamed its copy first
                os.rename(tmp + "/model", out_dir)
    return out_dir


def make_tarball(model_dir: str | Path, tar_path: str | Path) -> Path:
    """Pack a model directory the way SageMaker does (files at the archive root)."""
    tar_path = Path(tar_path)
    with tarfile.open(tar_path, "w:gz") as tar:
        for item in sorted(Path(model_dir).iterdir()):
            tar.add(item, arcname=item.name)
    return tar_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 10):
    """(status, headers, body bytes) of one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class PredictorProcess:
    """``python -m predictor`` as a subprocess (cwd ``include/serving``), the way local deploy starts it.

    :param model_uri: model directory, ``.tar.gz`` or ``s3://`` URI.
    :param env: extra environment (AWS endpoint and credentials for capture).
    :param args: extra command-line arguments.
    :param log_path: file for the server's output.
    """

    def __init__(self, model_uri, *, env=None, args=(), log_path=None, version="1",
                 module="predictor", model_name=MODEL_NAME, python=SERVE_PYTHON):
        self.model_uri = str(model_uri)
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.env = {**os.environ, **(env or {})}
        self.args = list(args)
        self.version = version
        self.module = module
        self.model_name = model_name
        self.python = str(python)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            self.python, "-m", self.module,
            "--model-name", self.model_name,
            "--model-uri", self.model_uri,
            "--model-version", self.version,
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
            *self.args,
        ]

    def start(self, timeout: float = 60.0) -> PredictorProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), cwd=SERVING_DIR, env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"predictor exited with {self.proc.returncode}: {self.log()}")
            try:
                status, _, _ = request("GET", f"{self.url}/v2/models/{self.model_name}/ready", timeout=1)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"predictor not ready on {self.url} within {timeout}s: {self.log()}")

    def log(self) -> str:
        if self.log_path and Path(self.log_path).exists():
            return Path(self.log_path).read_text(errors="replace")[-4000:]
        return ""

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> PredictorProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_in_serve_env(script: str, payload: dict | None = None, timeout: float = 120) -> dict:
    """Run ``script`` with ``.venv-serve``'s python (cwd include/serving); JSON in on stdin, JSON out."""
    proc = subprocess.run(
        [str(SERVE_PYTHON), "-c", script],
        input=json.dumps(payload or {}).encode(),
        cwd=SERVING_DIR,
        capture_output=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"serve-env script failed ({proc.returncode}): {proc.stderr.decode()[-3000:]}")
    return json.loads(proc.stdout)



# ---------------------------------------------------------------------------- request bodies
def _numeric_features():
    from hybrid_mlops.data.generator import NUMERIC_FEATURES

    return NUMERIC_FEATURES


def _categorical_features():
    from hybrid_mlops.data.generator import CATEGORICAL_FEATURES

    return tuple(CATEGORICAL_FEATURES)


def _num(v) -> float | None:
    v = float(v)
    return None if v != v else v


def _str(v) -> str | None:
    return None if v is None else str(v)


def v2_json(cols: dict, lo: int = 0, hi: int | None = None, *, with_id: bool = True, request_id=None) -> bytes:
    """A v2 JSON inference request: one tensor per feature (FP64 / BYTES, shape [N])."""
    hi = len(cols["amount"]) if hi is None else hi
    n = hi - lo
    inputs = [{"name": f, "datatype": "FP64", "shape": [n], "data": [_num(v) for v in cols[f][lo:hi]]}
              for f in _numeric_features()]
    inputs += [{"name": f, "datatype": "BYTES", "shape": [n], "data": [_str(v) for v in cols[f][lo:hi]]}
               for f in _categorical_features()]
    if with_id:
        inputs.append({"name": "transaction_id", "datatype": "BYTES", "shape": [n],
                       "data": [str(v) for v in cols["transaction_id"][lo:hi]]})
    doc = {"inputs": inputs}
    if request_id:
        doc["id"] = request_id
    return json.dumps(doc).encode()


def v2_binary(cols: dict, lo: int = 0, hi: int | None = None, *, binary_output: bool = True) -> tuple[bytes, int]:
    """A v2 request in the binary tensor extension: (body, Inference-Header-Content-Length)."""
    import struct

    import numpy as np

    hi = len(cols["amount"]) if hi is None else hi
    n = hi - lo
    inputs, blobs = [], []
    for f in _numeric_features():
        blob = np.ascontiguousarray(cols[f][lo:hi], dtype=np.float32).tobytes()
        inputs.append({"name": f, "datatype": "FP32", "shape": [n], "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    for f in (*_categorical_features(), "transaction_id"):
        blob = b"".join(struct.pack("<I", len(s)) + s for s in (str(v).encode() for v in cols[f][lo:hi]))
        inputs.append({"name": f, "datatype": "BYTES", "shape": [n], "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": binary_output}}).encode()
    return head + b"".join(blobs), len(head)


def v1_json(cols: dict, lo: int = 0, hi: int | None = None) -> bytes:
    """A v1 request: {"instances": [{feature: value, ..., "transaction_id": ...}, ...]}."""
    hi = len(cols["amount"]) if hi is None else hi
    rows = []
    for i in range(lo, hi):
        row = {f: _num(cols[f][i]) for f in _numeric_features()}
        row.update({f: _str(cols[f][i]) for f in _categorical_features()})
        row["transaction_id"] = str(cols["transaction_id"][i])
        rows.append(row)
    return json.dumps({"instances": rows}).encode()


sys.path.insert(0, str(ROOT / "plugins"))


def fraud_smoke_sample(rows: int = 4, seed: int = 11) -> dict:
    """A smoke-test sample (:mod:`hybrid_mlops.serving.smoke`) of generated fraud rows."""
    from hybrid_mlops.data.generator import CATEGORICAL_FEATURES, generate

    cols = generate(rows, seed=seed)
    schema = {"task": "binary", "numeric": list(_numeric_features()),
              "categorical": {k: list(v) for k, v in CATEGORICAL_FEATURES.items()}}
    return {"schema": schema, "rows": {f: cols[f].tolist() for f in (*_numeric_features(), *_categorical_features())}}
