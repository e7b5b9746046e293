"""A tiny real v2 model server for smoke tests: answers ``/v2/models/<name>/infer`` over HTTP."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class TinyV2Server:
    """Serves ``probability`` = 0.1 per row; ``broken=True`` answers 500 with an error body."""

    def __init__(self, model: str = "fraud-detection", broken: bool = False):
        self.model = model
        self.broken = broken
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                ok = self.path == f"/v2/models/{outer.model}/ready" and not outer.broken
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls += 1
                if outer.broken or self.path != f"/v2/models/{outer.model}/infer":
                    data, code = {"error": "model fraud-detection failed to load: bad weights"}, 500
                else:
                    rows = body["inputs"][0]["shape"][0]
                    outer.last_request = body
                    data, code = {"model_name": outer.model, "id": body.get("id", "x"), "outputs": [
                        {"name": "probability", "shape": [rows], "datatype": "FP32", "data": [0.1] * rows}]}, 200
                raw = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
