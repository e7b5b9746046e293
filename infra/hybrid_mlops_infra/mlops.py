"""MLOps: the artifacts bucket (replicated to the serving regions), MWAA, and the deploy's cluster access."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_mwaa as mwaa
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .config import Config
from hybrid_mlops.iam.policies import dev_grants_to_prod

from .keys_iam import ARTIFACTS_KEY_ALIAS, REPLICATION_ROLE, replica_bucket, s3_via

AIRFLOW_VERSION = "3.3.1"
ARCHIVE_AFTER_DAYS = 90
DELETE_AFTER_DAYS = 365
#: The deploy's rights in a serving cluster: EKS's edit policy, in the models' namespace only.
EDIT_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSEditPolicy"


def _artifact_bucket_props(key: kms.IKey) -> dict:
    """Versioned, SSE-KMS with the bucket key, TLS only, no public access, Intelligent-Tiering with its
    archive tier after 90 days without access, deleted after 365 days (noncurrent versions too)."""
    return dict(
        versioned=True, encryption=s3.BucketEncryption.KMS, encryption_key=key, bucket_key_enabled=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED, removal_policy=RemovalPolicy.RETAIN,
        intelligent_tiering_configurations=[s3.IntelligentTieringConfiguration(
            name="archive", archive_access_tier_time=Duration.days(ARCHIVE_AFTER_DAYS))],
        lifecycle_rules=[s3.LifecycleRule(
            id="tier-then-expire",
            transitions=[s3.Transition(storage_class=s3.StorageClass.INTELLIGENT_TIERING,
                                       transition_after=Duration.days(0))],
            expiration=Duration.days(DELETE_AFTER_DAYS),
            noncurrent_version_expiration=Duration.days(DELETE_AFTER_DAYS),
            abort_incomplete_multipart_upload_after=Duration.days(7))])


def _access_entry(scope: Construct, config: Config, region: str) -> None:
    for cluster_region, cluster in config.deployment.clusters:
        if cluster_region == region:
            eks.CfnAccessEntry(
                scope, f"MwaaAccess-{cluster}", cluster_name=cluster, principal_arn=config.mwaa_role_arn,
                type="STANDARD",
                access_policies=[eks.CfnAccessEntry.AccessPolicyProperty(
                    policy_arn=EDIT_POLICY,
                    access_scope=eks.CfnAccessEntry.AccessScopeProperty(
                        type="namespace", namespaces=[config["serving_namespace"]]))])


class RegionalStack(Stack):
    """A serving region other than the primary: the replica bucket and its key, the MWAA role's cluster access."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        c = config
        replication_role = f"arn:aws:iam::{c['account']}:role/{REPLICATION_ROLE.format(prefix=c['prefix'])}"
        key = kms.Key(self, "ReplicaKey", alias=ARTIFACTS_KEY_ALIAS.format(prefix=c["prefix"]),
                      enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                      description="Artifacts replica (SSE-KMS)")
        key.add_to_resource_policy(iam.PolicyStatement(
            sid="ReplicationWritesReplicas", principals=[iam.ArnPrincipal(replication_role)],
            actions=["kms:Encrypt", "kms:GenerateDataKey"], resources=["*"], conditions=s3_via(self.region)))
        self.bucket = s3.Bucket(self, "ReplicaBucket", bucket_name=replica_bucket(c, self.region),
                                **_artifact_bucket_props(key))
        _access_entry(self, c, self.region)


class MlopsStack(Stack):
    """Primary region: artifacts bucket with cross-region replication (RTC), MWAA 3.3.1, cluster access."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, key: kms.IKey,
                 mwaa_role: iam.IRole, replication_role: iam.IRole, vpc: ec2.IVpc,
                 subnets: ec2.SelectedSubnets, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        c = config
        self.artifacts = s3.Bucket(self, "Artifacts", bucket_name=c["artifacts_bucket"], **_artifact_bucket_props(key))
        # promote_<model>: the prod account's promotion role reads the promoted models (CopyObject's source).
        for statement in dev_grants_to_prod(c.deployment)["bucket_policy"]:
            self.artifacts.add_to_resource_policy(iam.PolicyStatement.from_json(statement))
        replicas = [r for r in c.serving_regions if r != c.primary]
        if replicas:
            self.artifacts.node.default_child.add_property_override("ReplicationConfiguration", {
                "Role": replication_role.role_arn,
                "Rules": [{
                    "Id": f"to-{region}", "Priority": i, "Status": "Enabled", "Filter": {"Prefix": ""},
                    "DeleteMarkerReplication": {"Status": "Disabled"},
                    "SourceSelectionCriteria": {"SseKmsEncryptedObjects": {"Status": "Enabled"}},
                    "Destination": {
                        "Bucket": f"arn:aws:s3:::{replica_bucket(c, region)}",
                        "EncryptionConfiguration": {"ReplicaKmsKeyID": (
                            f"arn:aws:kms:{region}:{c['account']}:{ARTIFACTS_KEY_ALIAS.format(prefix=c['prefix'])}")},
                        "ReplicationTime": {"Status": "Enabled", "Time": {"Minutes": 15}},
                        "Metrics": {"Status": "Enabled", "EventThreshold": {"Minutes": 15}},
                    },
                } for i, region in enumerate(replicas, start=1)],
            })

        # MWAA's source bucket: bin/mwaa-bundle's layout, uploaded by bin/mwaa-deploy (versioned: it pins versions).
        self.source = s3.Bucket(
            self, "MwaaSource", bucket_name=c["mwaa"]["source_bucket"], versioned=True,
            encryption=s3.BucketEncryption.KMS, encryption_key=key, bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED, removal_policy=RemovalPolicy.RETAIN)
        sg = ec2.SecurityGroup(self, "MwaaSg", vpc=vpc, description="MWAA: its own components talk to each other")
        sg.add_ingress_rule(sg, ec2.Port.all_traffic())
        logging = {kind: mwaa.CfnEnvironment.ModuleLoggingConfigurationProperty(enabled=True, log_level="INFO")
                   for kind in ("dag_processing_logs", "scheduler_logs", "task_logs", "webserver_logs", "worker_logs")}
        self.mwaa_environment = mwaa.CfnEnvironment(
            self, "Mwaa", name=c["mwaa"]["environment"], airflow_version=AIRFLOW_VERSION,
            source_bucket_arn=self.source.bucket_arn, execution_role_arn=mwaa_role.role_arn,
            dag_s3_path="dags", plugins_s3_path="plugins.zip", requirements_s3_path="requirements.txt",
            startup_script_s3_path="startup.sh", kms_key=key.key_arn,
            environment_class=c["mwaa"]["environment_class"], max_workers=c["mwaa"]["max_workers"],
            webserver_access_mode="PRIVATE_ONLY",
            network_configuration=mwaa.CfnEnvironment.NetworkConfigurationProperty(
                security_group_ids=[sg.security_group_id], subnet_ids=subnets.subnet_ids[:2]),
            logging_configuration=mwaa.CfnEnvironment.LoggingConfigurationProperty(**logging))
        _access_entry(self, c, c.primary)
