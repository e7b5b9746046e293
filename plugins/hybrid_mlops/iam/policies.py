"""The identity policies of the MWAA execution role and the SageMaker execution role, as plain data.

Pure Python (no AWS SDK, no CDK): ``infra/`` deploys exactly these documents and
``tests/test_least_privilege.py`` runs the DAGs on a moto server that enforces them, then removes
each statement in turn to show something the run did fails without it.

Each statement is what a DAG step calls, scoped to the deployment's bucket prefixes, model package
groups, training job names, endpoints, alarms, topics, workgroups and clusters. ``"*"`` only where the
action has no resource type in the Service Authorization Reference: ``ce:GetCostAndUsage``,
``cloudwatch:PutMetricData``, SageMaker's List actions and ``application-autoscaling:DescribeScalableTargets``.
Not here (the services' own needs, not the DAGs' calls): what MWAA itself needs (``infra``'s
``mwaa-platform`` policy), the training job's image pull and logs (``sagemaker-platform``), and KMS,
granted in the artifacts key's policy.

A third document, :func:`prod_promotion_policy`, is the prod account's promotion role (deployed in that
account); :func:`dev_grants_to_prod` is what the dev bucket and key grant it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Promotion:
    """A spec's ``promotion`` section: the prod account, region, role, bucket, key and package group."""

    account: str
    region: str
    role_arn: str
    bucket: str
    kms_key_arn: str
    model_package_group: str


@dataclass(frozen=True)
class ModelScope:
    """What one model spec names: its name (prefix of its S3 keys, job and endpoint names) and its package
    group; whether it serves on a SageMaker endpoint (``serving.target: sagemaker``), the external Model
    Monitor output ``watch_<model>`` reads (``drift.external_report_prefix``), its promotion."""

    name: str
    model_package_group: str
    #: the regions of its SageMaker endpoint (``serving.regions`` when ``serving.target: sagemaker``).
    endpoint_regions: tuple[str, ...] = ()
    #: ``drift.feature_attribution`` is set: the monitor's SHAP Processing job reads and writes the window.
    window_attributions: bool = False
    external_report_prefix: str | None = None
    promotion: Promotion | None = None


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
    #: ``backup_ml_assets``' bucket and its region (``HYBRID_MLOPS_BACKUP_BUCKET`` / ``_REGION``); none: no grant.
    backup_bucket: str | None = None
    backup_region: str | None = None

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
        # every registry write (register, approval, deploy, promotion) records the version in its group's index,
        # which the Models page reads: registry-index/<region>/<account>/<group>.json (a promotion's in the prod
        # account's region and account).
        _statement("RegistryIndex", ["s3:GetObject", "s3:PutObject"], sorted({
            f"{d.bucket_arn}/registry-index/*/*/{g}.json"
            for g in groups + [m.promotion.model_package_group or m.model_package_group for m in d.models if m.promotion]})),
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
    return {"Version": "2012-10-17", "Statement": statements + _endpoint_statements(d) + _watch_statements(d)
            + _promotion_statements(d) + _backup_statements(d)}


def _endpoint_statements(d: Deployment) -> list[dict]:
    """``serving.target: sagemaker``: the deploy's endpoint (named as the model), its configs
    (``<model>-v<N>-<digest>``), smoke test, rollback alarms and autoscaling, in each serving region."""
    served = [(m.name, r) for m in d.models for r in m.endpoint_regions]
    if not served:
        return []
    regions = sorted({r for _, r in served})
    return [
        # the Model itself is SageMakerJobs' model/<model>-v*; tags on create need sagemaker:AddTags.
        _statement("SageMakerEndpoints", [
            "sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:CreateEndpointConfig",
            "sagemaker:DescribeEndpointConfig", "sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint",
            "sagemaker:UpdateEndpoint", "sagemaker:InvokeEndpoint", "sagemaker:AddTags"],
            [d._arn("sagemaker", res, r) for name, r in served
             for res in (f"endpoint/{name}", f"endpoint-config/{name}-v*", f"model/{name}-v*")]),
        # the two alarms a blue/green update rolls back on (PutMetricAlarm with Tags needs TagResource).
        _statement("EndpointAlarms", ["cloudwatch:PutMetricAlarm", "cloudwatch:TagResource"],
                   [d._arn("cloudwatch", f"alarm:{name}-*", r) for name, r in served]),
        # scalable targets' ARNs carry an id AWS generates: the region's scalable targets.
        _statement("EndpointScaling", ["application-autoscaling:RegisterScalableTarget",
                                       "application-autoscaling:DeregisterScalableTarget",
                                       "application-autoscaling:PutScalingPolicy"],
                   [d._arn("application-autoscaling", "scalable-target/*", r) for r in regions]),
        # DescribeScalableTargets has no resource types: AWS requires "*".
        _statement("EndpointScalingRead", ["application-autoscaling:DescribeScalableTargets"], ["*"]),
        # the first RegisterScalableTarget of a SageMaker variant creates Application Auto Scaling's
        # service-linked role as the caller.
        _statement("ScalingServiceLinkedRole", ["iam:CreateServiceLinkedRole"],
                   [f"arn:{d.partition}:iam::{d.account}:role/aws-service-role/{SCALING_SERVICE}/{SCALING_ROLE}"],
                   Condition={"StringLike": {"iam:AWSServiceName": SCALING_SERVICE}}),
    ]


