"""A real Airflow for tests: the stack ``bin/airflow-local`` starts, and a small client of its REST API.

The session fixture ``airflow_stack`` (tests/conftest.py) starts one :class:`AirflowStack` (api-server,
scheduler with LocalExecutor, dag-processor, triggerer, PostgreSQL, moto server) over a small fleet
(:func:`small_models_dir`) and yields a :class:`RealAirflow`: its URLs, a JWT, a REST client and boto3
clients on the stack's moto server. Tests of the UI (a browser) use the same running stack.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from hybrid_mlops.local.airflow_stack import AirflowStack, _alive as _process_alive

ROOT = Path(__file__).resolve().parents[1]
MODEL = "fraud-detection"
BUCKET = "hybrid-mlops-e2e"
#: An external Model Monitor schedule's output prefix: the spec then also gets a ``watch_<model>`` DAG.
EXTERNAL_REPORTS = f"s3://{BUCKET}/model-monitor/{MODEL}/"
TERMINAL = ("success", "failed")


def small_models_dir(path: Path) -> Path:
    """The reference spec with a budget that trains in seconds, and rules no small model meets (a person decides)."""
    spec = yaml.safe_load((ROOT / "include" / "models" / f"{MODEL}.yaml").read_text())
    spec["data"]["source"].update(rows=4000, validation_rows=1500)
    spec["schedule"]["retrain"] = None  # drift events only: unpausing it starts no run for the last cron tick
    spec["training"]["local"]["hyperparameters"].update({"epochs": 3, "batch-size": 256, "learning-rate": 0.01})
    spec["approval"]["rules"] = {"accuracy": {"approve_at": 0.9999, "reject_below": 0.1},
                                 "roc_auc": {"approve_at": 0.9999, "reject_below": 0.1}}
    spec["drift"]["external_report_prefix"] = EXTERNAL_REPORTS
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{MODEL}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class AirflowApiError(RuntimeError):
    pass


class AirflowClient:
    """The few ``/api/v2`` calls the tests make, with a JWT from ``POST /auth/token`` (renewed on 401)."""

    def __init__(self, base_url: str, token_factory):
        self.base_url, self._token_factory, self._token = base_url.rstrip("/"), token_factory, None

    def request(self, method: str, path: str, body: dict | None = None, *, query: dict | None = None):
        url = f"{self.base_url}/api/v2{path}" + (f"?{urllib.parse.urlencode(query, doseq=True)}" if query else "")
        for attempt in (1, 2):
            self._token = self._token or self._token_factory()
            req = urllib.request.Request(url, None if body is None else json.dumps(body).encode(), method=method,
                                         headers={"Authorization": f"Bearer {self._token}",
                                                  "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    raw = resp.read()
                    return json.loads(raw) if raw else None
            except urllib.error.HTTPError as err:
                if err.code == 401 and attempt == 1:
                    self._token = None
                    continue
                raise AirflowApiError(f"{method} {path}: {err.code} {err.read().decode(errors='replace')[:2000]}") from None

    # -- DAGs and runs ---------------------------------------------------------------------------------------
    def dags(self) -> dict[str, dict]:
        return {d["dag_id"]: d for d in self.request("GET", "/dags", query={"limit": 1000})["dags"]}

    def import_errors(self) -> list[dict]:
        return self.request("GET", "/importErrors")["import_errors"]

    def wait_for_dags(self, dag_ids, timeout: float = 120.0) -> dict[str, dict]:
        """Wait until the dag-processor has parsed ``dag_ids``; an import error fails at once, quoted."""
        deadline = time.monotonic() + timeout
        while True:
            dags = self.dags()
            if not set(dag_ids) - set(dags):
                return dags
            if errors := self.import_errors():
                raise AirflowApiError("DAG import errors: " + "\n".join(f"{e['filename']}: {e['stack_trace'][-1500:]}"
                                                                        for e in errors))
            if time.monotonic() > deadline:
                raise AirflowApiError(f"DAGs {sorted(set(dag_ids) - set(dags))} not parsed within {timeout}s")
            time.sleep(1)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, **body) -> dict:
        """``POST /dags/{dag_id}/dagRuns``; ``logical_date`` is null unless given (what the UI sends)."""
        return self.request("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}, **body})

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def runs(self, dag_id: str, **query) -> list[dict]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns", query={"order_by": "id", **query})["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, states=TERMINAL, timeout: float = 180.0) -> dict:
        deadline = time.monotonic() + timeout
        while (run := self.run(dag_id, run_id))["state"] not in states:
            if time.monotonic() > deadline:
                raise AirflowApiError(f"{dag_id} run {run_id} is {run['state']} after {timeout}s: "
                                      f"{self.task_states(dag_id, run_id)}")
            time.sleep(1)
        return run

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances",
                            query={"limit": 1000})["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``{task_id: state}`` (a mapped task: ``task_id[i]``)."""
        return {ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
                for ti in self.task_instances(dag_id, run_id)}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        path = (f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
                f"/xcomEntries/{key}")
        return self.request("GET", path, query={"deserialize": "true"})["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}"
        content = self.request("GET", path, query={"full_content": "true"})["content"]
        return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)

    # -- human in the loop -----------------------------------------------------------------------------------
    def hitl_details(self, dag_id: str = "~", run_id: str = "~", *, pending: bool = True) -> list[dict]:
        query = {"response_received": "false"} if pending else {}
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/hitlDetails",
                            query=query)["hitl_details"]

    def wait_for_hitl(self, dag_id: str, run_id: str, timeout: float = 180.0, settle: float = 3.0) -> dict:
        """The run's pending human-in-the-loop request, once its task has parked (fails fast if the run ends first).

        Answered too early, Airflow 3.3.1 loses the answer: the request exists a moment before the task parks
        in ``awaiting_input``, and an answer that resumes the task before the scheduler has processed the
        executor's event for the parking process makes the scheduler fail that try ("finished with state
        success, but the task instance's state attribute is queued"); the retry asks again. So, as a person
        would, this answers a parked task only: ``awaiting_input``, its process gone (the stack runs on this
        machine), and ``settle`` seconds for the scheduler's next loop.
        """
        deadline = time.monotonic() + timeout
        while True:
            for detail in self.hitl_details(dag_id, run_id):
                ti = detail["task_instance"]
                if ti["state"] == "awaiting_input" and not _process_alive(ti.get("pid")):
                    time.sleep(settle)
                    return detail
            run = self.run(dag_id, run_id)
            if run["state"] in TERMINAL or time.monotonic() > deadline:
                raise AirflowApiError(f"{dag_id} run {run_id} ({run['state']}) asked no person: "
                                      f"{self.task_states(dag_id, run_id)}")
            time.sleep(1)

    def answer_hitl(self, detail: dict, chosen: list[str], params_input: dict | None = None) -> dict:
        ti = detail["task_instance"]
        path = (f"/dags/{ti['dag_id']}/dagRuns/{urllib.parse.quote(ti['dag_run_id'], safe='')}/taskInstances/"
                f"{ti['task_id']}/{ti['map_index']}/hitlDetails")
        return self.request("PATCH", path, {"chosen_options": chosen, "params_input": params_input or {}})

    # -- assets ----------------------------------------------------------------------------------------------
    def asset_events(self, uri: str) -> list[dict]:
        assets = self.request("GET", "/assets", query={"uri_pattern": uri})["assets"]
        asset = next(a for a in assets if a["uri"] == uri)
        return self.request("GET", "/assets/events", query={"asset_id": asset["id"], "order_by": "id"})["asset_events"]

    def post_asset_event(self, uri: str, extra: dict) -> dict:
        assets = self.request("GET", "/assets", query={"uri_pattern": uri})["assets"]
        asset = next(a for a in assets if a["uri"] == uri)
        return self.request("POST", "/assets/events", {"asset_id": asset["id"], "extra": extra})


