"""CustomerMetadataProperties within AWS's constraints (pattern, 1..256 characters), on moto.

moto stores any value; the strict request checks (tests/strict_aws.py) fail these tests if a request
carries a value AWS would reject.
"""

from __future__ import annotations

import boto3
import pytest

from strict_aws import request_violations

GROUP = "metadata-models"


def _package(hook, metadata: dict) -> str:
    from hybrid_mlops.operators.registry import RegisterModelVersionOperator

    hook.ensure_group(GROUP, "metadata test", {"team": "ml"})
    op = RegisterModelVersionOperator(
        task_id="register", model_package_group=GROUP, model_data_url="s3://hybrid-mlops-test/m/model.tar.gz",
        inference_image="123456789012.dkr.ecr.us-west-2.amazonaws.com/predictor:1", customer_metadata=metadata,
        description="candidate (run manual__2026-01-01T00:00:00+00:00)",
    )
    op._persist_link = lambda context: None  # links persist through the task runner, absent here
    return op.execute({})["ModelPackageArn"]


def test_lists_and_approver_names_are_encoded_within_the_pattern(aws):
    from hybrid_mlops.hooks.registry import ModelRegistryHook, split_metadata_list

    hook = ModelRegistryHook(aws_conn_id="aws_default")
    arn = _package(hook, {"training_job": "fraud-detection-20260101-abc", "drift_violated_features": "amount,channel",
                          "drift_window_start": "", "oracle_roc_auc": "0.912345"})
    after = hook.update_package(arn, status="Approved", reason="Approved by Jane O'Brien (ML ops) in Airflow",
                                properties={"decided_by": "Jane O'Brien (ML ops)",
                                            "deployed_regions": ["us-west-2", "eu-west-1"]})
    props = boto3.client("sagemaker").describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    assert props == after["CustomerMetadataProperties"]
    assert props["drift_violated_features"] == "amount channel"
    assert split_metadata_list(props["drift_violated_features"]) == ["amount", "channel"]
    assert props["decided_by"] == "Jane O-Brien -ML ops-"
    assert split_metadata_list(props["deployed_regions"]) == ["us-west-2", "eu-west-1"]
    assert "drift_window_start" not in props  # empty: below the minimum length of 1
    assert request_violations("sagemaker", "UpdateModelPackage",
                              {"ModelPackageArn": arn, "CustomerMetadataProperties": props}) == []


def test_a_value_over_256_characters_fails_naming_the_key_instead_of_truncating():
    from hybrid_mlops.hooks.registry import encode_metadata

    with pytest.raises(ValueError, match="train_data_uri.*256"):
        encode_metadata({"train_data_uri": "s3://bucket/" + "k" * 300})


def test_the_validator_rejects_what_the_old_encoding_sent():
    # What the registry operator sent before: str(v)[:1024], a comma list and an approver's parentheses.
    errors = request_violations("sagemaker", "UpdateModelPackage", {
        "ModelPackageArn": "arn:aws:sagemaker:us-west-2:123456789012:model-package/g/1",
        "CustomerMetadataProperties": {"drift_violated_features": "amount,channel", "decided_by": "Jane (ops)",
                                       "drift_window_start": "", "uri": "s" * 300},
    })
    assert len(errors) == 4, errors  # two outside the pattern, one empty, one too long