#: Application Auto Scaling's service-linked role for SageMaker endpoints (its name and service are fixed).
SCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
SCALING_ROLE = "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _watch_statements(d: Deployment) -> list[dict]:
    """``watch_<model>``: an external Model Monitor schedule's output (listed, its violations read)."""
    watched = [_split_s3(m.external_report_prefix) for m in d.models if m.external_report_prefix]
    if not watched:
        return []
    s3 = f"arn:{d.partition}:s3:::"
    return [_statement("ExternalReportsList", ["s3:ListBucket"], sorted({s3 + b for b, _ in watched}),
                       Condition={"StringLike": {"s3:prefix": sorted({p + "*" for _, p in watched})}}),
            _statement("ExternalReportsRead", ["s3:GetObject"], [f"{s3}{b}/{p}*" for b, p in watched])]


def _promotion_statements(d: Deployment) -> list[dict]:
    """``promote_<model>``: the prod role assumed; the dev group's resource policy read and merged."""
    promoted = [m for m in d.models if m.promotion]
    if not promoted:
        return []
    return [_statement("PromotionRole", ["sts:AssumeRole"], sorted({m.promotion.role_arn for m in promoted})),
            _statement("PromotionGroupPolicy", ["sagemaker:GetModelPackageGroupPolicy",
                                                "sagemaker:PutModelPackageGroupPolicy"],
                       [d._arn("sagemaker", f"model-package-group/{m.model_package_group}") for m in promoted])]


def _backup_statements(d: Deployment) -> list[dict]:
    """``backup_ml_assets`` / ``restore_ml_assets`` as the execution role: the versioned backup bucket in
    its region, copies of the versions' artifacts (the source version pinned), the registry's groups
    exported; a restore into the backup's region: the bucket the form names by default
    (``{bucket}-{region}``; another name or region needs its own grant), the groups re-registered there."""
    if not d.backup_bucket:
        return []
    s3 = f"arn:{d.partition}:s3:::"
    groups = [m.model_package_group for m in d.models]
    region = d.backup_region or d.region
    return [
        _statement("BackupBucket", ["s3:CreateBucket", "s3:GetBucketLocation", "s3:GetBucketVersioning",
                                    "s3:PutBucketVersioning", "s3:ListBucket"], [s3 + d.backup_bucket]),
        # snapshots written and read back (a rerun finds what it copied).
        _statement("BackupObjects", ["s3:GetObject", "s3:PutObject"], [f"{s3}{d.backup_bucket}/*"]),
        # a restore copies the backup version the manifest pins.
        _statement("RestoreSource", ["s3:GetObjectVersion"], [f"{s3}{d.backup_bucket}/*"]),
        # CopyObject of a source version (x-amz-copy-source ...?versionId=) needs GetObjectVersion on it.
        _statement("BackupSourceVersions", ["s3:GetObjectVersion"], d.objects("models/{model}/")),
        # the groups' tags are part of the snapshot (ListTags), in the primary region and the restore's.
        _statement("RegistryTags", ["sagemaker:ListTags"],
                   [d._arn("sagemaker", f"model-package-group/{g}", r) for r in sorted({d.region, region})
                    for g in groups]),
        _statement("RestoreBuckets", ["s3:CreateBucket", "s3:GetBucketLocation", "s3:PutBucketTagging",
                                      "s3:GetBucketTagging", "s3:ListBucket"], [f"{s3}{d.bucket}-{region}"]),
        # a copy whose checksum differs from the manifest's is deleted before the run fails.
        _statement("RestoreObjects", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                   [f"{s3}{d.bucket}-{region}/*"]),
        _statement("RestoreRegistry", [
            "sagemaker:CreateModelPackageGroup", "sagemaker:DescribeModelPackageGroup", "sagemaker:AddTags",
            "sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
            [d._arn("sagemaker", f"model-package-group/{g}", region) for g in groups]
            + [d._arn("sagemaker", f"model-package/{g}/*", region) for g in groups]),
    ]


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
        *_scoped(d, "WindowAttributions", ["s3:GetObject", "s3:PutObject"],
                 # the monitor's SHAP Processing job: the window's rows in, its analysis out.
                 [m for m in d.models if m.window_attributions], "monitoring/{model}/"),
        *_scoped(d, "EndpointCapture", ["s3:PutObject"],
                 # the endpoint's capture: the predictor's (capture/) and SageMaker's own (capture-sagemaker/).
                 [m for m in d.models if m.endpoint_regions], "capture/{model}/", "capture-sagemaker/{model}/"),
    ]}


