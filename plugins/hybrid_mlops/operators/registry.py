"""Model Registry operators: register a version, and record a person's approval decision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.standard.operators.hitl import ApprovalOperator

from hybrid_mlops.hooks.registry import (
    APPROVAL_STAGES,
    STAGE_DEV,
    STAGE_STAGING,
    ModelRegistryHook,
    encode_metadata,
    metadata_text,
    model_life_cycle,
)
from hybrid_mlops.links.registry import ModelPackageLink

if TYPE_CHECKING:
    from airflow.sdk import Context

RUN_KEY = "training_job"  # the metadata property that makes registration idempotent


class RegisterModelVersionOperator(AwsBaseOperator[ModelRegistryHook]):
    """Register a trained model as a new version of its package group, ``PendingManualApproval``,
    in lifecycle stage ``dev`` (``ModelLifeCycle``: ``dev`` / ``PendingApproval``).

    The group is created (tagged) when missing. The version carries the model artifact, the
    inference image, ``ModelMetrics`` (evaluation, data-quality baseline), and lineage in
    ``MetadataProperties`` and ``CustomerMetadataProperties``. A retried task finds the version its
    first try registered (by ``customer_metadata["training_job"]``) instead of adding a twin.

    .. seealso::
        https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackage.html

    :param model_package_group: the package group name (templated).
    :param group_description: description for a newly created group.
    :param group_tags: tags for a newly created group (team, environment, ...).
    :param model_data_url: S3 URI of ``model.tar.gz`` (templated).
    :param inference_image: the serving image recorded in the package (templated).
    :param model_metrics: the ``ModelMetrics`` request block (templated).
    :param customer_metadata: lineage and metrics as string properties; must include
        ``training_job`` (templated).
    :param metadata_properties: ``MetadataProperties`` (GeneratedBy, CommitId, ...) (templated).
    :param description: the version's description (templated).
    """

    aws_hook_class = ModelRegistryHook
    template_fields: Sequence[str] = aws_template_fields(
        "model_package_group", "model_data_url", "inference_image", "model_metrics",
        "customer_metadata", "metadata_properties", "description",
    )
    template_fields_renderers: ClassVar[dict] = {
        "model_metrics": "json", "customer_metadata": "json", "metadata_properties": "json",
    }
    operator_extra_links = (ModelPackageLink(),)

    def __init__(
        self,
        *,
        model_package_group: str,
        model_data_url: str,
        inference_image: str,
        customer_metadata: dict[str, Any],
        model_metrics: dict | None = None,
        metadata_properties: dict | None = None,
        group_description: str = "",
        group_tags: dict[str, str] | None = None,
        description: str = "",
        content_types: Sequence[str] = ("application/json",),
        response_types: Sequence[str] = ("application/json",),
        realtime_instance_types: Sequence[str] = (),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.model_package_group = model_package_group
        self.model_data_url = model_data_url
        self.inference_image = inference_image
        self.customer_metadata = customer_metadata
        self.model_metrics = model_metrics
        self.metadata_properties = metadata_properties
        self.group_description = group_description
        self.group_tags = dict(group_tags or {})
        self.description = description
        self.content_types = list(content_types)
        self.response_types = list(response_types)
        self.realtime_instance_types = list(realtime_instance_types)

    def execute(self, context: Context) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        if RUN_KEY not in self.customer_metadata:
            raise AirflowFailException(f"customer_metadata must include {RUN_KEY!r} (the idempotency key)")
        key = metadata_text(self.customer_metadata[RUN_KEY])  # as the registry stores it: find_package compares
        self.hook.ensure_group(self.model_package_group, self.group_description, self.group_tags)
        existing = self.hook.find_package(self.model_package_group, RUN_KEY, key)
        if existing:
            self._persist_link(context)
            self.log.info("Version %s of %s was registered by an earlier try for %s; reusing it.",
                          existing["ModelPackageVersion"], self.model_package_group, key)
            return self._summary(existing, reused=True)
        inference: dict[str, Any] = {
            "Containers": [{"Image": self.inference_image, "ModelDataUrl": self.model_data_url}],
            "SupportedContentTypes": self.content_types,
            "SupportedResponseMIMETypes": self.response_types,
        }
        if self.realtime_instance_types:
            inference["SupportedRealtimeInferenceInstanceTypes"] = self.realtime_instance_types
        request: dict[str, Any] = {
            "ModelPackageGroupName": self.model_package_group,
            "ModelPackageDescription": self.description[:1024],
            "ModelApprovalStatus": "PendingManualApproval",
            "InferenceSpecification": inference,
            "CustomerMetadataProperties": encode_metadata(self.customer_metadata),
            "ClientToken": key[:36] if len(key) <= 36 else key[-36:],
            "ModelLifeCycle": model_life_cycle(STAGE_DEV, "PendingApproval", f"Registered from {key}; awaiting approval"),
        }
        if self.model_metrics:
            request["ModelMetrics"] = self.model_metrics
        if self.metadata_properties:
            request["MetadataProperties"] = self.metadata_properties
        arn = self.hook.create_package(request)
        described = self.hook.describe_package(arn)
        self._persist_link(context)
        self.log.info("Registered %s version %s (%s)", self.model_package_group,
                      described["ModelPackageVersion"], arn)
        return self._summary(described, reused=False)

    def _persist_link(self, context: Context) -> None:
        import urllib.parse

        ModelPackageLink.persist(
            context=context, operator=self, region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            model_package_group=urllib.parse.quote(self.model_package_group, safe=""),
        )

    @staticmethod
    def _summary(described: dict, reused: bool) -> dict:
        return {
            "ModelPackageArn": described["ModelPackageArn"],
            "ModelPackageVersion": described["ModelPackageVersion"],
            "ModelApprovalStatus": described["ModelApprovalStatus"],
            "ModelDataUrl": described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],
            "reused": reused,
        }


class RegistryApprovalOperator(ApprovalOperator):
    """Ask a person to approve a model version to a lifecycle stage, or reject it, and record the answer
    (the decision, the stage and the person) in the registry.

    The options match the lifecycle: ``Approve to staging``, ``Approve to prod``, ``Reject``. The answer is
    written to the package before the operator's usual behaviour (on ``Reject`` the downstream deployment
    is skipped): ``ModelApprovalStatus`` and ``ApprovalDescription`` (the decision and who made it),
    ``ModelLifeCycle`` (approved -> the chosen stage / ``Approved``, rejected -> ``dev`` / ``Rejected``, the
    same text in ``StageDescription``), and the metadata properties ``decision=human``, ``decided_by`` and
    ``decided_stage``. The person is the HITL responder Airflow records (``responded_by_user``); a
    timeout's default is recorded as such.

    .. seealso::
        https://airflow.apache.org/docs/apache-airflow-providers-standard/stable/operators/hitl.html
        https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateModelPackage.html

    :param package_arn: the model package version to decide on (templated).
    :param aws_conn_id: the AWS connection of the registry.
    :param stage_on_approval: the spec's ``approval.stage_on_approval``: what a ``defaults`` of ``Approve``
        means (``Approve to staging`` or ``Approve to prod``).
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "package_arn")

    def __init__(self, *, package_arn: str, aws_conn_id: str | None = "aws_default",
                 stage_on_approval: str = STAGE_STAGING, defaults: str | list[str] | None = None, **kwargs):
        from hybrid_mlops.approval import REVIEW_OPTIONS, review_option

        if stage_on_approval not in APPROVAL_STAGES:
            raise ValueError(f"stage_on_approval={stage_on_approval!r} must be one of {APPROVAL_STAGES}")
        if isinstance(defaults, str):
            defaults = review_option(defaults, stage_on_approval)
        super().__init__(**kwargs)
        # ApprovalOperator fixes its options to Approve / Reject: these are the lifecycle's.
        self.options = list(REVIEW_OPTIONS)
        self.defaults = [defaults] if isinstance(defaults, str) else defaults
        self.validate_defaults()
        self.package_arn = package_arn
        self.aws_conn_id = aws_conn_id
        self.stage_on_approval = stage_on_approval

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        from airflow.providers.standard.operators.hitl import HITLOperator

        from hybrid_mlops.approval import OPTION_STAGE

        if "error" in event:  # no answer and no default: the base class raises with the reason
            return super().execute_complete(context, event)
        chosen = event["chosen_options"][0]
        self.validate_chosen_options([chosen])
        who = event.get("responded_by_user") or {}
        who_name = who.get("name") or who.get("id") or "the response timeout default"
        stage = OPTION_STAGE.get(chosen)
        if stage:
            status, reason = "Approved", f"Approved to {stage} by {who_name} in Airflow (human-in-the-loop)"
            lifecycle = model_life_cycle(stage, "Approved", reason)
        else:
            status, reason = "Rejected", f"Rejected by {who_name} in Airflow (human-in-the-loop)"
            lifecycle = model_life_cycle(STAGE_DEV, "Rejected", reason)
        hook = ModelRegistryHook(aws_conn_id=self.aws_conn_id)
        hook.update_package(self.package_arn, status=status, reason=reason, lifecycle=lifecycle, properties={
            "decided_by": who_name, "decision": "human", "decided_stage": stage or STAGE_DEV,
        })
        self.log.info("Recorded %s (%s) for %s by %s", status, chosen, self.package_arn, who_name)
        if stage:  # an approval: downstream runs (the base class would skip anything but its own "Approve")
            result = HITLOperator.execute_complete(self, context, event)
            self.hitl_summary_extra["approved"] = True
            return result
        return super().execute_complete(context, event)
