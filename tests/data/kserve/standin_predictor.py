"""A stand-in for ``python -m predictor`` (same CLI and v2 endpoints, stdlib only) for swap tests.

A model directory holding a file ``BROKEN`` makes it exit at start, as a bad artifact would.
"""

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

p = argparse.ArgumentParser()
for flag in ("--model-name", "--model-uri", "--model-version", "--http-port", "--grpc-port", "--capture-bucket"):
    p.add_argument(flag)
args = p.parse_args()
if (Path(args.model_uri) / "BROKEN").exists():
    print("cannot load model: BROKEN", flush=True)
    sys.exit(3)
time.sleep(0.5)  # a load time, so the old server must keep serving meanwhile


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, code, obj):
        raw = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        ok = self.path == f"/v2/models/{args.model_name}/ready"
        self._send(200 if ok else 404, {"ready": ok})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        rows = body["inputs"][0]["shape"][0]
        self._send(200, {"model_name": args.model_name, "model_version": args.model_version, "id": "x",
                         "outputs": [{"name": "probability", "shape": [rows], "datatype": "FP32",
                                      "data": [0.25] * rows}]})


ThreadingHTTPServer(("127.0.0.1", int(args.http_port)), H).serve_forever()
