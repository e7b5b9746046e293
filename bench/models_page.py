"""Models page load time on the local target: 10 models x 50 registry versions on a moto server.

Seeds the fleet (registry versions with metadata and ModelLifeCycle, deployment records, 24 hourly drift
reports per model, yesterday's cost.json), then times ``GET /hybrid-mlops/models`` through Airflow's
api-server app (the plugin's FastAPI app mounted as the api-server mounts it, a JWT from the auth
manager): the first load (cold caches, the first request to the app) and the median of the next ones
(warm), beside a naive peer that reads the same facts one request after another (list, then one describe
and one mirror read per version, a full listing of each model's monitoring reports, the cost report).
Prints the load average: the figures mean little on a busy machine.

    .venv/bin/python bench/models_page.py [--models 10] [--versions 50] [--loads 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_SECONDS = 1.0


def naive_peer(specs, bucket: str) -> int:
    """The same facts, sequentially: returns the number of requests sent."""
    import boto3

    sm, s3 = boto3.client("sagemaker"), boto3.client("s3")
    sent = 0
    for spec in specs:
        kwargs = {"ModelPackageGroupName": spec.registry.model_package_group, "MaxResults": 100}
        summaries = []
        while True:
            page = sm.list_model_packages(**kwargs)
            sent += 1
            summaries += page["ModelPackageSummaryList"]
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        for s in summaries:
            sm.describe_model_package(ModelPackageName=s["ModelPackageArn"])
            arn = s["ModelPackageArn"].split(":", 5)
            key = f"local-registry-mirror/ModelLifeCycle/{arn[3]}/{arn[4]}/{arn[5].removeprefix('model-package/')}.json"
            s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            sent += 2
        keys, kwargs = [], {"Bucket": bucket, "Prefix": f"monitoring/{spec.name}/"}
        while True:
            page = s3.list_objects_v2(**kwargs)
            sent += 1
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith("report.json")]
            if not page.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        s3.get_object(Bucket=bucket, Key=max(keys))["Body"].read()
        s3.get_object(Bucket=bucket, Key=f"deployments/{spec.name}.json")["Body"].read()
        sent += 2
    day = (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()
    s3.get_object(Bucket=bucket, Key=f"cost-reports/{day}/cost.json")["Body"].read()
    return sent + 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--loads", type=int, default=5, help="warm loads timed after the first")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="models-page-"))
    sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "bench")]
    from dag_parse import specs_folder

    os.environ.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
                      AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
                      AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
                      AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
                      HYBRID_MLOPS_TARGET="local", HYBRID_MLOPS_BUCKET="hybrid-mlops-bench",
                      HYBRID_MLOPS_LOCAL_DIR=str(home / "local"), HYBRID_MLOPS_HOME=str(ROOT),
                      HYBRID_MLOPS_MODELS_DIR=str(specs_folder(args.models)))
    from hybrid_mlops.local.moto import MotoServer

    with MotoServer(log_path=home / "moto.log") as moto:
        moto.apply_environ()
        import boto3

        bucket = os.environ["HYBRID_MLOPS_BUCKET"]
        boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        from hybrid_mlops.local.fleet import seed_cost_report, seed_model
        from hybrid_mlops.specs.model import load_all

        specs, _ = load_all(os.environ["HYBRID_MLOPS_MODELS_DIR"])
        t = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda s: seed_model(s, args.versions), specs))
        day = (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()
        seed_cost_report(specs, day)
        print(f"seeded {len(specs)} models x {args.versions} versions in {time.perf_counter() - t:.1f} s")

        from airflow.utils import db

        db.resetdb()  # the api-server checks each token against its revoked-token table
        from fastapi.testclient import TestClient

        from airflow.api_fastapi.app import create_app, get_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        client = TestClient(create_app(apps="core"))
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
        client.cookies.set("_token", token)

        def load() -> float:
            t0 = time.perf_counter()
            resp = client.get("/hybrid-mlops/models")
            elapsed = time.perf_counter() - t0
            assert resp.status_code == 200 and resp.text.count("class='model'") == len(specs), resp.text[:500]
            return elapsed

        cold = load()
        from hybrid_mlops.ui import app as page

        cold_requests = page.overview().requests
        warm = [load() for _ in range(args.loads)]
        warm_requests = page.overview().requests
        t = time.perf_counter()
        naive_requests = naive_peer(specs, bucket)
        naive = time.perf_counter() - t
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPU(s)")
    print(f"{'':34}{'seconds':>9}{'describes':>24}")
    print(f"{'Models page, cold (first load)':34}{cold:9.3f}{cold_requests:>24}")
    print(f"{'Models page, warm (median of ' + str(args.loads) + ')':34}{statistics.median(warm):9.3f}{warm_requests:>24}")
    print(f"{'naive peer (sequential describes)':34}{naive:9.3f}{naive_requests:>24} (all requests)")
    ok = cold <= LIMIT_SECONDS and statistics.median(warm) <= LIMIT_SECONDS
    print(f"limit {LIMIT_SECONDS} s per load: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
