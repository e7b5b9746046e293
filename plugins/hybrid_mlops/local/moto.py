"""The ``local`` target's AWS: a moto server on 127.0.0.1, started and stopped as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """A moto server process on loopback.

    :param port: TCP port (a free one when 0).
    :param log_path: file for the server's output (discarded when None).
    """

    def __init__(self, port: int = 0, log_path: str | Path | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> MotoServer:
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
        if exe is None:
            raise RuntimeError("moto_server not found: run bin/setup (it installs moto[server] into .venv)")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode} (log: {self.log_path})")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout}s")

    def reset(self) -> None:
        """Forget every resource (between tests)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def environ(self, region: str = "us-west-2") -> dict[str, str]:
        """Environment that points boto3 and Airflow's ``aws_default`` connection at this server."""
        connection = {"conn_type": "aws", "extra": {"region_name": region, "endpoint_url": self.url}}
        return {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": self.url, "AWS_DEFAULT_REGION": region,
                "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection)}

    def apply_environ(self, region: str = "us-west-2") -> None:
        os.environ.update(self.environ(region))

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
