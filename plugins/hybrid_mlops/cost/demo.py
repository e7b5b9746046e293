"""The local target's cost data: realistic Cost Explorer answers, training jobs and capture, on moto.

moto answers ``GetCostAndUsage`` from a queue of injected results (``/moto-api/static/ce/cost-and-usage-results``):
each request body it has not seen takes the next result, and a body it has seen gets the same result again.
So :func:`seed_local_costs` queues, for each day to be reported and in the order the report sends them, the
pages of the three queries of :func:`hybrid_mlops.cost.explorer.plan_queries`. A re-run of a day sends
the same bodies and gets the same answers; every new day takes new results.

moto's training jobs run nothing and report no ``TrainingTimeInSeconds`` / ``BillableTimeInSeconds``; the
seeded jobs carry theirs in ``hybrid-mlops:local:*`` tags, which the local target's hook reads (the maths
afterwards is the same code for both targets).

The figures: a model retrained daily on 2 × ml.g5.2xlarge spot (about 3 h run, 60-70 % saved), served
on GPU spot nodes in each region's EKS cluster around the clock, small S3 and processing costs, shared
system nodes without a model tag, the last two days of each run's window "Estimated" (3 % lower than final).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import urllib.parse
import urllib.request
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

from hybrid_mlops import layout, settings
from hybrid_mlops.cost import explorer
from hybrid_mlops.cost.pricing import pinned_price
from hybrid_mlops.naming import resource_name

ESTIMATE_FACTOR = 0.97
REGION_CODES = {"us-west-2": "USW2", "us-east-1": "USE1", "eu-west-1": "EU", "ap-northeast-2": "APN2"}


def _rng(*parts: Any) -> random.Random:
    return random.Random(int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:12], 16))


def training_job_plan(model: dict, spec_training: dict, day: date) -> dict[str, Any]:
    """The seeded daily retrain of ``model`` on ``day``: timings, instances and its version."""
    r = _rng("job", model["name"], day)
    training = int(9000 + r.random() * 3600)
    billable = int(training * (0.30 + r.random() * 0.1)) if spec_training["spot"] else training
    version = str(100 + (day - date(2026, 1, 1)).days)
    start = datetime.combine(day, time(3, 5), tzinfo=timezone.utc)
    return {
        "job_name": resource_name(model["name"], "train", f"{day:%Y%m%d}-demo"),
        "model": model["name"],
        "version": version,
        "instance_type": spec_training["instance_type"],
        "instance_count": spec_training["instance_count"],
        "spot": spec_training["spot"],
        "training_seconds": training,
        "billable_seconds": billable,
        "start_time": start,
        "end_time": start + timedelta(seconds=training + 240),
    }


def daily_truth(model: dict, spec_training: dict, day: date, spike: dict | None = None) -> dict[str, list]:
    """Final cost of one model on one day, as Cost Explorer groups it: ``{query: [(keys, usd)]}``."""
    r = _rng("cost", model["name"], day)
    region = model["regions"][0]
    code = REGION_CODES.get(region, "USW2")
    job = training_job_plan(model, spec_training, day)
    price = pinned_price(region, job["instance_type"]) or 1.0
    train_usd = job["billable_seconds"] * job["instance_count"] * price / 3600 * (1 + r.uniform(-0.01, 0.01))
    factor = (spike or {}).get("factor", 1.0) if (spike or {}).get("day") == day.isoformat() else 1.0
    name = model["name"]
    out = {
        "sagemaker": [
            ((f"{code}-Train:{job['instance_type']}", f"model${name}"), train_usd),
            ((f"{code}-Train:VolumeUsage.gp2", f"model${name}"), 0.016 * job["instance_count"] * 50 * 3.5 / 24),
            ((f"{code}-Processing:ml.m5.xlarge", f"model${name}"), 0.92 + r.uniform(-0.1, 0.1)),
        ],
        "eks": [],
        "s3": [
            ((f"model${name}", f"{code}-TimedStorage-INT-FA-ByteHrs"), 0.38 + 0.004 * (day.toordinal() % 30)),
            ((f"model${name}", f"{code}-Requests-Tier1"), 0.05 + r.uniform(0, 0.02)),
            (("model$", f"{code}-TimedStorage-ByteHrs"), 0.21),
        ],
    }
    for reg in model["regions"]:
        gpu = 2 * 24 * (0.42 + r.uniform(-0.03, 0.05)) * factor
        out["eks"].append(((f"model${name}", reg), gpu))
        out["eks"].append((("model$", reg), 2 * 24 * 0.096))
    return out


def _result(query: str, rows: list[tuple[tuple[str, str], float]], day: str, estimated: bool) -> dict:
    groups = []
    for keys, usd in rows:
        usd = usd * (ESTIMATE_FACTOR if estimated else 1.0)
        groups.append({"Keys": list(keys), "Metrics": {
            "UnblendedCost": {"Amount": f"{usd:.10f}", "Unit": "USD"},
            "AmortizedCost": {"Amount": f"{usd * 0.985:.10f}", "Unit": "USD"},
        }})
    end = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    return {"TimePeriod": {"Start": day, "End": end}, "Total": {}, "Groups": groups, "Estimated": estimated}


def ce_pages(query: str, truth: dict[str, dict[str, list]], start: str, end: str, report_day: date,
             pages: int) -> list[dict]:
    """One query's answer for a run, split into ``pages`` pages chained by ``NextPageToken``."""
    days = []
    d = date.fromisoformat(start)
    while d < date.fromisoformat(end):
        days.append(d.isoformat())
        d += timedelta(days=1)
    results = [_result(query, truth.get(day, {}).get(query, []), day,
                       estimated=date.fromisoformat(day) >= report_day - timedelta(days=1)) for day in days]
    size = -(-len(results) // pages)
    chunks = [results[i : i + size] for i in range(0, len(results), size)]
    out = []
    for i, chunk in enumerate(chunks):
        page: dict[str, Any] = {"ResultsByTime": chunk, "DimensionValueAttributes": [], "GroupDefinitions": []}
        if i < len(chunks) - 1:
            page["NextPageToken"] = f"{query}-{report_day:%Y%m%d}-page-{i + 2}"
        out.append(page)
    return out


def _moto_url(endpoint_url: str | None) -> str:
    url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
    host = urllib.parse.urlparse(url).hostname
    if not settings.is_local() or host not in ("127.0.0.1", "localhost"):
        raise RuntimeError(f"seed_local_costs seeds the local target's moto server only (endpoint {url!r}, "
                           f"target {settings.target()!r}); set HYBRID_MLOPS_TARGET=local and AWS_ENDPOINT_URL")
    return url.rstrip("/")


def queue_ce_result(url: str, result: dict) -> None:
    req = urllib.request.Request(f"{url}/moto-api/static/ce/cost-and-usage-results",
                                 data=json.dumps({"results": [result]}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status != 201:
            raise RuntimeError(f"moto refused the Cost Explorer result: HTTP {resp.status}")


def seed_local_costs(
    days: list[date] | date,
    specs: list | None = None,
    *,
    bucket: str | None = None,
    endpoint_url: str | None = None,
    pages: int = 2,
    spike: dict | None = None,
    requests_per_hour: int = 40,
    aws_conn_id: str | None = None,
) -> dict[str, Any]:
    """Seed moto with a realistic month of cost for the reports of ``days`` (in the order they will run).

    :param days: the reported days (a run with logical date ``L`` reports ``L - 1``).
    :param specs: model specs (default: every spec under ``include/models/``).
    :param bucket: the artifacts bucket (default: the project's; it must exist).
    :param endpoint_url: the moto server (default: ``AWS_ENDPOINT_URL``); refuses anything but loopback.
    :param pages: pages per Cost Explorer answer (more than one exercises ``NextPageToken``).
    :param spike: ``{"day": "YYYY-MM-DD", "factor": 2.5}`` multiplies that day's GPU serving cost.
    :param requests_per_hour: capture records written per model and hour of each reported day.
    :returns: what was seeded: Cost Explorer results queued, training jobs, capture files.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from hybrid_mlops.dags.cost_report import model_settings
    from hybrid_mlops.hooks.cost import LOCAL_TIMING_TAG
    from hybrid_mlops.specs import load_specs

    url = _moto_url(endpoint_url)
    days = [days] if isinstance(days, date) else list(days)
    specs = specs if specs is not None else load_specs(settings.MODELS_DIR)
    bucket = bucket or settings.bucket()
    conn_id = aws_conn_id if aws_conn_id is not None else settings.aws_conn_id()
    models = [model_settings(s) for s in specs]
    training = {s.name: {"instance_type": s.training.instance_type, "instance_count": s.training.instance_count,
                         "spot": s.training.spot} for s in specs}
    history = max(30, max(m["trailing_days"] for m in models) + 1)
    scope = explorer.Scope.from_models(models)

    queued = 0
    for report_day in days:
        start, end = explorer.window(report_day, history)
        truth: dict[str, dict[str, list]] = {}
        d = date.fromisoformat(start)
        while d < date.fromisoformat(end):
            per_query: dict[str, list] = {"sagemaker": [], "eks": [], "s3": []}
            for m in models:
                for q, rows in daily_truth(m, training[m["name"]], d, spike).items():
                    per_query[q] += rows
            # shared rows (no model tag) appear once per day, not once per model
            for q in per_query:
                seen, unique = set(), []
                for keys, usd in per_query[q]:
                    if keys in seen:
                        continue
                    seen.add(keys)
                    unique.append((keys, usd))
                per_query[q] = unique
            truth[d.isoformat()] = per_query
            d += timedelta(days=1)
        for query in explorer.plan_queries(scope, start, end):
            for page in ce_pages(query["name"], truth, start, end, report_day, pages):
                queue_ce_result(url, page)
                queued += 1

    sm = SageMakerHook(aws_conn_id=conn_id).conn
    s3 = S3Hook(aws_conn_id=conn_id)
    jobs, files = [], 0
    for report_day in days:
        for m in models:
            job = training_job_plan(m, training[m["name"]], report_day)
            tags = {**m["tags"], "version": job["version"],
                    LOCAL_TIMING_TAG + "TrainingStartTime": job["start_time"].isoformat(),
                    LOCAL_TIMING_TAG + "TrainingEndTime": job["end_time"].isoformat(),
                    LOCAL_TIMING_TAG + "TrainingTimeInSeconds": str(job["training_seconds"]),
                    LOCAL_TIMING_TAG + "BillableTimeInSeconds": str(job["billable_seconds"])}
            existing = [j["TrainingJobName"] for j in
                        sm.list_training_jobs(NameContains=job["job_name"])["TrainingJobSummaries"]]
            if job["job_name"] not in existing:
                sm.create_training_job(
                    TrainingJobName=job["job_name"],
                    AlgorithmSpecification={"TrainingImage": "pytorch-training:2.1.0-gpu-py310",
                                            "TrainingInputMode": "File"},
                    RoleArn=settings.sagemaker_role_arn(),
                    OutputDataConfig={"S3OutputPath": layout.model_output_path(bucket, m["name"])},
                    ResourceConfig={"InstanceType": job["instance_type"], "InstanceCount": job["instance_count"],
                                    "VolumeSizeInGB": 50},
                    StoppingCondition={"MaxRuntimeInSeconds": 14400, "MaxWaitTimeInSeconds": 21600},
                    EnableManagedSpotTraining=job["spot"],
                    Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
                )
            jobs.append({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in job.items()})
            current, previous = job["version"], str(int(job["version"]) - 1)
            for hour in range(24):
                r = _rng("capture", m["name"], report_day, hour)
                lines = []
                for i in range(requests_per_hour):
                    rows = r.randint(20, 200)
                    version = current if hour >= 6 and r.random() < 0.1 else previous
                    lines.append(json.dumps({
                        "id": f"{report_day:%Y%m%d}{hour:02d}{i:04d}", "version": version,
                        "time": datetime.combine(report_day, time(hour, i % 60), tzinfo=timezone.utc).isoformat(),
                        "inputs": {"x1": [round(r.lognormvariate(3.5, 1.1), 2) for _ in range(rows)],
                                   "x2": [round(r.random(), 4) for _ in range(rows)]},
                        "outputs": {"score": [round(r.random() * 0.1, 4) for _ in range(rows)]},
                    }))
                hour_dt = datetime.combine(report_day, time(hour))
                key = layout.capture_prefix(m["name"], hour_dt) + "cost-demo.jsonl"
                s3.load_string("\n".join(lines) + "\n", key=key, bucket_name=bucket, replace=True)
                files += 1
    return {"days": [d.isoformat() for d in days], "ce_results_queued": queued, "training_jobs": jobs,
            "capture_files": files}


def headline_lines(doc: dict[str, Any], html_location: str) -> list[str]:
    """The few lines the demo ends with."""
    t = doc["totals"]
    state = "final" if doc["final"] else "estimated"
    lines = [
        f"Cost report {doc['day']} ({state}, {doc['status']}): total ${t['total_usd']:,.2f} = training "
        f"${t['training_usd']:,.2f} + serving ${t['serving_usd']:,.2f} + storage ${t['storage_usd']:,.2f} + "
        f"processing ${t['processing_usd']:,.2f}",
        f"  spot savings ${t['spot_savings_usd']:,.2f}; unallocated ${t['unallocated_usd']:,.2f}; "
        f"{doc['cost_explorer']['requests']} Cost Explorer request(s)",
    ]
    for m in doc["models"]:
        per1k = m["cost_per_1k_predictions_usd"]
        budget = m["signals"].get("budget") or {}
        used = "" if budget.get("utilisation") is None else f" ({budget['utilisation']:.0%})"
        per = "" if per1k is None else f", ${per1k:,.4f} per 1,000"
        lines.append(f"  {m['model']}: ${m['totals']['total_usd']:,.2f} of ${m['budget_usd']:,.2f} budget{used}, "
                     f"{m['predictions']:,} predictions{per}")
    lines += [f"  ALERT {a['message']}" for a in doc["alerts"]] or ["  no alerts"]
    lines.append(f"  report: {html_location}")
    return lines


def print_cost_headline(day: date | str, *, bucket: str | None = None, aws_conn_id: str | None = None) -> dict:
    """Print the headline of a written report and where its HTML is; returns the report document."""
    from hybrid_mlops.hooks.cost import CostS3Hook

    day = day if isinstance(day, str) else day.isoformat()
    bucket = bucket or settings.bucket()
    key = layout.cost_report_prefix(day) + "cost.json"
    doc = CostS3Hook(aws_conn_id=aws_conn_id if aws_conn_id is not None else settings.aws_conn_id()).read_json(
        bucket, key)
    if doc is None:
        raise FileNotFoundError(f"no cost report at s3://{bucket}/{key}: run the cost_report DAG for {day} first")
    local = Path(settings.local_state_dir()) / "cost-reports" / day / "report.html"
    where = f"file://{local}" if settings.is_local() and local.exists() else \
        f"s3://{bucket}/{layout.cost_report_prefix(day)}report.html"
    for line in headline_lines(doc, where):
        print(line)
    return doc


def demo_cost_report(days: int = 1, end: date | None = None, *, spike: bool = True) -> dict:
    """Seed the local target, run ``cost_report`` for the last ``days`` days (one run per day, as a
    backfill would) and print the last report's headline and where its HTML is.

    The DAG runs in-process with ``dag.test()``; Airflow must already be configured (the main demo does it).

    :param days: how many days to report, ending with ``end``.
    :param end: the last reported day (default: yesterday, UTC).
    :param spike: make the last day's GPU serving cost 2.5 times the usual, to show the anomaly alert.
    :returns: the last day's ``cost.json`` document.
    """
    from hybrid_mlops.factory import build_dags

    end = end or (datetime.now(timezone.utc).date() - timedelta(days=1))
    report_days = [end - timedelta(days=n) for n in range(days - 1, -1, -1)]
    injected = {"day": end.isoformat(), "factor": 2.5} if spike else None
    seeded = seed_local_costs(report_days, spike=injected)
    print(f"seeded {seeded['ce_results_queued']} Cost Explorer result page(s), {len(seeded['training_jobs'])} "
          f"training job(s), {seeded['capture_files']} capture file(s)"
          + (f"; injected a 2.5x GPU serving day on {end} to show the anomaly rule" if spike else ""))
    dag = build_dags("cost_report")["cost_report"]
    for day in report_days:
        run = dag.test(logical_date=datetime.combine(day + timedelta(days=1), time(7), tzinfo=timezone.utc))
        if str(run.state) != "success":
            raise RuntimeError(f"cost_report for {day} ended {run.state}")
    return print_cost_headline(end)
