"""The EKS kube config signs its tokens with the Airflow connection's credentials, on moto's EKS.

The exec credential plugin is run as kubectl runs it (a subprocess with the config's command and
arguments); the token is a presigned STS URL, so the access key that signed it is readable in it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.parse

import boto3

CONNECTION_KEY = "AKIACONNECTIONKEY001"
AMBIENT_KEY = "AKIAAMBIENTCHAIN0001"


def _signing_key(config: dict, env: dict) -> str:
    exec_ = config["users"][0]["user"]["exec"]
    proc = subprocess.run([exec_["command"], *exec_["args"]], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    token = json.loads(proc.stdout)["status"]["token"]
    assert token.startswith("k8s-aws-v1.")
    b64 = token[len("k8s-aws-v1."):]
    url = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode()
    credential = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Credential"][0]
    return credential.split("/")[0]


def test_the_token_is_signed_with_the_connections_credentials(aws, monkeypatch):
    from hybrid_mlops.hooks.kserve import eks_kube_config

    boto3.client("eks").create_cluster(
        name="mlops-us-west-2", roleArn="arn:aws:iam::123456789012:role/eks-cluster",
        resourcesVpcConfig={"subnetIds": ["subnet-0123456789abcdef0"]})
    connection = {"conn_type": "aws", "login": CONNECTION_KEY, "password": "connection-secret",
                  "extra": {"region_name": "us-west-2", "endpoint_url": aws.url}}
    monkeypatch.setenv("AIRFLOW_CONN_EKS_DEPLOYER", json.dumps(connection))
    config = eks_kube_config("mlops-us-west-2", "us-west-2", "eks_deployer")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": AMBIENT_KEY, "AWS_SECRET_ACCESS_KEY": "ambient-secret"}
    env.pop("AWS_SESSION_TOKEN", None)
    assert _signing_key(config, env) == CONNECTION_KEY