class RealAirflow:
    """What a test gets from the ``airflow_stack`` fixture."""

    def __init__(self, stack: AirflowStack, models_dir: Path, start_seconds: float):
        self.stack, self.models_dir, self.start_seconds = stack, models_dir, start_seconds
        self.base_url = stack.api_url
        self.api = AirflowClient(stack.api_url, stack.token)
        env = stack.environ()
        self.bucket, self.region = env["HYBRID_MLOPS_BUCKET"], env["AWS_DEFAULT_REGION"]
        self.local_dir = Path(env["HYBRID_MLOPS_LOCAL_DIR"])

    @property
    def username(self) -> str:
        from hybrid_mlops.local.airflow_stack import ADMIN

        return ADMIN

    @property
    def password(self) -> str:
        return self.stack.password

    def token(self) -> str:
        return self.stack.token()

    def close(self, keep_logs: bool = False) -> None:
        """Stop the stack; remove its state dir, or only its database when the logs may explain a failure."""
        self.stack.stop()
        shutil.rmtree(self.stack.pgdata if keep_logs else self.stack.state_dir.parent, ignore_errors=True)
        print(f"\nreal Airflow stopped (keep_logs={keep_logs})")
        if keep_logs:
            print(f"\nreal Airflow logs kept in {self.stack.logs} and {self.stack.home / 'logs'}")

    def client(self, service: str):
        """A boto3 client on the stack's moto server (what the DAGs' ``aws_default`` reaches)."""
        import boto3

        return boto3.client(service, endpoint_url=self.stack.moto_url, region_name=self.region,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            aws_session_token="testing")


def start_real_airflow(state_dir: Path | None = None) -> RealAirflow:
    """Start the stack over :func:`small_models_dir` in a fresh state dir; its DAGs parsed, none with an error."""
    # PostgreSQL runs as the postgres user when this is root: a fresh folder it may traverse
    state_dir = Path(state_dir or tempfile.mkdtemp(prefix="hybrid-mlops-airflow-stack-"))
    state_dir.chmod(0o711)
    models_dir = small_models_dir(state_dir / "models")
    # this process's Airflow settings (tests/conftest.py: sqlite, unit-test mode) are not the stack's
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "HYBRID_MLOPS_"))}
    env = {"HYBRID_MLOPS_MODELS_DIR": str(models_dir), "HYBRID_MLOPS_BUCKET": BUCKET,
           "HYBRID_MLOPS_LOCAL_DIR": str(state_dir / "local"), "HYBRID_MLOPS_REPORT_WAIT_SECONDS": "5",
           "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}
    started = time.monotonic()
    stack = AirflowStack(state_dir / "airflow", env=env, base_env=base_env).start()
    return RealAirflow(stack, models_dir, time.monotonic() - started)
