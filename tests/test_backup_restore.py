"""Restore drill on the moto server: register versions, back up to a versioned bucket in another region,
restore into that region, and prove it: every SHA-256, every version with its status and lifecycle stage,
the Variables, and the restored production model served by the local predictor scores the validation
rows exactly as the original does. Also: a second backup copies nothing, a non-empty target is refused, a
corrupted backup object fails the restore naming its key, and no secret ever reaches the backup.

moto keeps one SageMaker registry per region (a restore into eu-west-1 starts from an empty one there) and
drops ModelLifeCycle, which the local target mirrors in the artifacts bucket (see ModelRegistryHook); the
restore keeps the mirror in the restored artifacts bucket. Every request passes tests/strict_aws.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

from conftest import ROOT

SOURCE_REGION, TARGET_REGION = "us-west-2", "eu-west-1"
BUCKET = os.environ["HYBRID_MLOPS_BUCKET"]
BACKUP_BUCKET = "hybrid-mlops-backup"  # the local default (settings.LOCAL_DEFAULTS), in eu-west-1
RESTORED = f"{BUCKET}-{TARGET_REGION}"
OTHER_ACCOUNT = "111111111111"
GROUP = "fraud-detection-models"
COOLDOWN_VAR = "hybrid_mlops.fraud-detection.last_drift_retrain"
SECRET_VAR, SECRET_VALUE = "hybrid_mlops.slack_api_key", "xoxb-VARIABLE-SECRET"
CONN_PASSWORD, CONN_EXTRA_SECRET = "CONN-PASSWORD-SECRET", "CONN-EXTRA-SECRET"


@pytest.fixture
def fleet(aws, airflow_db, tmp_path, monkeypatch):
    """The fraud spec as the whole fleet, a Slack connection with secrets, the project's Variables."""
    from airflow.models import Variable

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ROOT / "include" / "models" / "fraud-detection.yaml", models)
    monkeypatch.setenv("HYBRID_MLOPS_MODELS_DIR", str(models))
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_COST_ALERTS", json.dumps({
        "conn_type": "slackwebhook", "host": "hooks.slack.com", "password": CONN_PASSWORD,
        "extra": {"timeout": 10, "webhook_token": CONN_EXTRA_SECRET}}))
    Variable.set(COOLDOWN_VAR, "2026-11-30T03:00:00+00:00")
    Variable.set(SECRET_VAR, SECRET_VALUE)
    yield models
    for key in (COOLDOWN_VAR, SECRET_VAR):
        Variable.delete(key)


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _register_versions(artifacts_dir: Path) -> list[dict]:
    """Three versions of a real ONNX model, with the files evaluate writes beside model.tar.gz: v1 archived
    (replaced in prod), v2 in prod, v3 rejected."""
    from hybrid_mlops.hooks.registry import ModelRegistryHook, model_life_cycle
    from hybrid_mlops.operators.registry import RegisterModelVersionOperator
    from serving_helpers import build_standin_model, fraud_smoke_sample

    model_dir = build_standin_model(artifacts_dir / "standin-model")
    s3 = boto3.client("s3")
    hook = ModelRegistryHook(aws_conn_id=None)
    registered = []
    for i, job in enumerate(("fraud-detection-train-1", "fraud-detection-train-2", "fraud-detection-train-3"), 1):
        base = f"models/fraud-detection/{job}/output"
        evaluation = {"roc_auc": 0.9 + i / 100, "accuracy": 0.97}
        tar = _tarball({"model.onnx": (model_dir / "model.onnx").read_bytes(),
                        "input_schema.json": (model_dir / "input_schema.json").read_bytes(),
                        "evaluation.json": json.dumps(evaluation).encode()})
        beside = {"evaluation.json": evaluation, "statistics.json": {"version": 0.0, "dataset": {"item_count": i}},
                  "constraints.json": {"version": 0.0, "features": []}, "smoke_sample.json": fraud_smoke_sample(4)}
        s3.put_object(Bucket=BUCKET, Key=f"{base}/model.tar.gz", Body=tar)
        for name, body in beside.items():
            s3.put_object(Bucket=BUCKET, Key=f"{base}/{name}", Body=json.dumps(body).encode())
        ref = lambda name: {"ContentType": "application/json", "S3Uri": f"s3://{BUCKET}/{base}/{name}"}  # noqa: E731
        op = RegisterModelVersionOperator(
            task_id="register", model_package_group=GROUP, group_description="Card-transaction fraud classifier",
            group_tags={"team": "risk-ml", "model": "fraud-detection"},
            model_data_url=f"s3://{BUCKET}/{base}/model.tar.gz", inference_image="ghcr.io/hybrid-mlops/predictor:1",
            customer_metadata={"training_job": job, "roc_auc": f"{evaluation['roc_auc']:.6f}",
                               "train_data_uri": f"s3://{BUCKET}/data/fraud-detection/{job}/train/"},
            model_metrics={"ModelQuality": {"Statistics": ref("evaluation.json")},
                           "ModelDataQuality": {"Statistics": ref("statistics.json"),
                                                "Constraints": ref("constraints.json")}},
            metadata_properties={"GeneratedBy": job, "CommitId": "abc123"}, description=f"Trained by {job}",
        )
        op._persist_link = lambda context: None  # links persist through the task runner, absent here
        registered.append(op.execute({}))
    v1, v2, v3 = (r["ModelPackageArn"] for r in registered)
    hook.update_package(v1, status="Approved", reason="Approved by the rules",
                        lifecycle=model_life_cycle("archived", "Retired", "Replaced in prod by version 2"))
    hook.update_package(v2, status="Approved", reason="Approved by risk-lead in Airflow",
                        lifecycle=model_life_cycle("prod", "Deployed", "Serves us-west-2"))
    hook.update_package(v3, status="Rejected", reason="Rejected: roc_auc below the floor",
                        lifecycle=model_life_cycle("dev", "Rejected"))
    return registered


