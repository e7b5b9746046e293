"""The cost_report DAG against a real moto server (and a real headless browser for the page).

What Cost Explorer received is read back from moto's own server-side request recorder
(``/moto-api/recorder/*``), not from a mock. The one thing moto cannot produce, a Cost Explorer
service error, comes from a small HTTP server on loopback answering in Cost Explorer's JSON protocol.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
import threading
import urllib.request
from datetime import date, datetime, time, timedelta, timezone
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

# moto writes its recording next to the server process unless told where; set before the session's server starts.
os.environ.setdefault("MOTO_RECORDER_FILEPATH", str(Path(tempfile.mkdtemp(prefix="moto-recording-")) / "rec.jsonl"))

BUCKET = os.environ["HYBRID_MLOPS_BUCKET"]
MODEL = "fraud-detection"
TODAY = datetime.now(timezone.utc).date()


# ---------------------------------------------------------------------------------------------------
# helpers


def _post(url: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


@pytest.fixture
def recorder(aws):
    """moto's request recorder, started on a clean log; yields a function returning the CE requests."""
    _post(aws.url + "/moto-api/recorder/reset-recording")
    _post(aws.url + "/moto-api/recorder/start-recording")

    def ce_requests() -> list[dict]:
        with urllib.request.urlopen(aws.url + "/moto-api/recorder/download-recording", timeout=10) as resp:
            lines = resp.read().decode().splitlines()
        out = []
        for line in lines:
            entry = json.loads(line)
            if entry["headers"].get("X-Amz-Target") == "AWSInsightsIndexService.GetCostAndUsage":
                body = base64.b64decode(entry["body"]) if entry.get("body_encoded") else entry["body"]
                out.append(json.loads(body))
        return out

    yield ce_requests
    _post(aws.url + "/moto-api/recorder/stop-recording")


def queue(aws, *pages: dict) -> None:
    for page in pages:
        _post(aws.url + "/moto-api/static/ce/cost-and-usage-results", json.dumps({"results": [page]}).encode())


def run_dag(day: date, **conf):
    """One scheduled run: logical date = the morning after ``day``."""
    from hybrid_mlops.factory import build_dags

    dag = build_dags("cost_report")["cost_report"]
    run = dag.test(logical_date=datetime.combine(day + timedelta(days=1), time(7), tzinfo=timezone.utc),
                   run_conf=conf or None)
    assert run.state == "success", f"cost_report run for {day} ended {run.state}"
    return run


def report(day: date, name: str = "cost.json"):
    import boto3

    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"cost-reports/{day.isoformat()}/{name}")["Body"].read()
    return json.loads(body) if name.endswith(".json") else body.decode()