def _scoped(d: Deployment, sid: str, actions: list[str], models: list[ModelScope], *keys: str) -> list[dict]:
    """One statement on ``keys`` of ``models`` only (none when no model needs it)."""
    if not models:
        return []
    arns = [f"arn:{d.partition}:s3:::{d.bucket}/{key.format(model=m.name)}*" for key in keys for m in models]
    return [_statement(sid, actions, arns)]


def prod_promotion_policy(d: Deployment) -> dict:
    """The prod account's promotion role (``promotion.role_arn``, deployed in that account): the prod
    registry's group and versions, the copies in the prod bucket (same keys, SSE-KMS with the prod key),
    and the dev models it copies from (granted by dev too: :func:`dev_grants_to_prod`)."""
    promoted = [m for m in d.models if m.promotion]
    s3 = f"arn:{d.partition}:s3:::"

    def arn(p: Promotion, resource: str) -> str:
        return f"arn:{d.partition}:sagemaker:{p.region}:{p.account}:{resource}"

    statements = [
        # register_in_prod: the group (created with tags) and the version; plan / a rerun look it up.
        _statement("ProdRegistry", ["sagemaker:CreateModelPackageGroup", "sagemaker:DescribeModelPackageGroup",
                                    "sagemaker:AddTags", "sagemaker:CreateModelPackage",
                                    "sagemaker:DescribeModelPackage"],
                   [arn(m.promotion, f"model-package-group/{m.promotion.model_package_group}") for m in promoted]
                   + [arn(m.promotion, f"model-package/{m.promotion.model_package_group}/*") for m in promoted]),
        # ListModelPackages has no resource types: AWS requires "*".
        _statement("ProdRegistryList", ["sagemaker:ListModelPackages"], ["*"]),
        # HEAD of a copy not made yet answers 404 (not 403) only with s3:ListBucket.
        _statement("ProdArtifactsList", ["s3:ListBucket"], sorted({s3 + m.promotion.bucket for m in promoted})),
        _statement("ProdArtifactsWrite", ["s3:GetObject", "s3:PutObject"],
                   [f"{s3}{m.promotion.bucket}/models/{m.name}/*" for m in promoted]),
        # CopyObject reads the pinned source version (x-amz-copy-source ...?versionId=).
        _statement("DevModelsRead", ["s3:GetObject", "s3:GetObjectVersion"], d.objects(*(
            f"models/{m.name}/" for m in promoted))),
    ]
    for i, (key, region, account) in enumerate(sorted({(m.promotion.kms_key_arn, m.promotion.region,
                                                        m.promotion.account) for m in promoted})):
        # CopyObject with SSE-KMS under the prod key (S3 asks KMS for the data key as the caller); an alias
        # ARN authorizes nothing itself: its key, matched by alias.
        alias = key.split(":", 5)[5] if ":alias/" in key else None
        statements.append(_statement(
            f"ProdKey{i or ''}", ["kms:GenerateDataKey"],
            [f"arn:{d.partition}:kms:{region}:{account}:key/*" if alias else key],
            **({"Condition": {"ForAnyValue:StringEquals": {"kms:ResourceAliases": alias}}} if alias else {})))
    # the dev artifacts key (its id is the dev stack's): only through S3 in dev's region.
    statements.append(_statement("DevKeyDecrypt", ["kms:Decrypt"], [d._arn("kms", "key/*")],
                                 Condition={"StringEquals": {"kms:ViaService": f"s3.{d.region}.amazonaws.com"}}))
    return {"Version": "2012-10-17", "Statement": statements}


def dev_grants_to_prod(d: Deployment) -> dict[str, list[dict]]:
    """What the dev account grants the promotion roles: ``bucket_policy`` statements of the artifacts
    bucket (the promoted models' objects and their versions) and ``key_policy`` statements of the
    artifacts key (``Resource: "*"`` in a key policy is that key), used only through S3."""
    promoted = [m for m in d.models if m.promotion]
    if not promoted:
        return {"bucket_policy": [], "key_policy": []}
    roles = sorted({m.promotion.role_arn for m in promoted})
    return {
        "bucket_policy": [_statement("PromotionReadModels", ["s3:GetObject", "s3:GetObjectVersion"],
                                     d.objects(*(f"models/{m.name}/" for m in promoted)),
                                     Principal={"AWS": roles})],
        "key_policy": [_statement("PromotionDecrypt", ["kms:Decrypt"], ["*"], Principal={"AWS": roles},
                                  Condition={"StringEquals": {"kms:ViaService": f"s3.{d.region}.amazonaws.com"}})],
    }
