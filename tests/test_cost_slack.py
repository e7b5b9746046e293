"""Cost alerts reach Slack through the Slack provider's webhook notifier when the connection exists.

The webhook endpoint is a real HTTP server on loopback standing in for Slack's incoming-webhook
service (the connection's password holds the webhook URL, as Slack's own URLs do).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, time, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Webhook.received.append({"path": self.path, "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def slack_webhook(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Webhook.received = []
    url = f"http://127.0.0.1:{server.server_port}/services/T000/B000/cost"
    monkeypatch.setitem(os.environ, "AIRFLOW_CONN_SLACK_COST_ALERTS",
                        json.dumps({"conn_type": "slackwebhook", "password": url}))
    yield _Webhook.received
    server.shutdown()


def test_breach_alerts_are_posted_to_slack_once(aws, airflow_db, slack_webhook):
    import boto3

    from hybrid_mlops.cost.demo import seed_local_costs
    from hybrid_mlops.factory import build_dags

    day = datetime.now(timezone.utc).date() - timedelta(days=2)
    seed_local_costs([day], spike={"day": day.isoformat(), "factor": 2.5}, requests_per_hour=4)
    dag = build_dags("cost_report")["cost_report"]
    logical = datetime.combine(day + timedelta(days=1), time(7), tzinfo=timezone.utc)
    assert dag.test(logical_date=logical).state == "success"
    doc = json.loads(boto3.client("s3").get_object(
        Bucket=os.environ["HYBRID_MLOPS_BUCKET"], Key=f"cost-reports/{day}/cost.json")["Body"].read())
    assert doc["alerts"], "the 2.5x serving day must breach the anomaly rule"
    posted = [r["body"]["text"] for r in slack_webhook]
    assert all(r["path"] == "/services/T000/B000/cost" for r in slack_webhook)
    assert len(posted) == len(doc["alerts"])
    for alert in doc["alerts"]:
        assert any(alert["message"] in text for text in posted)

    # a re-run of the same day does not page anyone again
    assert dag.test(logical_date=logical).state == "success"
    assert len(slack_webhook) == len(doc["alerts"])