def report_keys() -> list[str]:
    import boto3

    listing = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="cost-reports/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def alert_queue():
    """An SQS queue subscribed to the alert topic: what SNS really delivered."""
    import boto3

    topic = boto3.client("sns").create_topic(Name="hybrid-mlops-cost-alerts")["TopicArn"]
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="cost-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)

    def received() -> list[dict]:
        out = []
        while msgs := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for m in msgs:
                out.append(json.loads(json.loads(m["Body"])["Message"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return out

    return received


# ---------------------------------------------------------------------------------------------------
# known inputs: grouping, tag filters, pagination, attribution


def _g(keys, usd):
    return {"Keys": keys, "Metrics": {"UnblendedCost": {"Amount": f"{usd}", "Unit": "USD"},
                                      "AmortizedCost": {"Amount": f"{usd * 0.9}", "Unit": "USD"}}}


KNOWN = {
    "sagemaker": [(["USW2-Train:ml.g5.2xlarge", f"model${MODEL}"], 3.03),
                  (["USW2-Train:VolumeUsage.gp2", f"model${MODEL}"], 0.25),
                  (["USW2-Host:ml.g5.xlarge", f"model${MODEL}"], 10.0),
                  (["USW2-Processing:ml.m5.xlarge", f"model${MODEL}"], 1.0),
                  (["USW2-Processing:ml.m5.xlarge", "model$"], 0.5)],
    "eks": [([f"model${MODEL}", "us-west-2"], 20.0), ([f"model${MODEL}", "eu-west-1"], 22.0),
            ([f"model${MODEL}", "ap-northeast-2"], 24.0), (["model$", "us-west-2"], 4.6)],
    "s3": [([f"model${MODEL}", "USW2-TimedStorage-ByteHrs"], 0.4), (["model$", "USW2-Requests-Tier1"], 0.1)],
}


def _known_pages(name: str, start: date, days: int, pages: int) -> list[dict]:
    results = [{"TimePeriod": {"Start": (start + timedelta(i)).isoformat(),
                               "End": (start + timedelta(i + 1)).isoformat()},
                "Total": {}, "Groups": [_g(k, v) for k, v in KNOWN[name]], "Estimated": i >= days - 2}
               for i in range(days)]
    size = -(-days // pages)
    out = []
    for p in range(pages):
        page = {"ResultsByTime": results[p * size:(p + 1) * size], "DimensionValueAttributes": []}
        if p < pages - 1:
            page["NextPageToken"] = f"{name}-token-{p + 2}"
        out.append(page)
    return out


def _seed_known_job_and_capture(day: date):
    import boto3

    from hybrid_mlops.hooks.cost import LOCAL_TIMING_TAG

    end = datetime.combine(day, time(6), tzinfo=timezone.utc)
    boto3.client("sagemaker").create_training_job(
        TrainingJobName=f"{MODEL}-train-known",
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/r", OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/models"},
        ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 14400, "MaxWaitTimeInSeconds": 21600},
        EnableManagedSpotTraining=True,
        Tags=[{"Key": "model", "Value": MODEL}, {"Key": "version", "Value": "8"},
              {"Key": LOCAL_TIMING_TAG + "TrainingEndTime", "Value": end.isoformat()},
              {"Key": LOCAL_TIMING_TAG + "TrainingTimeInSeconds", "Value": "10800"},
              {"Key": LOCAL_TIMING_TAG + "BillableTimeInSeconds", "Value": "3600"}])
    line = lambda v: json.dumps({"version": v, "inputs": {"amount": [1.0] * 10, "merchant_risk": [0.1] * 10}})
    body = "\n".join([line("7"), line("7"), line("8"), "not a record", line("7")]) + "\n"
    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"capture/{MODEL}/{day:%Y/%m/%d}/13/part-0.jsonl",
                                  Body=body.encode())


def _model(doc: dict) -> dict:
    return next(m for m in doc["models"] if m["model"] == MODEL)


def test_known_costs_grouping_tag_filters_pagination_and_attribution(aws, airflow_db, recorder):
    day = TODAY - timedelta(days=3)
    start = day - timedelta(days=29)
    queue(aws, *_known_pages("sagemaker", start, 30, 2), *_known_pages("eks", start, 30, 3),
          *_known_pages("s3", start, 30, 1))
    _seed_known_job_and_capture(day)
    run_dag(day)

    sent = recorder()
    assert len(sent) == 6  # 2 + 3 + 1 pages, nothing more
    assert [r.get("NextPageToken") for r in sent] == [None, "sagemaker-token-2", None, "eks-token-2",
                                                      "eks-token-3", None]
    window = {"Start": start.isoformat(), "End": (day + timedelta(days=1)).isoformat()}
    for r in sent:
        assert r["TimePeriod"] == window and r["Granularity"] == "DAILY"
        assert r["Metrics"] == ["UnblendedCost", "AmortizedCost"]
    tag = lambda k, *v: {"Tags": {"Key": k, "Values": list(v), "MatchOptions": ["EQUALS"]}}
    from hybrid_mlops.specs import load_specs

    from hybrid_mlops.settings import MODELS_DIR

    specs = load_specs(MODELS_DIR)  # every shipped model is in the report's scope
    scope = [tag("environment", "dev"), tag("project", "hybrid-mlops"), tag("team", *sorted({s.team for s in specs}))]
    assert sent[0]["Filter"] == {"And": [
        {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon SageMaker"], "MatchOptions": ["EQUALS"]}},
        tag("model", *sorted(s.name for s in specs)), *scope]}
    assert sent[0]["GroupBy"] == [{"Type": "DIMENSION", "Key": "USAGE_TYPE"}, {"Type": "TAG", "Key": "model"}]
    assert sent[2]["Filter"] == {"And": [
        {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon Elastic Compute Cloud - Compute", "EC2 - Other"],
                        "MatchOptions": ["EQUALS"]}},
        {"Or": [tag(f"kubernetes.io/cluster/mlops-{r}", "owned") for r in ("ap-northeast-2", "eu-west-1", "us-west-2")]},
    ]}
    assert sent[2]["GroupBy"] == [{"Type": "TAG", "Key": "model"}, {"Type": "DIMENSION", "Key": "REGION"}]
    assert sent[5]["Filter"]["And"][1:] == scope

    doc = report(day)
    assert doc["status"] == "ok" and doc["final"] is False and doc["cost_explorer"]["requests"] == 6
    t = doc["totals"]
    assert t["training_usd"] == pytest.approx(3.03)
    assert t["serving_usd"] == pytest.approx(10 + 20 + 22 + 24 + 4.6)
    assert t["processing_usd"] == pytest.approx(1.5)
    assert t["storage_usd"] == pytest.approx(0.25 + 0.4 + 0.1)
    assert t["unallocated_usd"] == pytest.approx(0.5 + 4.6 + 0.1)
    assert t["total_usd"] == pytest.approx(85.88) and t["amortized_total_usd"] == pytest.approx(85.88 * 0.9)
    m = _model(doc)
    assert all(o["totals"]["total_usd"] == 0 for o in doc["models"] if o is not m)  # nothing tagged for them
    assert m["totals"]["total_usd"] == pytest.approx(80.68) and m["totals"]["serving_usd"] == pytest.approx(76.0)
    (job,) = m["training"]["jobs"]
    assert (job["job_name"], job["version"], job["status"]) == (f"{MODEL}-train-known", "8", "ok")
    assert job["cost_usd"] == pytest.approx(3.03) and job["spot_savings_usd"] == pytest.approx(6.06)
    assert job["spot_saving_fraction"] == pytest.approx(2 / 3)
    assert m["training"]["unattributed_usd"] == pytest.approx(0.0, abs=1e-9)
    assert [(v["version"], v["requests"], v["predictions"]) for v in m["versions"]] == [("7", 3, 30), ("8", 1, 10)]
    assert m["versions"][0]["serving_usd"] == pytest.approx(57.0)
    assert m["versions"][0]["cost_per_1k_predictions_usd"] == pytest.approx(1900.0)
    assert m["cost_per_1k_predictions_usd"] == pytest.approx(76.0 / 40 * 1000)
    assert any("1 capture line(s)" in w for w in doc["warnings"])
    # flat history: no anomaly; 80.68 of 250: no budget breach
    assert doc["alerts"] == [] and m["signals"]["budget"]["breach"] is False
    csv_text = report(day, "cost.csv")
    assert f"training_job,{day},{MODEL},8,{MODEL}-train-known,training,3.030000" in csv_text


def test_request_bound_stops_before_sending_more(aws, recorder):
    from hybrid_mlops.dags.cost_report import model_settings
    from hybrid_mlops.hooks.cost import CostExplorerError
    from hybrid_mlops.operators.cost import CostExplorerOperator
    from hybrid_mlops.specs import load_spec
    from hybrid_mlops.settings import MODELS_DIR

    day = TODAY - timedelta(days=3)
    queue(aws, *_known_pages("sagemaker", day - timedelta(days=29), 30, 3))
    op = CostExplorerOperator(task_id="ce", day=day.isoformat(),
                              models=[model_settings(load_spec(MODELS_DIR / f"{MODEL}.yaml"))], max_pages_per_query=2)
    with pytest.raises(CostExplorerError, match="more than 2 pages"):
        op.execute({})
    assert len(recorder()) == 2


# ---------------------------------------------------------------------------------------------------
# the seeded demo: idempotent re-runs, a backfill, the page in a browser


def test_same_day_twice_overwrites_and_never_duplicates(aws, airflow_db):
    import boto3

    from hybrid_mlops.cost.demo import seed_local_costs

    day = TODAY - timedelta(days=2)
    seed_local_costs([day], spike={"day": day.isoformat(), "factor": 2.5}, requests_per_hour=4)
    received = alert_queue()
    run_dag(day)
    first = report(day)
    run_dag(day)
    second = report(day)

    assert report_keys() == [f"cost-reports/{day}/{n}" for n in ("cost.csv", "cost.json", "report.html")]
    assert second["totals"] == first["totals"] and second["daily"] == first["daily"]
    assert {a["metric"] for a in first["alerts"]} >= {"total", "serving"}  # the 2.5x GPU day
    messages = received()
    assert sorted(m["id"] for m in messages) == sorted(a["id"] for a in first["alerts"])  # once each
    assert all(a["notified_at"] for a in second["alerts"])
    assert second["restated"][-1]["previous_total_usd"] == pytest.approx(first["totals"]["total_usd"])
    assert second["restated"][-1]["delta_usd"] == pytest.approx(0.0)

    cw = boto3.client("cloudwatch")
    stats = cw.get_metric_statistics(
        Namespace="HybridMLOps/Cost", MetricName="TotalCost", Dimensions=[{"Name": "Model", "Value": MODEL}],
        StartTime=datetime.combine(day, time(0), tzinfo=timezone.utc),
        EndTime=datetime.combine(day + timedelta(days=1), time(0), tzinfo=timezone.utc),
        Period=86400, Statistics=["SampleCount", "Maximum"])["Datapoints"]
    assert len(stats) == 1 and stats[0]["SampleCount"] == 1
    assert stats[0]["Maximum"] == pytest.approx(_model(first)["totals"]["total_usd"])
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="HybridMLOps/Cost")["Metrics"]}
    assert {"TrainingCost", "ServingCost", "StorageCost", "TotalCost", "SpotSavings", "CostPer1kPredictions",
            "Predictions", "BudgetUtilisation"} <= names


