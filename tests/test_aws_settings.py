"""On the ``aws`` target a missing setting fails naming it; the local target keeps its stand-ins."""

from __future__ import annotations

import pytest

from hybrid_mlops import settings


@pytest.mark.parametrize("name, read", [
    ("HYBRID_MLOPS_BUCKET", settings.bucket),
    ("HYBRID_MLOPS_SAGEMAKER_ROLE_ARN", settings.sagemaker_role_arn),
    ("HYBRID_MLOPS_ATHENA_WORKGROUP", settings.athena_workgroup),
    ("HYBRID_MLOPS_ATHENA_DATABASE", settings.athena_database),
])
def test_a_missing_aws_setting_fails_naming_it(monkeypatch, name, read):
    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "aws")
    monkeypatch.delenv(name, raising=False)
    with pytest.raises(settings.SettingMissing, match=name):
        read()
    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "local")
    assert read() == settings.LOCAL_DEFAULTS[name]


def test_athena_results_default_beside_the_artifacts(monkeypatch):
    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "aws")
    monkeypatch.setenv("HYBRID_MLOPS_BUCKET", "prod-artifacts")
    monkeypatch.delenv("HYBRID_MLOPS_ATHENA_OUTPUT", raising=False)
    assert settings.athena_output_location() == "s3://prod-artifacts/athena-results/"
