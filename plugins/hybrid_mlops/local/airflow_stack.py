"""A real Airflow on loopback for the ``local`` target: ``bin/airflow-local`` runs this module.

What :class:`AirflowStack` starts, each on a free 127.0.0.1 port (printed, and written to
``<state>/stack.json``), with one log per component under ``<state>/logs/``:

- the moto server (the local AWS, :class:`~hybrid_mlops.local.moto.MotoServer`) with the artifacts bucket;
- PostgreSQL (Debian's ``postgresql`` binaries, data under ``<state>/postgres``; run as the ``postgres``
  system user when started by root: PostgreSQL refuses to run as root);
- ``airflow db migrate``, then the api-server (UI and REST API), scheduler (LocalExecutor),
  dag-processor and triggerer, with ``AIRFLOW_HOME=<state>/home``, the repository's ``dags/`` and
  ``plugins/`` folders, no example DAGs, and the ``aws_default`` connection on the moto server.

Sign-in: Airflow's SimpleAuthManager with one admin user; its password is in
``<state>/passwords.json`` (kept across restarts, as is the database). ``<state>`` is
``<HYBRID_MLOPS_LOCAL_DIR>/airflow`` (default ``.local/airflow``).

Foreground by default (Ctrl-C stops every component); ``--detach`` returns once the stack is up and
``stop`` stops a detached one.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hybrid_mlops import settings
from hybrid_mlops.local.moto import MotoServer, free_port

ROOT = Path(__file__).resolve().parents[3]
ADMIN = "admin"
#: Airflow components in start order (each ``airflow <name>``); stopped in the reverse order.
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
#: The ``local`` target's settings as ``bin/demo`` uses them (the caller's environment wins).
LOCAL_SETTINGS = {
    "HYBRID_MLOPS_TARGET": "local",
    "HYBRID_MLOPS_BUCKET": settings.LOCAL_DEFAULTS["HYBRID_MLOPS_BUCKET"],
    "HYBRID_MLOPS_CAPTURE_WAIT_SECONDS": "5",
    "HYBRID_MLOPS_CAPTURE_FLUSH_SECONDS": "2",
}


class StackError(RuntimeError):
    """A component did not start; the message names it and its log."""


def default_state_dir() -> Path:
    return settings.local_state_dir() / "airflow"


def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with ``initdb`` (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise StackError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run bin/setup as root, "
                         "or apt-get install postgresql")
    return Path(found[-1]).parent


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pid: int, name: str, timeout: float = 30.0) -> None:
    """SIGTERM the process group ``pid`` leads (a component and its workers), SIGKILL it after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not _alive(pid):
                return
            time.sleep(0.2)
        if sig == signal.SIGTERM:
            print(f"airflow-local: {name} (pid {pid}) did not stop in {timeout:.0f}s: killing it", file=sys.stderr)


def _get_json(url: str, token: str | None = None, timeout: float = 5.0) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        return json.loads(resp.read())