def test_backfill_of_seven_days(aws, airflow_db, recorder):
    from hybrid_mlops.cost.demo import ESTIMATE_FACTOR, seed_local_costs

    days = [TODAY - timedelta(days=n) for n in range(9, 2, -1)]
    seeded = seed_local_costs(days, requests_per_hour=2)
    assert seeded["ce_results_queued"] == 7 * 3 * 2
    for day in days:
        run_dag(day)

    assert report_keys() == sorted(f"cost-reports/{d}/{n}" for d in days
                                   for n in ("cost.csv", "cost.json", "report.html"))
    assert len(recorder()) == 7 * 6
    docs = {d: report(d) for d in days}
    for d, doc in docs.items():
        assert doc["day"] == d.isoformat() and doc["status"] == "ok" and doc["cost_explorer"]["requests"] == 6
        assert len(doc["daily"]) == 30 and doc["daily"][-1]["day"] == d.isoformat()
        assert [x["day"] for x in doc["daily"] if x["estimated"]] == [(d - timedelta(1)).isoformat(), d.isoformat()]
        m = _model(doc)
        assert len(m["training"]["jobs"]) == 1 and m["training"]["jobs"][0]["status"] == "ok"
    # the last run re-states the three days before it: what was published estimated is now final, 3 % higher
    last = docs[days[-1]]
    assert [r["day"] for r in last["restated"]] == [d.isoformat() for d in days[-4:]]
    final_restated = [r for r in last["restated"] if r["final"]]
    assert len(final_restated) == 2
    for r in final_restated:
        assert r["previous_total_usd"] == pytest.approx(r["current_total_usd"] * ESTIMATE_FACTOR)
        assert r["delta_usd"] > 0
    # a day's figure in a later report equals its own report once both are final-or-estimated alike
    assert docs[days[0]]["daily"][-3]["total_usd"] == pytest.approx(docs[days[1]]["daily"][-4]["total_usd"])


