"""The ``local`` target's serving: the project's predictor on 127.0.0.1 behind a stable front door.

Clients always call the model's front door (``http://127.0.0.1:<port>``), a small reverse proxy that
forwards each request to whichever predictor ``current.json`` names. Each model has its own front
door, so several models serve at once: its port is ``HYBRID_MLOPS_SERVING_PORT`` when set (for one
model), else kept from its last start, else a free port near ``18080`` derived from the model name.
A port that another program holds is never taken for ours: the proxy answers its health check with
a token only this deploy knows. A deploy:

1. downloads the approved ``model.tar.gz`` and unpacks it under ``<local_state_dir>/serving/<model>/v<N>/``;
2. starts ``<serving python> -m predictor ... --http-port P`` (cwd ``include/serving``) on fresh ports;
3. waits for ``GET /v2/models/<model>/ready`` = 200 and smoke-tests ``/v2/models/<model>/infer``;
4. only then rewrites ``current.json`` (atomic rename): the next request goes to the new server;
5. lets requests already in flight on the old server finish (``drain_seconds``), then stops it.

If step 2 or 3 fails the new process is stopped and the old one never stopped serving: a local
deploy fails closed, so there is nothing to roll back. The proxy retries a request whose upstream
refused the connection once the state file names another upstream, so a swap drops no request.

Files under ``<local_state_dir>/serving/<model>/``: ``current.json`` (served version, pid, ports),
``previous.json``, ``frontdoor.json`` (proxy pid and port), ``v<N>/server.log``, ``frontdoor.log``.

Run the proxy by hand with ``python -m hybrid_mlops.local.serving front-door --state DIR --port P``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from hybrid_mlops import settings

PLUGINS_DIR = Path(__file__).resolve().parents[2]
FRONT_DOOR_BASE_PORT = 18080


class PortTaken(RuntimeError):
    """The front door could not be started on a port (held by another program, or no answer)."""

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(OSError):  # a zombie (our own exited child) is not alive
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stop(pid: int | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group started for a server, then SIGKILL if it lingers."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


class LocalServing:
    """Blue/green swaps of one model's local predictor behind a stable front-door port.

    :param model: model name (``/v2/models/<model>/...``).
    :param state_dir: where versions, logs and state files go (``<local_state_dir>/serving/<model>``).
    :param serving_dir: working directory of the predictor (``include/serving``).
    :param python: interpreter that runs ``-m predictor`` (``settings.serving_python()``).
    :param port: the front door's port (default: ``HYBRID_MLOPS_SERVING_PORT``, else chosen per model).
    :param capture_bucket: passed as ``--capture-bucket`` (request capture for drift monitoring).
    :param id_column: passed as ``--id-column`` (the spec's ``schema.id``).
    :param ready_timeout: seconds a new predictor gets to become ready.
    :param drain_seconds: how long the old predictor keeps answering after the switch.
    """

    def __init__(
        self,
        model: str,
        *,
        state_dir: str | Path | None = None,
        serving_dir: str | Path | None = None,
        python: str | None = None,
        port: int | None = None,
        capture_bucket: str | None = None,
        ready_timeout: float = 120.0,
        drain_seconds: float = 2.0,
        id_column: str | None = None,
    ):
        self.model = model
        self.root = Path(state_dir) if state_dir else settings.local_state_dir() / "serving" / model
        self.root.mkdir(parents=True, exist_ok=True)
        self.serving_dir = Path(serving_dir) if serving_dir else settings.INCLUDE_DIR / "serving"
        self.python = python or settings.serving_python()
        setting = os.environ.get("HYBRID_MLOPS_SERVING_PORT")
        self.port = port or (int(setting) if setting else None)
        self.capture_bucket = capture_bucket
        self.id_column = id_column
        self.ready_timeout = ready_timeout
        self.drain_seconds = drain_seconds

    # -- state -------------------------------------------------------------------------------------

    @property
    def current_file(self) -> Path:
        return self.root / "current.json"

    def current(self) -> dict | None:
        """The served version (``None`` when nothing is serving)."""
        state = _read_json(self.current_file)
        return state if state and _alive(state.get("pid")) else None

    def front_door(self) -> dict | None:
        state = _read_json(self.root / "frontdoor.json")
        return state if state and _alive(state.get("pid")) else None

    @property
    def url(self) -> str:
        door = self.front_door() or {"port": self.port or (_read_json(self.root / "frontdoor.json") or {}).get("port")}
        return f"http://127.0.0.1:{door['port']}"

    def _ready(self, base_url: str) -> bool:
        return _get(f"{base_url}/v2/models/{self.model}/ready")[0] == 200

    # -- deploy ------------------------------------------------------------------------------------

    def deploy(
        self,
        version: int,
        model_uri: str,
        *,
        package_arn: str = "",
        fetch: Callable[[str, Path], None] | None = None,
        smoke_test: Callable[[str], str | None] | None = None,
    ) -> dict:
        """Serve ``version`` behind the front door; returns what is served.

        :param version: model package version.
        :param model_uri: ``s3://.../model.tar.gz`` (downloaded with ``fetch``), a local tarball or a directory.
        :param package_arn: recorded in ``current.json``.
        :param fetch: ``fetch(s3_uri, local_path)`` downloads an S3 object (the S3 hook's download).
        :param smoke_test: ``smoke_test(base_url)`` returns a problem or ``None``; run before the switch.
        """
        with self._lock():
            live = self.current()
            if live and int(live["version"]) == int(version) and self._ready(live["url"]):
                self.ensure_front_door()
                return {**self._describe(live), "outcome": "unchanged"}
            model_dir = self._materialize(int(version), model_uri, fetch)
            new = self._start(int(version), model_dir, package_arn, model_uri)
            try:
                self._wait_ready(new)
                problem = smoke_test(new["url"]) if smoke_test else None
                if problem:
                    raise RuntimeError(f"smoke test of version {version} at {new['url']} failed: {problem}")
                self.ensure_front_door()
            except BaseException:
                _stop(new["pid"])  # a failed swap leaves nothing running; the old version still serves
                raise
            if live:
                _write_json(self.root / "previous.json", live)
            _write_json(self.current_file, new)
            self._confirm_switch(new)
            if live:
                time.sleep(self.drain_seconds)  # requests already at the old server finish
                _stop(live["pid"])
            return {**self._describe(new), "outcome": "deployed", "replaced": live and live["version"]}

    @contextlib.contextmanager
    def standalone(self, version: int, model_uri: str, *, fetch: Callable[[str, Path], None] | None = None):
        """A predictor for ``version`` outside the front door (batch scoring): yields its base URL and
        stops it on the way out. Nothing the front door serves is touched."""
        model_dir = self._materialize(int(version), model_uri, fetch)
        state = self._start(int(version), model_dir, "", model_uri)
        try:
            self._wait_ready(state)
            yield state["url"]
        finally:
            _stop(state["pid"])

    def remove_version(self, version: int) -> dict:
        """Remove a version that no longer serves: stop its predictor if it still runs (a deploy interrupted
        while draining it) and delete its unpacked model (``v<N>/``). The served version is refused.

        :returns: ``{"version", "stopped_pid" (or None), "files_removed"}``
        """
        version = int(version)
        with self._lock():
            live = self.current()
            if live and int(live["version"]) == version:
                raise ValueError(f"version {version} of {self.model} is the one serving; deploy another first")
            stopped = None
            previous = _read_json(self.root / "previous.json")
            if previous and int(previous.get("version", -1)) == version:
                if _alive(previous.get("pid")):
                    _stop(previous["pid"])
                    stopped = previous["pid"]
                (self.root / "previous.json").unlink(missing_ok=True)
            vdir = self.root / f"v{version}"
            existed = vdir.is_dir()
            shutil.rmtree(vdir, ignore_errors=True)
            return {"version": version, "stopped_pid": stopped, "files_removed": existed}

    def _describe(self, state: dict) -> dict:
        return {
            "region": "local",
            "version": int(state["version"]),
            "package_arn": state.get("package_arn", ""),
            "storage_uri": state.get("model_uri", ""),
            "url": self.url,
            "upstream": state["url"],
        }

    @contextlib.contextmanager
    def _lock(self):
        with open(self.root / "deploy.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _materialize(self, version: int, model_uri: str, fetch) -> Path:
        vdir = self.root / f"v{version}"
        model_dir = vdir / "model"
        if model_dir.is_dir() and any(model_dir.iterdir()):
            return model_dir
        vdir.mkdir(parents=True, exist_ok=True)
        source = Path(model_uri)
        if model_uri.startswith("s3://"):
            if fetch is None:
                raise ValueError(f"{model_uri} is in S3: pass fetch= (an S3 download) to deploy()")
            source = vdir / "model.tar.gz"
            fetch(model_uri, source)
        staging = vdir / "model.partial"
        shutil.rmtree(staging, ignore_errors=True)
        if source.is_dir():
            shutil.copytree(source, staging)
        else:
            staging.mkdir()
            with tarfile.open(source, "r:*") as tar:
                tar.extractall(staging, filter="data")
        os.replace(staging, model_dir)
        return model_dir

    def _start(self, version: int, model_dir: Path, package_arn: str, model_uri: str) -> dict:
        http_port, grpc_port = free_port(), free_port()
        cmd = [
            self.python, "-m", "predictor",
            "--model-name", self.model,
            "--model-uri", str(model_dir),
            "--model-version", str(version),
            "--http-port", str(http_port),
            "--grpc-port", str(grpc_port),
        ]
        if self.capture_bucket:
            cmd += ["--capture-bucket", self.capture_bucket, "--capture-flush-seconds",
                    os.environ.get("HYBRID_MLOPS_CAPTURE_FLUSH_SECONDS", "30")]
        if self.id_column:
            cmd += ["--id-column", self.id_column]
        log_path = self.root / f"v{version}" / "server.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, cwd=self.serving_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the task; stopped by the next swap
            )
        return {
            "version": version, "package_arn": package_arn, "model_uri": model_uri, "model_dir": str(model_dir),
            "pid": proc.pid, "http_port": http_port, "grpc_port": grpc_port,
            "url": f"http://127.0.0.1:{http_port}", "log": str(log_path),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _wait_ready(self, state: dict) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not _alive(state["pid"]):
                raise RuntimeError(f"predictor version {state['version']} exited: {self._log_tail(state)}")
            if self._ready(state["url"]):
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"predictor version {state['version']} not ready on {state['url']} within {self.ready_timeout:.0f}s: "
            f"{self._log_tail(state)}"
        )

    @staticmethod
    def _log_tail(state: dict) -> str:
        with contextlib.suppress(OSError):
            return Path(state["log"]).read_text(errors="replace")[-2000:]
        return ""

    def _confirm_switch(self, new: dict, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = _get(f"{self.url}/-/upstream")
            if status == 200 and json.loads(body).get("pid") == new["pid"]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"front door {self.url} did not switch to version {new['version']}")

    # -- front door --------------------------------------------------------------------------------

    def ensure_front_door(self, timeout: float = 15.0) -> dict:
        """Start the proxy unless ours runs on the wanted port; returns ``{"pid", "port", "token"}``."""
        door = self.front_door()
        if door and (self.port is None or door["port"] == self.port) and self._is_ours(door):
            return door
        if door:  # the port setting changed, or the pid is no longer our proxy
            _stop(door["pid"])
        errors = []
        for port in self._port_candidates():
            try:
                return self._start_front_door(port, timeout)
            except PortTaken as err:
                errors.append(str(err))
                if self.port is not None:
                    break
        raise RuntimeError(f"no front door for {self.model}: " + "; ".join(errors)
                           + ("" if self.port is None else "; free that port or set HYBRID_MLOPS_SERVING_PORT to another"))

    def _port_candidates(self):
        if self.port is not None:
            yield self.port
            return
        stored = (_read_json(self.root / "frontdoor.json") or {}).get("port")
        if stored:
            yield int(stored)
        base = FRONT_DOOR_BASE_PORT + zlib.crc32(self.model.encode()) % 500
        yield from (base + 2 * i for i in range(5))
        yield free_port()

    @staticmethod
    def _is_ours(door: dict) -> bool:
        status, body = _get(f"http://127.0.0.1:{door['port']}/-/health")
        with contextlib.suppress(ValueError):
            return status == 200 and json.loads(body).get("token") == door.get("token")
        return False

    def _start_front_door(self, port: int, timeout: float) -> dict:
        token = os.urandom(16).hex()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS_DIR), os.environ.get("PYTHONPATH")])),
               "HYBRID_MLOPS_FRONT_DOOR_TOKEN": token}
        with open(self.root / "frontdoor.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hybrid_mlops.local.serving", "front-door",
                 "--state", str(self.root), "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        door = {"pid": proc.pid, "port": int(port), "token": token}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PortTaken(f"port {port} is held by another program (the front door could not bind it)")
            if self._is_ours(door):
                _write_json(self.root / "frontdoor.json", door)
                return door
            time.sleep(0.05)
        _stop(proc.pid)
        raise PortTaken(f"front door did not answer on port {port} within {timeout}s")

    def stop(self) -> None:
        """Stop the predictor and the front door (tests, ``make down``)."""
        for state in (_read_json(self.current_file), _read_json(self.root / "frontdoor.json")):
            if state:
                _stop(state.get("pid"))
        for name in ("current.json", "frontdoor.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()


# -- the front door process ---------------------------------------------------------------------------


class _Upstream:
    """``current.json``, re-read when its mtime changes."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp = None
        self.state: dict | None = None

    def get(self) -> dict | None:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if stamp != self._stamp:
            self.state, self._stamp = _read_json(self.path), stamp
        return self.state


def serve_front_door(state_dir: Path, port: int) -> None:
    upstream = _Upstream(Path(state_dir) / "current.json")
    health = json.dumps({"status": "ok", "token": os.environ.get("HYBRID_MLOPS_FRONT_DOOR_TOKEN", "")}).encode()

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _reply(self, code: int, body: bytes, headers: dict | None = None) -> None:
            self.send_response(code)
            for key, value in (headers or {"Content-Type": "application/json"}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self) -> None:
            if self.path == "/-/health":
                return self._reply(200, health)
            if self.path == "/-/upstream":
                state = upstream.get()
                return self._reply(200 if state else 503, json.dumps(state or {}).encode())
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            deadline = time.monotonic() + 10
            while True:
                state = upstream.get()
                if not state:
                    return self._reply(503, b'{"error": "no model version is being served"}')
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", state["http_port"], timeout=60)
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    conn.close()
                except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
                    # The upstream is going away: a swap has (or is about to have) named the next one.
                    if time.monotonic() > deadline:
                        return self._reply(502, b'{"error": "no upstream answered"}')
                    time.sleep(0.05)
                    continue
                out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}}
                out["X-Model-Version"] = str(state["version"])
                return self._reply(resp.status, data, out)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", port), Proxy)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hybrid_mlops.local.serving")
    sub = parser.add_subparsers(dest="command", required=True)
    door = sub.add_parser("front-door", help="run the stable local endpoint (a reverse proxy)")
    door.add_argument("--state", required=True, help="directory holding current.json")
    door.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve_front_door(Path(args.state), args.port)


if __name__ == "__main__":
    main()


def s3_fetch(aws_conn_id: str | None = None) -> Callable[[str, Path], None]:
    """``fetch(s3_uri, path)`` through the Amazon provider's S3 hook (the moto server on ``local``)."""

    def fetch(uri: str, path: Path) -> None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=aws_conn_id)
        bucket, key = hook.parse_s3_url(uri)
        hook.get_key(key, bucket).download_file(str(path))

    return fetch