class AirflowStack:
    """The local Airflow stack: start it, use its URLs, stop it.

    :param state_dir: database, AIRFLOW_HOME, logs, credentials and ``stack.json`` (default
        ``<HYBRID_MLOPS_LOCAL_DIR>/airflow``).
    :param api_port: the api-server's port (a free one when 0).
    :param env: extra environment for every component (wins over the defaults), e.g.
        ``HYBRID_MLOPS_MODELS_DIR``.
    :param base_env: the environment the components inherit (default: this process's).
    """

    def __init__(self, state_dir: str | Path | None = None, *, api_port: int = 0, env: dict[str, str] | None = None,
                 base_env: dict[str, str] | None = None):
        self.state_dir = Path(state_dir or default_state_dir()).resolve()
        self.home = self.state_dir / "home"
        self.logs = self.state_dir / "logs"
        self.pgdata = self.state_dir / "postgres"
        self.state_file = self.state_dir / "stack.json"
        self.passwords_file = self.state_dir / "passwords.json"
        self.ports = {"api": api_port or free_port(), "postgres": free_port(), "moto": free_port(),
                      "worker_logs": free_port(), "trigger_logs": free_port()}
        self.api_url = f"http://127.0.0.1:{self.ports['api']}"
        self.extra_env = dict(env or {})
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.moto: MotoServer | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self._postgres_started = False
        self._airflow = str(Path(sys.executable).parent / "airflow")

    # -- what a client needs -----------------------------------------------------------------------------------
    @property
    def moto_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['moto']}"

    @property
    def password(self) -> str:
        return json.loads(self.passwords_file.read_text())[ADMIN]

    def token(self) -> str:
        """A JWT for the REST API (``POST /auth/token`` with the admin's password)."""
        body = json.dumps({"username": ADMIN, "password": self.password}).encode()
        req = urllib.request.Request(f"{self.api_url}/auth/token", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["access_token"]

    def describe(self) -> dict:
        return {
            "ui": self.api_url, "rest_api": f"{self.api_url}/api/v2", "user": ADMIN,
            "passwords_file": str(self.passwords_file), "ports": self.ports, "moto": self.moto_url,
            "database": self.sql_alchemy_conn, "airflow_home": str(self.home), "logs": str(self.logs),
            "dags_folder": str(ROOT / "dags"), "plugins_folder": str(ROOT / "plugins"),
            "models_dir": self.environ().get("HYBRID_MLOPS_MODELS_DIR", str(settings.MODELS_DIR)),
        }

    @property
    def sql_alchemy_conn(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.ports['postgres']}/airflow"

    def _secrets(self) -> dict:
        """Keys kept across restarts (the database's connections are encrypted with the Fernet key)."""
        path = self.state_dir / "secrets.json"
        if path.exists():
            return json.loads(path.read_text())
        from cryptography.fernet import Fernet

        keys = {"fernet_key": Fernet.generate_key().decode(), "secret_key": secrets.token_urlsafe(32),
                "jwt_secret": secrets.token_urlsafe(48)}
        path.touch(mode=0o600)
        path.write_text(json.dumps(keys))
        return keys

    def environ(self) -> dict[str, str]:
        """The environment of every Airflow component."""
        keys = self._secrets()
        env = dict(self.base_env)
        for name, value in LOCAL_SETTINGS.items():
            env.setdefault(name, value)
        env.setdefault("HYBRID_MLOPS_LOCAL_DIR", str(settings.local_state_dir()))
        env.update(MotoServer(port=self.ports["moto"]).environ(env.get("HYBRID_MLOPS_REGION", settings.region())))
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn,
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.ports["api"]),
            "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports["worker_logs"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports["trigger_logs"]),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        })
        env.setdefault("AIRFLOW__API__WORKERS", "1")
        env.setdefault("AIRFLOW__CORE__PARALLELISM", "8")
        env.update(self.extra_env)
        return env

    # -- start / stop -----------------------------------------------------------------------------------------
    def start(self, timeout: float = 300.0) -> AirflowStack:
        """Start every component and wait until the api-server reports them all healthy."""
        self._refuse_if_running()
        for d in (self.home, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        if not self.passwords_file.exists():
            self.passwords_file.touch(mode=0o600)
            self.passwords_file.write_text(json.dumps({ADMIN: secrets.token_urlsafe(12)}))
        deadline = time.monotonic() + timeout
        try:
            self._start_moto()
            self._start_postgres()
            self._run("db-migrate", [self._airflow, "db", "migrate"], timeout=max(60.0, deadline - time.monotonic()))
            for name in COMPONENTS:
                self._spawn(name, [self._airflow, name])
            self._write_state()
            self.wait_healthy(max(30.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def _refuse_if_running(self) -> None:
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text())
            if _alive(state.get("pid")) and state.get("pid") != os.getpid():
                raise StackError(f"a stack already runs from {self.state_dir} (pid {state['pid']}, "
                                 f"{state['describe']['ui']}): stop it first (bin/airflow-local stop)")

    def _start_moto(self) -> None:
        import boto3

        self.moto = MotoServer(port=self.ports["moto"], log_path=self.logs / "moto.log").start()
        env = self.environ()
        s3 = boto3.client("s3", endpoint_url=self.moto_url, region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=env["HYBRID_MLOPS_BUCKET"],
                         CreateBucketConfiguration={"LocationConstraint": env["AWS_DEFAULT_REGION"]})

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        """PostgreSQL refuses to run as root: root runs its programs as the ``postgres`` system user."""
        if os.geteuid() != 0:
            return cmd
        return ["runuser", "-u", "postgres", "--", *cmd]

    def _start_postgres(self) -> None:
        pg = postgres_bin()
        if os.geteuid() == 0:
            self.pgdata.mkdir(exist_ok=True)
            shutil.chown(self.pgdata, "postgres", "postgres")
            self.pgdata.chmod(0o700)
            # the postgres user must reach its data dir: let it traverse (not list) the folders above
            for parent in self.pgdata.parents:
                if parent == Path(parent.anchor):
                    break
                if parent.stat().st_uid == 0 and not parent.stat().st_mode & 0o001:
                    if parent in (self.state_dir, self.state_dir.parent):
                        parent.chmod(parent.stat().st_mode | 0o001)
                    else:
                        raise StackError(f"{parent} is not traversable by the postgres user; put the state dir "
                                         "(HYBRID_MLOPS_LOCAL_DIR) where it is")
        if not (self.pgdata / "PG_VERSION").exists():
            self._run("initdb", self._as_postgres([str(pg / "initdb"), "-D", str(self.pgdata), "-U", "airflow",
                                                   "--auth=trust", "-E", "UTF8", "--no-sync"]))
        opts = (f"-p {self.ports['postgres']} -c listen_addresses=127.0.0.1 -k {self.pgdata} "
                "-c synchronous_commit=off -c max_connections=200")
        self._run("postgres", self._as_postgres([str(pg / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60",
                                                 "-o", opts, "-l", str(self.pgdata / "server.log"), "start"]))
        self._postgres_started = True
        created = subprocess.run([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(self.ports["postgres"]),
                                  "-U", "airflow", "airflow"], capture_output=True, text=True)
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise StackError(f"createdb airflow failed: {created.stderr.strip()}")

    def _run(self, name: str, cmd: list[str], timeout: float = 120.0) -> None:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.environ(), cwd=self.state_dir,
                                  timeout=timeout)
        if proc.returncode != 0:
            raise StackError(f"{name} failed (exit {proc.returncode}): see {log}\n{self._tail(log)}")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.logs / f"{name}.log", "ab")
        # its own process group: Ctrl-C reaches only this launcher, which stops the components in order
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.environ(), cwd=self.state_dir, start_new_session=True)
        out.close()

    @staticmethod
    def _tail(log: Path, lines: int = 20) -> str:
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def health(self) -> dict:
        return _get_json(f"{self.api_url}/api/v2/monitor/health")

    def wait_healthy(self, timeout: float = 180.0) -> dict:
        """Wait until the metadatabase, scheduler, triggerer and dag-processor all report healthy."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log = self.logs / f"{name}.log"
                    raise StackError(f"airflow {name} exited with {proc.returncode}: see {log}\n{self._tail(log)}")
            try:
                last = self.health()
                if all(last.get(c, {}).get("status") == "healthy"
                       for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")):
                    return last
            except (OSError, ValueError):
                pass
            time.sleep(1)
        raise StackError(f"the stack did not report healthy within {timeout:.0f}s (last: {last}); logs in {self.logs}")

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "describe": self.describe(),
                 "pids": {"moto": self.moto._proc.pid if self.moto and self.moto._proc else None,
                          **{n: p.pid for n, p in self.procs.items()}}}
        self.state_file.write_text(json.dumps(state, indent=2))

    def stop(self) -> None:
        """Stop the components (newest first), the models it served locally, PostgreSQL and moto."""
        try:
            for name in reversed(list(self.procs)):
                _stop_group(self.procs[name].pid, name)
                self.procs[name].wait()
            self.procs.clear()
        finally:
            self._stop_local_serving()
        if self._postgres_started:
            subprocess.run(self._as_postgres([str(postgres_bin() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast",
                                              "-w", "stop"]), capture_output=True)
            self._postgres_started = False
        if self.moto:
            self.moto.stop()
            self.moto = None
        if self.state_file.exists() and json.loads(self.state_file.read_text()).get("pid") == os.getpid():
            self.state_file.unlink()

    def _stop_local_serving(self) -> None:
        """The deploy tasks' model servers outlive their tasks (own sessions): stop those of this stack's models."""
        state = Path(self.environ()["HYBRID_MLOPS_LOCAL_DIR"]) / "serving"
        from hybrid_mlops.local.serving import LocalServing

        # every model this stack served (one folder each), whether or not its spec is still there
        for model_dir in sorted(p for p in state.glob("*") if p.is_dir()):
            try:
                LocalServing(model_dir.name, state_dir=model_dir).stop()
            except Exception as err:  # noqa: BLE001 - stopping the rest matters more
                print(f"airflow-local: stopping the {model_dir.name} model server failed: {err}", file=sys.stderr)

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_detached(state_dir: Path, timeout: float = 120.0) -> bool:
    """Stop the stack a detached launcher runs from ``state_dir`` (SIGTERM to it); False when none runs."""
    state_file = state_dir / "stack.json"
    if not state_file.exists():
        return False
    pid = json.loads(state_file.read_text()).get("pid")
    if not _alive(pid):
        state_file.unlink()
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    return not _alive(pid)


def _print_ready(stack: AirflowStack, seconds: float) -> None:
    d = stack.describe()
    print(f"\nairflow-local: up in {seconds:.0f}s\n"
          f"  UI / REST API  {d['ui']}  (REST: {d['rest_api']}, token: POST {d['ui']}/auth/token)\n"
          f"  sign in        {d['user']} / {stack.password}  (password in {d['passwords_file']})\n"
          f"  local AWS      {d['moto']}  (moto server; aws_default points at it)\n"
          f"  database       {d['database']}\n"
          f"  DAGs           {d['dags_folder']}  (specs: {d['models_dir']})\n"
          f"  logs           {d['logs']}\n"
          f"  state          {stack.state_file}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/airflow-local", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["start", "stop"], default="start")
    parser.add_argument("--detach", action="store_true", help="return once the stack is up; `stop` stops it")
    parser.add_argument("--port", type=int, default=0, help="the UI / REST API port (default: a free one)")
    parser.add_argument("--state-dir", type=Path, default=None, help="default: <HYBRID_MLOPS_LOCAL_DIR>/airflow")
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or default_state_dir()).resolve()

    if args.command == "stop":
        stopped = stop_detached(state_dir)
        print("airflow-local: stopped" if stopped else f"airflow-local: no stack runs from {state_dir}")
        return 0
    if args.detach:  # the same launcher, in its own session, logging to a file; back once it is up
        state_dir.mkdir(parents=True, exist_ok=True)
        log = state_dir / "airflow-local.log"
        cmd = [sys.executable, "-m", "hybrid_mlops.local.airflow_stack", "start", "--state-dir", str(state_dir)]
        if args.port:
            cmd += ["--port", str(args.port)]
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        while proc.poll() is None:
            with open(log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            if "airflow-local: up in" in text:
                print(text.split("Ctrl-C stops it.")[0].strip())
                print("Stop it with: bin/airflow-local stop")
                return 0
            time.sleep(1)
        print(f"airflow-local: the stack did not start (exit {proc.returncode}); see {log}", file=sys.stderr)
        print(AirflowStack._tail(log, 30), file=sys.stderr)
        return 1

    stack = AirflowStack(state_dir, api_port=args.port)
    print(f"airflow-local: starting (state in {state_dir})", flush=True)
    started = time.monotonic()

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        stack.start()
        _print_ready(stack, time.monotonic() - started)
        print("Ctrl-C stops it.", flush=True)
        while all(p.poll() is None for p in stack.procs.values()):
            time.sleep(1)
        dead = [n for n, p in stack.procs.items() if p.poll() is not None]
        print(f"airflow-local: {', '.join(dead)} exited; see {stack.logs}; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nairflow-local: stopping", flush=True)
        return 0
    except StackError as err:
        print(f"airflow-local: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second Ctrl-C / TERM must not cut the shutdown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        print("airflow-local: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
