"""The synthesized templates: real properties of each stack, the policies as the policy source has them,
and cfn-lint over every template with zero errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk.assertions import Match

from hybrid_mlops.iam.policies import dev_grants_to_prod, mwaa_execution_policy, sagemaker_execution_policy


def _listed(value):
    return value if isinstance(value, list) else [value]


def _normal(doc: dict) -> list[dict]:
    """Statements with Action/Resource as sorted lists (CDK renders one-element lists as strings)."""
    return [{**st, "Action": sorted(_listed(st["Action"])), "Resource": sorted(_listed(st["Resource"]))}
            for st in doc["Statement"]]


def _one(template, type_: str, props: dict | None = None) -> dict:
    found = template.find_resources(type_, {"Properties": props} if props else None)
    assert len(found) == 1, (type_, list(found))
    return next(iter(found.values()))["Properties"]


def test_roles_carry_exactly_the_tested_policies(synth):
    config, t, _ = synth
    keys = t["keys-iam"]
    for role, name, build in ((config["mwaa_role"], "dags", mwaa_execution_policy),
                              (config["sagemaker_role"], "training", sagemaker_execution_policy)):
        props = _one(keys, "AWS::IAM::Role", {"RoleName": role})
        (doc,) = [p["PolicyDocument"] for p in props["Policies"] if p["PolicyName"] == name]
        assert _normal(doc) == _normal(build(config.deployment))
    # KMS use is granted on the key (through S3 in the primary region only), never in an identity policy.
    key = _one(keys, "AWS::KMS::Key")
    assert key["EnableKeyRotation"] is True
    via = [s for s in key["KeyPolicy"]["Statement"] if s.get("Sid") == "RolesUseTheKeyThroughS3"][0]
    assert via["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-west-2.amazonaws.com"}}
    for props in keys.find_resources("AWS::IAM::Role").values():
        for policy in props["Properties"].get("Policies", []):
            if policy["PolicyName"] in ("dags", "training"):
                assert not any(a.startswith("kms:") for s in _normal(policy["PolicyDocument"]) for a in s["Action"])
    keys.resource_count_is("AWS::IAM::Policy", 0)  # no CDK grant added a default policy beside them


def test_the_dev_side_grants_the_prod_promotion_role(synth):
    """promote_<model>: the artifacts key and bucket grant the prod account's promotion role what
    ``dev_grants_to_prod`` says (the role itself, ``prod_promotion_policy``, is deployed in that account)."""
    config, t, _ = synth

    def norm(statements):  # CDK renders one principal as a string
        return _normal({"Statement": [{**st, "Principal": {"AWS": sorted(_listed(st["Principal"]["AWS"]))}}
                                      for st in statements]})

    grants = dev_grants_to_prod(config.deployment)
    assert grants["key_policy"] and grants["bucket_policy"]  # the reference specs promote fraud-detection
    key = _one(t["keys-iam"], "AWS::KMS::Key")
    (decrypt,) = [s for s in key["KeyPolicy"]["Statement"] if s.get("Sid") == "PromotionDecrypt"]
    assert norm([decrypt]) == norm(grants["key_policy"])
    policies = t["mlops"].find_resources("AWS::S3::BucketPolicy")
    statements = [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]
                  if s.get("Sid") == "PromotionReadModels"]
    assert norm(statements) == norm(grants["bucket_policy"])


def test_network_private_subnets_and_endpoints(synth):
    _, t, _ = synth
    net = t["network"]
    endpoints = net.find_resources("AWS::EC2::VPCEndpoint")
    interface = sorted(e["Properties"]["ServiceName"] for e in endpoints.values()
                       if e["Properties"]["VpcEndpointType"] == "Interface")
    assert interface == sorted(f"com.amazonaws.us-west-2.{s}" for s in (
        "sagemaker.api", "sagemaker.runtime", "ecr.api", "ecr.dkr", "logs", "monitoring", "sts"))
    assert all(e["Properties"]["PrivateDnsEnabled"] for e in endpoints.values()
               if e["Properties"]["VpcEndpointType"] == "Interface")
    gateway = [e["Properties"] for e in endpoints.values() if e["Properties"]["VpcEndpointType"] == "Gateway"]
    assert len(gateway) == 1 and gateway[0]["ServiceName"]["Fn::Join"][1][-1] == ".s3"
    private = [s for s in net.find_resources("AWS::EC2::Subnet").values()
               if not s["Properties"]["MapPublicIpOnLaunch"]]
    assert len(private) == 2
    # the S3 gateway endpoint serves the private subnets' route tables
    assert len(gateway[0]["RouteTableIds"]) == 2


def test_artifacts_bucket_versioned_kms_tiered_expiring_and_replicated_with_rtc(synth):
    config, t, _ = synth
    bucket = _one(t["mlops"], "AWS::S3::Bucket", {"BucketName": config["artifacts_bucket"]})
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms" and sse["BucketKeyEnabled"] is True
    assert "ArtifactsKey" in json.dumps(sse["ServerSideEncryptionByDefault"]["KMSMasterKeyID"])
    assert bucket["IntelligentTieringConfigurations"] == [
        {"Id": "archive", "Status": "Enabled", "Tierings": [{"AccessTier": "ARCHIVE_ACCESS", "Days": 90}]}]
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["Transitions"] == [{"StorageClass": "INTELLIGENT_TIERING", "TransitionInDays": 0}]
    assert rule["ExpirationInDays"] == 365 and rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 365}
    replication = bucket["ReplicationConfiguration"]
    assert "ReplicationRole" in json.dumps(replication["Role"])
    replicas = [r for r in config.serving_regions if r != config.primary]
    assert [r["Destination"]["Bucket"] for r in replication["Rules"]] == [
        f"arn:aws:s3:::{config['artifacts_bucket']}-{r}" for r in replicas]
    for rule, region in zip(replication["Rules"], replicas):
        dest = rule["Destination"]
        assert dest["ReplicationTime"] == {"Status": "Enabled", "Time": {"Minutes": 15}}
        assert dest["Metrics"] == {"Status": "Enabled", "EventThreshold": {"Minutes": 15}}
        assert dest["EncryptionConfiguration"]["ReplicaKmsKeyID"].startswith(f"arn:aws:kms:{region}:")
        assert rule["SourceSelectionCriteria"] == {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
        regional = t[f"mlops-{region}"]
        replica = _one(regional, "AWS::S3::Bucket")
        assert replica["BucketName"] == f"{config['artifacts_bucket']}-{region}"
        assert replica["VersioningConfiguration"] == {"Status": "Enabled"}
        assert replica["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 365
        key = _one(regional, "AWS::KMS::Key")
        writes = [s for s in key["KeyPolicy"]["Statement"] if s.get("Sid") == "ReplicationWritesReplicas"][0]
        assert writes["Principal"]["AWS"].endswith(":role/hybrid-mlops-s3-replication")


def test_mwaa_environment_reads_the_bundle_layout(synth):
    config, t, _ = synth
    env = _one(t["mlops"], "AWS::MWAA::Environment")
    assert env["AirflowVersion"] == "3.3.1"
    # bin/mwaa-bundle's layout, the keys bin/mwaa-deploy uploads (plugins/hybrid_mlops/mwaa/deploy.py)
    assert (env["DagS3Path"], env["PluginsS3Path"], env["RequirementsS3Path"], env["StartupScriptS3Path"]) == (
        "dags", "plugins.zip", "requirements.txt", "startup.sh")
    assert env["WebserverAccessMode"] == "PRIVATE_ONLY" and len(env["NetworkConfiguration"]["SubnetIds"]) == 2
    assert "MwaaExecutionRole" in json.dumps(env["ExecutionRoleArn"])
    source = _one(t["mlops"], "AWS::S3::Bucket", {"BucketName": config["mwaa"]["source_bucket"]})
    assert source["VersioningConfiguration"] == {"Status": "Enabled"}
    assert source["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True


def test_eks_access_entry_for_the_mwaa_role_on_every_serving_cluster(synth):
    config, t, _ = synth
    for region, cluster in config.deployment.clusters:
        stack = t["mlops"] if region == config.primary else t[f"mlops-{region}"]
        entry = _one(stack, "AWS::EKS::AccessEntry", {"ClusterName": cluster})
        assert entry["PrincipalArn"] == f"arn:aws:iam::{config['account']}:role/{config['mwaa_role']}"
        assert entry["Type"] == "STANDARD"
        assert entry["AccessPolicies"] == [{
            "PolicyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSEditPolicy",
            "AccessScope": {"Type": "namespace", "Namespaces": [config["serving_namespace"]]}}]


def test_route53_geolocation_record_per_serving_region(synth):
    config, t, _ = synth
    records = {r["Properties"]["SetIdentifier"]: r["Properties"]
               for r in t["inference"].find_resources("AWS::Route53::RecordSet").values()}
    assert set(records) == {*config.serving_regions, "default"}
    for region, serving in config.serving_regions.items():
        r = records[region]
        assert r["Name"] == config["dns"]["record_name"] and r["ResourceRecords"] == [serving["ingress"]]
        assert r["GeoLocation"] == {"ContinentCode": serving["geolocation"]["continent"]}
    assert records["default"]["GeoLocation"] == {"CountryCode": "*"}
    t["inference"].all_resources_properties("AWS::Route53::RecordSet", {"HostedZoneId": config["dns"]["hosted_zone_id"],
                                                                        "Type": "CNAME", "TTL": Match.any_value()})


def test_cfn_lint_has_no_errors(synth):
    _, _, out = synth
    templates = sorted(str(p) for p in Path(out).glob("*.template.json"))
    assert len(templates) == 6
    proc = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", *templates],
                          capture_output=True, text=True, timeout=300)
    findings = [line.split(":") for line in proc.stdout.splitlines()]  # file:line:col:end line:end col:rule:message
    errors = [f for f in findings if len(f) > 5 and f[5].startswith("E")]
    assert proc.returncode & 2 == 0 and not errors, proc.stdout + proc.stderr  # bit 2: errors
    assert proc.returncode == 0, "cfn-lint findings:\n" + proc.stdout + proc.stderr


def test_bad_config_names_the_field(tmp_path):
    from hybrid_mlops_infra.config import ConfigError, load_config

    good = json.loads((Path(__file__).resolve().parents[1] / "config" / "reference.json").read_text())
    cases = {"account": ("12345", "account='12345'"),
             "mwaa": ({**good["mwaa"], "source_bucket": "mwaa-src"}, "mwaa.source_bucket must start with 'airflow-'"),
             "serving_regions": ({"eu-west-1": good["serving_regions"]["eu-west-1"]}, "includes primary_region")}
    for key, (value, message) in cases.items():
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({**good, key: value}))
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
            load_config(path)
    narrow = {**good, "serving_regions": {"us-west-2": good["serving_regions"]["us-west-2"]}}
    (tmp_path / "narrow.json").write_text(json.dumps(narrow))
    with pytest.raises(ConfigError, match=r"serving_regions lacks \['ap-northeast-2', 'eu-west-1'\]"):
        load_config(tmp_path / "narrow.json")
