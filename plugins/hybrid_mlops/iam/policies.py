"""The identity policies of the MWAA execution role and the SageMaker execution role, as plain data.

Pure Python (no AWS SDK, no CDK): ``infra/`` deploys exactly these documents and
``tests/test_least_privilege.py`` runs the DAGs on a moto server that enforces them, then removes
each statement in turn to show something the run did fails without it.

Each statement is what a DAG step calls, scoped to the deployment's bucket prefixes, model package
groups, training job names, topics, workgroups and clusters. ``"*"`` only where the action has no
resource type in the Service Authorization Reference: ``ce:GetCostAndUsage`` and
``cloudwatch:PutMetricData``. Not here (the services' own needs, not the DAGs' calls): what MWAA itself
needs (``infra``'s ``mwaa-platform`` policy), the training job's image pull and logs (``sagemaker-platform``),
and KMS, granted in the artifacts key's policy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelScope:
    """What one model spec names: its name (prefix of its S3 keys and job names) and its package group."""

    name: str
    model_package_group: str


@dataclass(frozen=True)
class Deployment:
    """The names the policies are scoped to (from ``infra/config/*.json`` and the model specs).

    :param account: the AWS account id.
    :param region: the primary region (training, registry, monitor, cost report).
    :param bucket: the artifacts bucket.
    :param sagemaker_role_name: the SageMaker execution role (passed to the training jobs).
    :param models: one :class:`ModelScope` per model spec.
    :param clusters: ``(region, cluster name)`` of every EKS cluster the deploy applies to.
    :param athena_workgroups: workgroups of the monitor's and the cost report's queries.
    :param athena_database: the Glue database of the capture tables.
    :param cur_database: the Glue database of the CUR 2.0 table; ``cur_table`` its table.
    :param cur_bucket: the bucket of the CUR 2.0 export (Athena reads it as the caller).
    """

    account: str
    region: str
    bucket: str
    sagemaker_role_name: str
    models: tuple[ModelScope, ...]
    clusters: tuple[tuple[str, str], ...]
    athena_workgroups: tuple[str, ...]
    athena_database: str
    cur_database: str
    cur_table: str
    cur_bucket: str
    partition: str = "aws"
    cost_topic: str = "hybrid-mlops-cost-alerts"

    @property
    def sagemaker_role_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{self.sagemaker_role_name}"

    def _arn(self, service: str, resource: str, region: str | None = None) -> str:
        return f"arn:{self.partition}:{service}:{region or self.region}:{self.account}:{resource}"

    def objects(self, *keys: str) -> list[str]:
        """Object ARNs of each key (``{model}``: one per model); a key ending in ``/`` is a prefix (``/*``)."""
        out: list[str] = []
        for key in keys:
            names = [m.name for m in self.models] if "{model}" in key else [None]
            out += [f"arn:{self.partition}:s3:::{self.bucket}/{key.format(model=n)}" + ("*" if key.endswith("/") else "")
                    for n in names]
        return out

    @property
    def bucket_arn(self) -> str:
        return f"arn:{self.partition}:s3:::{self.bucket}"


def _statement(sid: str, actions: list[str], resources: list[str], **extra) -> dict:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources, **extra}


def mwaa_execution_policy(d: Deployment) -> dict:
    """What the DAGs call as the MWAA execution role (the Airflow connection's principal)."""
    groups = [m.model_package_group for m in d.models]
    statements = [
        # prepare_data lists its channels (a retry reuses them), the monitor lists the hour's capture,
        # HeadBucket checks the bucket: s3:ListBucket on the bucket.
        _statement("ArtifactsList", ["s3:ListBucket", "s3:GetBucketLocation"], [d.bucket_arn]),
        # evaluate reads model.tar.gz, the monitor the baseline, the capture and the labels, the deploy its
        # deployment record, batch_score checks its input exists (the provider's check_s3_url), a retry its channels
        # (and a content-addressed script it may reuse); Athena reads the capture as the caller and the caller
        # reads the results back.
        _statement("ArtifactsRead", ["s3:GetObject"], d.objects(
            "data/{model}/", "code/monitoring/", "models/{model}/", "capture/{model}/", "labels/{model}/",
            "monitoring/{model}/", "deployments/{model}.json", "batch-input/{model}/", "cost-reports/",
            "athena-results/")),
        # prepare_data writes the channels and the source bundle, evaluate the baseline beside model.tar.gz and
        # the explainability job's inputs (its script under code/monitoring/), the deploy its deployment record,
        # the monitor its reports, the cost
        # report its files; Athena writes results as the caller.
        _statement("ArtifactsWrite", ["s3:PutObject"], d.objects(
            "data/{model}/", "code/{model}/", "code/monitoring/", "models/{model}/", "monitoring/{model}/",
            "deployments/{model}.json", "cost-reports/", "athena-results/")),
        # train (<model>-train-<run key>), the explainability baseline (a Processing job named from the model),
        # batch_score (a model <model>-v<version>-<digest> and a transform job <model>-batch-<run key>);
        # tags on create need sagemaker:AddTags.
        _statement("SageMakerJobs", ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
                                     "sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob",
                                     "sagemaker:CreateModel", "sagemaker:DescribeModel",
                                     "sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob",
                                     "sagemaker:AddTags"],
                   [d._arn("sagemaker", f"{kind}/{m.name}-{suffix}") for m in d.models
                    for kind, suffix in (("training-job", "train-*"), ("processing-job", "*"), ("model", "v*"),
                                         ("transform-job", "batch-*"))]),
        # CreateTrainingJob, CreateProcessingJob and CreateModel hand the job (or model) its role.
        _statement("PassSageMakerRole", ["iam:PassRole"], [d.sagemaker_role_arn],
                   Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
        # register / approval_gate / deploy: the model's own group and its versions only.
        _statement("ModelRegistry", [
            "sagemaker:CreateModelPackageGroup", "sagemaker:DescribeModelPackageGroup", "sagemaker:AddTags",
            "sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
            [d._arn("sagemaker", f"model-package-group/{g}") for g in groups]
            + [d._arn("sagemaker", f"model-package/{g}/*") for g in groups]),
        # the latest version of a group; the cost report's training jobs of the day: SageMaker's List actions
        # have no resource types, AWS requires "*".
        _statement("SageMakerList", ["sagemaker:ListModelPackages", "sagemaker:ListTrainingJobs"], ["*"]),
        # deploy: the kube config of each serving region's cluster (the token is signed locally).
        _statement("EksClusters", ["eks:DescribeCluster"],
                   [d._arn("eks", f"cluster/{name}", region) for region, name in d.clusters]),
        # monitor and cost report: queries in the project's workgroups.
        _statement("AthenaQueries", ["athena:StartQueryExecution", "athena:GetQueryExecution",
                                     "athena:GetQueryResults"],
                   [d._arn("athena", f"workgroup/{w}") for w in d.athena_workgroups]),
        # Athena resolves (and, for the capture table's DDL, creates) tables in Glue as the caller.
        _statement("GlueCatalog", ["glue:GetDatabase", "glue:GetTable", "glue:CreateTable"],
                   [d._arn("glue", "catalog"), d._arn("glue", f"database/{d.athena_database}"),
                    d._arn("glue", f"database/{d.cur_database}"),
                    *[d._arn("glue", f"table/{d.athena_database}/capture_{m.name.replace('-', '_')}") for m in d.models],
                    d._arn("glue", f"table/{d.cur_database}/{d.cur_table}")]),
        # the split cost query: Athena reads the CUR 2.0 export as the caller.
        _statement("CurExportRead", ["s3:ListBucket", "s3:GetObject"],
                   [f"arn:{d.partition}:s3:::{d.cur_bucket}", f"arn:{d.partition}:s3:::{d.cur_bucket}/*"]),
        # drift and cost alerts: the project's topics (created if missing, tagged).
        _statement("Alerts", ["sns:CreateTopic", "sns:Publish", "sns:TagResource"],
                   [d._arn("sns", f"hybrid-mlops-drift-{m.name}") for m in d.models] + [d._arn("sns", d.cost_topic)]),
        # Cost Explorer has no resource types: AWS requires "*".
        _statement("CostExplorer", ["ce:GetCostAndUsage"], ["*"]),
        # CloudWatch metrics have no resource types: AWS requires "*".
        _statement("Metrics", ["cloudwatch:PutMetricData"], ["*"]),
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def sagemaker_execution_policy(d: Deployment) -> dict:
    """What the jobs read and write as the SageMaker execution role (training: channels in, model out;
    the explainability baseline's Processing job: model and rows in, analysis out; Batch Transform:
    model and input in, scores out)."""
    return {"Version": "2012-10-17", "Statement": [
        # SageMaker lists an S3Prefix channel and the checkpoint prefix it resumes from.
        _statement("ArtifactsList", ["s3:ListBucket"], [d.bucket_arn]),
        # the channels, the source bundle, the checkpoints of a resumed spot job; the explainability job's
        # inputs (the model, its rows, the content-addressed script); Batch Transform's model and input
        # (batch-input/<model>/; another input prefix needs its own grant).
        _statement("ChannelsRead", ["s3:GetObject"], d.objects("data/{model}/", "code/{model}/", "code/monitoring/",
                                                               "models/{model}/", "checkpoints/{model}/",
                                                               "batch-input/{model}/")),
        # model.tar.gz and the checkpoints; the explainability job's analysis beside the model; the scores.
        _statement("OutputWrite", ["s3:PutObject"], d.objects("models/{model}/", "checkpoints/{model}/",
                                                              "batch-scores/{model}/")),
    ]}
