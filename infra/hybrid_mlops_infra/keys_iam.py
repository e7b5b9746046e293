"""Keys and IAM: the artifacts KMS key and the roles (MWAA execution, SageMaker execution, S3 replication).

The DAG-facing policies are ``hybrid_mlops.iam.policies`` verbatim (the documents the least-privilege
test proves); the services' own needs are separate, named policies. KMS use is granted in the key
policy (through S3 only), so no identity policy carries a KMS statement.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from hybrid_mlops.iam.policies import dev_grants_to_prod, mwaa_execution_policy, sagemaker_execution_policy

from .config import Config

REPLICATION_ROLE = "{prefix}-s3-replication"
ARTIFACTS_KEY_ALIAS = "alias/{prefix}-artifacts"


def s3_via(region: str) -> dict:
    return {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}


class KeysIamStack(Stack):
    """The artifacts key and the three roles, in the primary region."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        c, d = config, config.deployment
        region, account, prefix = c.primary, c["account"], c["prefix"]

        self.mwaa_role = iam.Role(
            self, "MwaaExecutionRole", role_name=c["mwaa_role"],
            assumed_by=iam.CompositePrincipal(iam.ServicePrincipal("airflow.amazonaws.com"),
                                              iam.ServicePrincipal("airflow-env.amazonaws.com")),
            inline_policies={
                "dags": iam.PolicyDocument.from_json(mwaa_execution_policy(d)),
                "mwaa-platform": self._mwaa_platform(c)})
        self.sagemaker_role = iam.Role(
            self, "SageMakerExecutionRole", role_name=c["sagemaker_role"],
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            max_session_duration=Duration.hours(12),
            inline_policies={
                "training": iam.PolicyDocument.from_json(sagemaker_execution_policy(d)),
                "sagemaker-platform": self._sagemaker_platform(c)})
        self.replication_role = iam.Role(
            self, "ReplicationRole", role_name=REPLICATION_ROLE.format(prefix=prefix),
            assumed_by=iam.ServicePrincipal("s3.amazonaws.com"),
            inline_policies={"replicate": self._replication(c)})

        self.artifacts_key = kms.Key(
            self, "ArtifactsKey", alias=ARTIFACTS_KEY_ALIAS.format(prefix=prefix), enable_key_rotation=True,
            description="Artifacts bucket and MWAA source bucket (SSE-KMS)", removal_policy=RemovalPolicy.RETAIN)
        self.artifacts_key.add_to_resource_policy(iam.PolicyStatement(
            sid="RolesUseTheKeyThroughS3",
            principals=[self.mwaa_role, self.sagemaker_role],
            actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=["*"], conditions=s3_via(region)))
        # promote_<model>: the prod account's promotion role decrypts the models it copies (through S3).
        for statement in dev_grants_to_prod(d)["key_policy"]:
            self.artifacts_key.add_to_resource_policy(iam.PolicyStatement.from_json(statement))
        # MWAA encrypts its Celery queue with the environment's key (KmsKey), used by the role through SQS.
        self.artifacts_key.add_to_resource_policy(iam.PolicyStatement(
            sid="MwaaQueueThroughSqs", principals=[self.mwaa_role],
            actions=["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey*", "kms:Encrypt"], resources=["*"],
            conditions={"StringEquals": {"kms:ViaService": f"sqs.{region}.amazonaws.com"}}))
        self.artifacts_key.add_to_resource_policy(iam.PolicyStatement(
            sid="ReplicationReadsSourceObjects", principals=[self.replication_role],
            actions=["kms:Decrypt"], resources=["*"], conditions=s3_via(region)))
        self.artifacts_key.add_to_resource_policy(iam.PolicyStatement(
            sid="MwaaLogsAndQueue",
            principals=[iam.ServicePrincipal(f"logs.{region}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"],
            conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn":
                                    f"arn:aws:logs:{region}:{account}:log-group:airflow-{c['mwaa']['environment']}-*"}}))

    @staticmethod
    def _mwaa_platform(c: Config) -> iam.PolicyDocument:
        """What MWAA itself needs of its execution role (AWS's documented execution-role policy), scoped."""
        region, account, env = c.primary, c["account"], c["mwaa"]["environment"]
        source = f"arn:aws:s3:::{c['mwaa']['source_bucket']}"
        return iam.PolicyDocument(statements=[
            iam.PolicyStatement(sid="PublishMetrics", actions=["airflow:PublishMetrics"],
                                resources=[f"arn:aws:airflow:{region}:{account}:environment/{env}"]),
            iam.PolicyStatement(sid="DenyListAllBuckets", effect=iam.Effect.DENY,
                                actions=["s3:ListAllMyBuckets"], resources=[source, f"{source}/*"]),
            iam.PolicyStatement(sid="ReadSourceBucket",
                                actions=["s3:GetObject*", "s3:GetBucket*", "s3:List*"],
                                resources=[source, f"{source}/*"]),
            iam.PolicyStatement(sid="AirflowLogs",
                                actions=["logs:CreateLogStream", "logs:CreateLogGroup", "logs:PutLogEvents",
                                         "logs:GetLogEvents", "logs:GetLogRecord", "logs:GetLogGroupFields",
                                         "logs:GetQueryResults"],
                                resources=[f"arn:aws:logs:{region}:{account}:log-group:airflow-{env}-*"]),
            iam.PolicyStatement(sid="DescribeLogGroups", actions=["logs:DescribeLogGroups"], resources=["*"]),
            iam.PolicyStatement(sid="CeleryQueue",
                                actions=["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                         "sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:SendMessage"],
                                resources=[f"arn:aws:sqs:{region}:*:airflow-celery-*"]),
        ])

    @staticmethod
    def _sagemaker_platform(c: Config) -> iam.PolicyDocument:
        """What SageMaker needs to run a training job as the role: pull the image, write logs and metrics."""
        region, account = c.primary, c["account"]
        return iam.PolicyDocument(statements=[
            # GetAuthorizationToken has no resource type: AWS requires "*".
            iam.PolicyStatement(sid="EcrToken", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(sid="EcrPull",
                                actions=["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
                                         "ecr:BatchGetImage"],
                                resources=["arn:aws:ecr:*:763104351884:repository/*",
                                           f"arn:aws:ecr:{region}:{account}:repository/*"]),
            iam.PolicyStatement(sid="TrainingLogs",
                                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                         "logs:DescribeLogStreams"],
                                resources=[f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/TrainingJobs*"]),
            # PutMetricData has no resource type: AWS requires "*"; the condition keeps it to SageMaker's namespace.
            iam.PolicyStatement(sid="TrainingMetrics", actions=["cloudwatch:PutMetricData"], resources=["*"],
                                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}),
        ])

    @staticmethod
    def _replication(c: Config) -> iam.PolicyDocument:
        source = f"arn:aws:s3:::{c['artifacts_bucket']}"
        replicas = [f"arn:aws:s3:::{replica_bucket(c, r)}/*" for r in c.serving_regions if r != c.primary]
        return iam.PolicyDocument(statements=[
            iam.PolicyStatement(sid="SourceConfig", actions=["s3:GetReplicationConfiguration", "s3:ListBucket"],
                                resources=[source]),
            iam.PolicyStatement(sid="SourceObjects",
                                actions=["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl",
                                         "s3:GetObjectVersionTagging"],
                                resources=[f"{source}/*"]),
            iam.PolicyStatement(sid="ReplicaObjects",
                                actions=["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                                resources=replicas),
        ])


def replica_bucket(c: Config, region: str) -> str:
    """The replica of the artifacts bucket in a serving region: ``<artifacts bucket>-<region>``."""
    return f"{c['artifacts_bucket']}-{region}"