class _Figures(HTMLParser):
    def __init__(self):
        super().__init__()
        self.figures, self.rects, self.charts, self._open = {}, [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-figure" in a:
            self._open = a["data-figure"]
            self.figures[self._open] = [a.get("data-value"), ""]
        if tag == "svg":
            self.charts.append(a.get("id"))
        if tag == "rect" and "data-value" in a:
            self.rects.append(a)

    def handle_data(self, data):
        if self._open:
            self.figures[self._open][1] += data

    def handle_endtag(self, tag):
        if tag == "span":
            self._open = None


def _lookup(doc, path):
    node = doc
    for part in path.split("."):
        if part == "length":
            return len(node)
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_report_page_renders_in_a_browser_with_charts_and_the_same_figures(aws, airflow_db, artifacts_dir):
    from hybrid_mlops.cost.demo import print_cost_headline, seed_local_costs

    day = TODAY - timedelta(days=2)
    seed_local_costs([day], spike={"day": day.isoformat(), "factor": 2.5}, requests_per_hour=6)
    run_dag(day)
    doc = report(day)
    page = report(day, "report.html")
    assert "<script" not in page.lower() and not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    html_path = artifacts_dir / "cost_report.html"
    html_path.write_text(page)
    png = artifacts_dir / "cost_report.png"
    png.unlink(missing_ok=True)
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    subprocess.run([*browser, f"--screenshot={png}", "--window-size=1200,2300", html_path.as_uri()],
                   check=True, capture_output=True, timeout=60)
    assert png.exists() and png.stat().st_size > 20_000
    dom = subprocess.run([*browser, "--dump-dom", html_path.as_uri()], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    parsed = _Figures()
    parsed.feed(dom)

    assert {"chart-daily", "chart-models", "chart-versions", "chart-spot"} <= set(parsed.charts)
    daily_bars = [r for r in parsed.rects if r.get("data-day")]
    assert len(daily_bars) == 30 * 3
    for row in doc["daily"]:
        bars = {r["data-category"]: float(r["data-value"]) for r in daily_bars if r["data-day"] == row["day"]}
        assert bars["training"] == pytest.approx(row["training_usd"])
        assert bars["serving"] == pytest.approx(row["serving_usd"])
    assert len(parsed.figures) >= 15
    for path, (raw, text) in parsed.figures.items():
        expected = _lookup(doc, path)
        if path == "alerts.length":
            assert int(text) == expected == len(doc["alerts"]) > 0
            continue
        assert float(raw) == pytest.approx(expected), path
        shown = float(re.sub(r"[$,]", "", text))
        assert shown == pytest.approx(expected, abs=0.005 if "per_1k" not in path else 0.00005), path
    assert "above its 14-day mean" in dom

    print_cost_headline(day)


# ---------------------------------------------------------------------------------------------------
# what goes wrong: no permission, a service error, nothing to report


def _ce_operator(day: date):
    from hybrid_mlops.dags.cost_report import model_settings
    from hybrid_mlops.operators.cost import CostExplorerOperator
    from hybrid_mlops.settings import MODELS_DIR
    from hybrid_mlops.specs import load_spec

    return CostExplorerOperator(task_id="ce", day=day.isoformat(),
                                models=[model_settings(load_spec(MODELS_DIR / f"{MODEL}.yaml"))])


def test_access_denied_fails_clearly(aws, monkeypatch):
    import boto3

    from hybrid_mlops.hooks.cost import CostExplorerAccessDenied

    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="reporter-without-ce")
    iam.put_user_policy(UserName="reporter-without-ce", PolicyName="s3-only", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="reporter-without-ce")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    _post(aws.url + "/moto-api/reset-auth", b"0", "text/plain")  # moto enforces IAM from now on
    try:
        with pytest.raises(CostExplorerAccessDenied, match=r"not authorized to perform: ce:GetCostAndUsage.*Grant"):
            _ce_operator(TODAY - timedelta(days=2)).execute({})
    finally:
        _post(aws.url + "/moto-api/reset-auth", b"inf", "text/plain")


class _CostExplorerDown(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"__type": "DataUnavailableException", "Message": "Data is not available."}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_cost_explorer_error_is_quoted_and_nothing_is_written(aws, monkeypatch):
    from hybrid_mlops.hooks.cost import CostExplorerError

    server = HTTPServer(("127.0.0.1", 0), _CostExplorerDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # the connection's per-service endpoint sends Cost Explorer, and only it, to the failing server
    conn = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    conn["extra"]["service_config"] = {"ce": {"endpoint_url": f"http://127.0.0.1:{server.server_port}"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    try:
        with pytest.raises(CostExplorerError, match="DataUnavailableException: Data is not available"):
            _ce_operator(TODAY - timedelta(days=2)).execute({})
    finally:
        server.shutdown()
    assert report_keys() == []


def test_empty_month_gives_an_honest_empty_report(aws, airflow_db):
    day = TODAY - timedelta(days=2)
    run_dag(day)  # nothing seeded: Cost Explorer answers no results at all
    doc = report(day)
    assert doc["status"] == "no_data" and doc["alerts"] == [] and doc["daily"] == []
    assert all(m["signals"] == {"evaluated": False} for m in doc["models"])
    assert "no figure below is a measured zero" in doc["warnings"][0]
    page = report(day, "report.html")
    assert "No Cost Explorer data in the window" in page and "Signals were not evaluated" in page
    assert "metrics_fingerprint" not in doc.get("published", {})