def _run(dag_id: str, models: Path, *, conf: dict | None = None, at: datetime | None = None):
    from hybrid_mlops.factory import build_dags
    from hybrid_mlops.local.dag_runner import run_dag

    run = run_dag(build_dags(dag_id, models)[dag_id], conf=conf, logical_date=at)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _objects(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _latest_manifest(s3) -> dict:
    keys = sorted(k for k in _objects(s3, BACKUP_BUCKET, "snapshots/") if k.endswith("/manifest.json"))
    return json.loads(s3.get_object(Bucket=BACKUP_BUCKET, Key=keys[-1])["Body"].read())


def _score(model_uri: str, state_dir: Path, spec, rows: dict[str, list], version: int) -> list[float]:
    """Serve ``model_uri`` with the project's local predictor and score ``rows``."""
    from hybrid_mlops.local.serving import LocalServing, free_port, s3_fetch
    from hybrid_mlops.local.traffic import send_rows

    serving = LocalServing(spec.name, state_dir=state_dir, port=free_port(), ready_timeout=120, drain_seconds=0)
    try:
        served = serving.deploy(version, model_uri, fetch=s3_fetch())
        assert served["storage_uri"] == model_uri
        return send_rows(serving.url, spec, rows, batch=250)
    finally:
        serving.stop()


def test_restore_drill(fleet, artifacts_dir, tmp_path, spec):
    from airflow.models import Variable
    from airflow.sdk.exceptions import AirflowFailException

    from hybrid_mlops import backup
    from hybrid_mlops.data.generator import generate
    from hybrid_mlops.hooks.backup import RegistryBackupHook

    source_versions = _register_versions(artifacts_dir)
    s3 = boto3.client("s3")
    source_objects = _objects(s3, BUCKET, "models/")
    assert len(source_objects) == 15  # 3 versions x (model.tar.gz + evaluation, statistics, constraints, smoke sample)

    # -- backup ------------------------------------------------------------------------------------
    day = datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)
    run, states = _run("backup_ml_assets", fleet, at=day)
    assert run.state == "success", states
    assert s3.get_bucket_versioning(Bucket=BACKUP_BUCKET)["Status"] == "Enabled"
    assert s3.get_bucket_location(Bucket=BACKUP_BUCKET)["LocationConstraint"] == TARGET_REGION
    manifest = _latest_manifest(s3)
    assert manifest["counts"] == {"groups": 1, "versions": 3, "artifacts": 15, "copied": 15,
                                  "bytes": sum(map(len, source_objects.values())),
                                  "copied_bytes": sum(map(len, source_objects.values()))}
    for entry in manifest["artifacts"]:  # S3's SHA-256 of each copy is the source bytes' SHA-256
        assert entry["sha256"] == hashlib.sha256(source_objects[entry["source_key"]]).hexdigest()
        assert entry["size"] == len(source_objects[entry["source_key"]]) and entry["backup_version_id"]
    registry = json.loads(s3.get_object(Bucket=BACKUP_BUCKET, Key=manifest["registry"][0]["key"])["Body"].read())
    assert registry["tags"] == {"team": "risk-ml", "model": "fraud-detection"}
    assert [(v["ModelApprovalStatus"], v["ModelLifeCycle"]["Stage"]) for v in registry["versions"]] == \
        [("Approved", "archived"), ("Approved", "prod"), ("Rejected", "dev")]
    config = json.loads(s3.get_object(Bucket=BACKUP_BUCKET, Key=manifest["configuration"]["key"])["Body"].read())
    assert list(config["specs"]) == ["fraud-detection.yaml"]
    assert {"key": COOLDOWN_VAR, "value": "2026-11-30T03:00:00+00:00"} in config["variables"]
    assert {"key": SECRET_VAR, "secret": True} in config["variables"]
    slack = next(c for c in config["connections"] if c["conn_id"] == "slack_cost_alerts")
    assert slack == {"conn_id": "slack_cost_alerts", "defined": True, "conn_type": "slackwebhook",
                     "extra_fields": ["timeout", "webhook_token"]}
    snapshot_bytes = b"".join(_objects(s3, BACKUP_BUCKET, "snapshots/").values())
    for secret in (SECRET_VALUE, CONN_PASSWORD, CONN_EXTRA_SECRET, "hooks.slack.com"):
        assert secret.encode() not in snapshot_bytes, f"{secret} reached the backup"

    # A second backup copies nothing new: the artifacts' backup objects keep their one version each.
    run, states = _run("backup_ml_assets", fleet, at=day + timedelta(days=1))
    assert run.state == "success", states
    second = _latest_manifest(s3)
    assert second["snapshot_id"] != manifest["snapshot_id"]
    assert (second["counts"]["copied"], second["counts"]["artifacts"]) == (0, 15)
    assert {a["key"]: a["sha256"] for a in second["artifacts"]} == {a["key"]: a["sha256"] for a in manifest["artifacts"]}
    versions = s3.list_object_versions(Bucket=BACKUP_BUCKET, Prefix="artifacts/")["Versions"]
    assert len(versions) == 15

    # -- restore the first snapshot into the backup's region (the artifacts' region is "lost") --------
    Variable.delete(COOLDOWN_VAR)  # gone with the old environment: the restore must bring it back
    conf = {"snapshot_id": manifest["snapshot_id"], "target_region": TARGET_REGION, "dry_run": True}
    run, states = _run("restore_ml_assets", fleet, conf=conf)
    assert run.state == "success" and states["go"] == "success" and states["artifacts"] == "skipped", states
    assert RESTORED not in [b["Name"] for b in s3.list_buckets()["Buckets"]]  # a dry run changes nothing

    run, states = _run("restore_ml_assets", fleet, conf={**conf, "dry_run": False})
    assert run.state == "success", states
    restored_objects = _objects(s3, RESTORED, "models/")
    assert {k: hashlib.sha256(v).hexdigest() for k, v in restored_objects.items()} == \
        {k: hashlib.sha256(v).hexdigest() for k, v in source_objects.items()}
    assert s3.get_bucket_location(Bucket=RESTORED)["LocationConstraint"] == TARGET_REGION
    target = RegistryBackupHook(aws_conn_id=None, region_name=TARGET_REGION, mirror_bucket=RESTORED)
    restored = target.versions(GROUP)
    original = RegistryBackupHook(aws_conn_id=None).versions(GROUP)
    assert [(r["ModelPackageVersion"], r["ModelApprovalStatus"], r.get("ApprovalDescription"), r["ModelLifeCycle"])
            for r in restored] == \
        [(o["ModelPackageVersion"], o["ModelApprovalStatus"], o.get("ApprovalDescription"), o["ModelLifeCycle"])
         for o in original]
    for r, o in zip(restored, original):
        assert r["ModelPackageArn"].startswith(f"arn:aws:sagemaker:{TARGET_REGION}:")
        assert r["CustomerMetadataProperties"] == {**o["CustomerMetadataProperties"], "restored_from": o["ModelPackageArn"]}
        assert r["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == \
            o["InferenceSpecification"]["Containers"][0]["ModelDataUrl"].replace(f"s3://{BUCKET}/", f"s3://{RESTORED}/")
        assert r["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].startswith(f"s3://{RESTORED}/")
        for field in ("MetadataProperties", "ModelPackageDescription"):
            assert r[field] == o[field]
    assert target.tags(target.describe_group(GROUP)["ModelPackageGroupArn"]) == \
        {"team": "risk-ml", "model": "fraud-detection", backup.RESTORE_TAG: manifest["snapshot_id"]}
    assert Variable.get(COOLDOWN_VAR) == "2026-11-30T03:00:00+00:00"

    # The restored production model scores the validation rows exactly as the original.
    prod = target.packages_in_stage(GROUP, "prod")
    assert [p["ModelPackageVersion"] for p in prod] == [source_versions[1]["ModelPackageVersion"]]
    columns = generate(400, seed=12)
    rows = {f: columns[f].tolist() for f in (*spec.schema_.numeric, *spec.schema_.categorical)}
    with ThreadPoolExecutor(2) as pool:  # the two predictors start side by side
        scored = [pool.submit(_score, uri, tmp_path / name, spec, rows, 2) for name, uri in (
            ("serve-original", source_versions[1]["ModelDataUrl"]),
            ("serve-restored", prod[0]["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]))]
        before, after = (f.result() for f in scored)
    assert len(before) == len(after) == 400 and len(set(before)) > 100  # real scores, not a constant
    assert max(abs(a - b) for a, b in zip(before, after)) == 0.0

    # The same snapshot into another account: the restore assumes a role there (moto maps it to that account).
    role = f"arn:aws:iam::{OTHER_ACCOUNT}:role/hybrid-mlops-restore"
    run, states = _run("restore_ml_assets", fleet, conf={**conf, "dry_run": False, "target_role_arn": role,
                                                         "target_bucket": "{bucket}-dr"})
    assert run.state == "success", states
    creds = boto3.client("sts").assume_role(RoleArn=role, RoleSessionName="drill-check")["Credentials"]
    other = boto3.session.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                                  aws_session_token=creds["SessionToken"], region_name=TARGET_REGION)
    assert {k: hashlib.sha256(v).hexdigest() for k, v in _objects(other.client("s3"), f"{BUCKET}-dr", "models/").items()} \
        == {k: hashlib.sha256(v).hexdigest() for k, v in source_objects.items()}
    summaries = other.client("sagemaker").list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]
    assert sorted((p["ModelPackageVersion"], p["ModelApprovalStatus"]) for p in summaries) == \
        [(1, "Approved"), (2, "Approved"), (3, "Rejected")]
    assert all(f":{OTHER_ACCOUNT}:model-package/" in p["ModelPackageArn"] for p in summaries)

    # A rerun of the same restore (a retried task, a cleared run) continues: nothing copied or registered twice.
    again = backup.plan_restore({**conf, "dry_run": False, "target_bucket": "{bucket}-{region}"})
    assert backup.restore_artifacts(again) == {"copied": 0, "already_restored": 15}
    assert all(m["reused"] for m in backup.restore_registry(again))
    assert len(target.versions(GROUP)) == 3
    # verify names what does not match: an object gone, a status changed behind the restore's back.
    gone = "models/fraud-detection/fraud-detection-train-1/output/statistics.json"
    s3.delete_object(Bucket=RESTORED, Key=gone)
    target.update_package(restored[2]["ModelPackageArn"], status="Approved", reason="by hand")
    named = (rf"problem\(s\)\):\ns3://{RESTORED}/{gone} is missing\n"
             rf"{GROUP} version 3: ModelApprovalStatus='Approved', the snapshot has 'Rejected'")
    with pytest.raises(AirflowFailException, match=named):
        backup.verify_restore(again)
    assert backup.restore_artifacts(again) == {"copied": 1, "already_restored": 14}  # a rerun repairs both
    backup.restore_registry(again)
    assert target.describe_package(restored[2]["ModelPackageArn"])["ModelApprovalStatus"] == "Rejected"

    # -- what a restore refuses ----------------------------------------------------------------------
    params = {"snapshot_id": "latest", "target_region": TARGET_REGION, "target_bucket": "{bucket}-{region}"}
    refused = rf"not empty: s3://{RESTORED} holds objects.*{GROUP} in {TARGET_REGION} has versions"
    with pytest.raises(AirflowFailException, match=refused):
        backup.plan_restore(params)  # the second snapshot into what the first one restored

    with pytest.raises(AirflowFailException, match=r"snapshot_id='20990101T000000Z-00000000': .* does not exist"):
        backup.plan_restore({**params, "snapshot_id": "20990101T000000Z-00000000"})
    with pytest.raises(AirflowFailException, match="twin of every version"):
        backup.plan_restore({**params, "target_region": SOURCE_REGION, "overwrite": True})

    tar_key = f"artifacts/{BUCKET}/{source_versions[1]['ModelDataUrl'].split(BUCKET + '/', 1)[1]}"
    # A corrupted backup: the snapshot's version of the object is gone and another one replaced it.
    pinned = next(a["backup_version_id"] for a in second["artifacts"] if a["key"] == tar_key)
    s3.delete_object(Bucket=BACKUP_BUCKET, Key=tar_key, VersionId=pinned)
    s3.put_object(Bucket=BACKUP_BUCKET, Key=tar_key, Body=b"not the model")
    plan = backup.plan_restore({**params, "target_region": "ap-northeast-2"})
    with pytest.raises(AirflowFailException, match=rf"s3://{BACKUP_BUCKET}/{tar_key} has SHA-256 "):
        backup.restore_artifacts(plan)
    assert "models/" + tar_key.split("/models/", 1)[1] not in _objects(s3, f"{BUCKET}-ap-northeast-2")


def test_backup_settings_and_an_unversioned_bucket_are_refused(aws, monkeypatch):
    from hybrid_mlops import settings
    from hybrid_mlops.hooks.backup import BackupStoreHook

    monkeypatch.setenv("HYBRID_MLOPS_BACKUP_REGION", SOURCE_REGION)
    with pytest.raises(ValueError, match="HYBRID_MLOPS_BACKUP_REGION='us-west-2' is the region of the artifacts"):
        settings.backup_region()
    monkeypatch.setenv("HYBRID_MLOPS_BACKUP_REGION", "europe")
    with pytest.raises(ValueError, match="HYBRID_MLOPS_BACKUP_REGION='europe' is not an AWS region name"):
        settings.backup_region()
    monkeypatch.setenv("HYBRID_MLOPS_BACKUP_BUCKET", BUCKET)
    with pytest.raises(ValueError, match="is the artifacts bucket"):
        settings.backup_bucket()
    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "aws")
    monkeypatch.delenv("HYBRID_MLOPS_BACKUP_BUCKET")
    with pytest.raises(settings.SettingMissing, match="HYBRID_MLOPS_BACKUP_BUCKET is not set"):
        settings.backup_bucket()
    monkeypatch.setenv("HYBRID_MLOPS_TARGET", "local")

    store = BackupStoreHook(aws_conn_id=None, region_name=TARGET_REGION)
    store.create_bucket_in("plain-bucket", TARGET_REGION)
    with pytest.raises(ValueError, match="backup bucket plain-bucket is not versioned"):
        store.ensure_versioned_bucket("plain-bucket", TARGET_REGION)
    with pytest.raises(ValueError, match=f"is in {TARGET_REGION}, not in HYBRID_MLOPS_BACKUP_REGION=ap-south-1"):
        store.ensure_versioned_bucket("plain-bucket", "ap-south-1")
    assert store.ensure_versioned_bucket("new-backups", TARGET_REGION) == "created"
    assert store.ensure_versioned_bucket("new-backups", TARGET_REGION) == "verified"


@pytest.mark.parametrize("conf, field", [
    ({"snapshot_id": "yesterday"}, "snapshot_id"),
    ({"target_region": "europe"}, "target_region"),
    ({"target_region": "eu-west-1", "target_bucket": "Restored_Bucket"}, "target_bucket"),
    ({"target_region": "eu-west-1", "target_role_arn": "arn:aws:iam::12345:user/me"}, "target_role_arn"),
    ({"target_region": "eu-west-1", "dry_run": "no"}, "dry_run"),
    ({"target_region": "eu-west-1", "overwrite": "yes"}, "overwrite"),
])
def test_the_restore_form_is_typed_and_refuses_a_bad_value_naming_the_field(spec, conf, field):
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    from hybrid_mlops.dags import restore_ml_assets

    dag = restore_ml_assets.build([spec])[0]
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.schema.get("type") and param.description, name
    params = copy.deepcopy(dag.params)
    params.update({"target_region": "eu-west-1"})
    assert params.validate()["snapshot_id"] == "latest" and params.validate()["dry_run"] is True
    with pytest.raises(ParamValidationError, match=rf"\b{field}\b"):
        params.update(conf)  # a trigger's conf is validated as it is set
        params.validate()
