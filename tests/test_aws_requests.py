"""The requests the ``aws`` target sends, built with the target switched and checked against botocore's
service model (patterns, lengths, enums, ranges: what AWS enforces and moto does not)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import ROOT
from strict_aws import request_violations

SHIPPED = ("fraud-detection", "wine-cultivar", "diabetes-progression")


@pytest.fixture
def aws_target(monkeypatch):
    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "aws")
    monkeypatch.setenv("HYBRID_MLOPS_BUCKET", "acme-mlops-artifacts-prod")
    monkeypatch.setenv("HYBRID_MLOPS_SAGEMAKER_ROLE_ARN", "arn:aws:iam::111122223333:role/hybrid-mlops-sagemaker")


def _prepared(spec, key="202612010300-1a2b3c4d"):
    prefix = f"s3://acme-mlops-artifacts-prod/data/{spec.name}/{key}"
    return {"run_key": key, "train_uri": f"{prefix}/train/", "validation_uri": f"{prefix}/validation/",
            "config_uri": f"{prefix}/config/", "code_uri": f"s3://acme-mlops-artifacts-prod/code/{spec.name}/{key}/sourcedir.tar.gz"}


@pytest.mark.parametrize("name", SHIPPED)
def test_training_job_request_for_aws_is_valid(aws_target, name):
    from hybrid_mlops.retrain_steps import training_config
    from hybrid_mlops.specs import load_spec

    spec = load_spec(ROOT / "include" / "models" / f"{name}.yaml")
    params = {"epochs": None, "learning_rate": None, "batch_size": None, "instance_type": spec.training.instance_type,
              "instance_count": None, "spot": spec.training.spot}
    request = training_config(spec, _prepared(spec), {"params": params, "dag": SimpleNamespace(dag_id=f"retrain_{spec.dag_suffix}")})
    assert request_violations("sagemaker", "CreateTrainingJob", request) == []
    assert request["ResourceConfig"]["InstanceCount"] == spec.training.instance_count  # not the local override
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "validation", "config"]
    assert json.loads(request["HyperParameters"]["sagemaker_program"]) == "train.py"
    assert {d["Name"] for d in request["AlgorithmSpecification"]["MetricDefinitions"]} >= {"validation:loss"} | {
        f"validation:{m}" for m in spec.approval.rules}


def test_own_image_request_has_no_script_mode_hyperparameters(aws_target):
    from hybrid_mlops.retrain_steps import training_config
    from hybrid_mlops.specs import load_spec, parse_spec

    base = load_spec(ROOT / "include" / "models" / "wine-cultivar.yaml").model_dump(by_alias=True)
    base["training"]["entry_point"] = None
    base["training"]["image_uri"] = "111122223333.dkr.ecr.us-west-2.amazonaws.com/acme/wine-trainer:1.4.2"
    spec = parse_spec(base, "wine-cultivar.yaml")
    params = {"instance_type": spec.training.instance_type, "spot": True}
    request = training_config(spec, _prepared(spec), {"params": params, "dag": SimpleNamespace(dag_id="retrain_x")})
    assert request_violations("sagemaker", "CreateTrainingJob", request) == []
    assert not any(k.startswith("sagemaker_") for k in request["HyperParameters"])
