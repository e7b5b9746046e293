"""The steps of ``promote_<model>``: an Approved version of the dev registry copied into the prod account.

Run inside the DAG's tasks (nothing here runs at parse time). Dev is read and written with the
Airflow connection (``settings.aws_conn_id()``); prod as ``promotion.role_arn`` assumed from it.
Every step is idempotent: the prod version is found again by the dev version's ARN
(``source_package_arn`` in its CustomerMetadataProperties), copies by their checksum, the group policy
by its statements' ``Sid``.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone

from hybrid_mlops import settings
from hybrid_mlops.specs.model import TASK_METRICS, ModelSpec, PromotionSpec

log = logging.getLogger(__name__)

LATEST = "latest-approved"
#: The prod version's metadata property holding the dev version's ARN: how a rerun finds it.
SOURCE_KEY = "source_package_arn"
#: The dev version's metadata property holding the prod version's ARN once promoted.
PROMOTED_KEY = "promoted_to"
#: Metadata of the dev version's life in dev (where it serves, where it went): not carried to prod, where
#: the deploy would read them as the prod version's own.
DEV_STATE_KEYS = ("deployed_regions", "deployed_at", "deployed_target", PROMOTED_KEY)


def _fail(message: str):
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


def promotion_of(spec: ModelSpec) -> PromotionSpec:
    if spec.promotion is None:
        _fail(f"{spec.name}: the spec has no promotion section (promotion.account_id, region, role_arn, "
              "bucket, kms_key_arn); add it to promote this model")
    return spec.promotion


def prod_group(spec: ModelSpec) -> str:
    return promotion_of(spec).model_package_group or spec.registry.model_package_group


def dev_registry():
    from hybrid_mlops.hooks.promotion import PromotionRegistryHook

    return PromotionRegistryHook(aws_conn_id=settings.aws_conn_id(), region_name=settings.region())


def _session_name(spec: ModelSpec) -> str:
    return f"hybrid-mlops-promote-{spec.name}"[:64]


def prod_registry(spec: ModelSpec):
    from hybrid_mlops.hooks.promotion import CrossAccountRegistryHook

    p = promotion_of(spec)
    return CrossAccountRegistryHook(aws_conn_id=settings.aws_conn_id(), region_name=p.region, role_arn=p.role_arn,
                                    role_session_name=_session_name(spec), external_id=p.external_id)


def prod_s3(spec: ModelSpec):
    from hybrid_mlops.hooks.promotion import ArtifactCopyHook

    p = promotion_of(spec)
    return ArtifactCopyHook(aws_conn_id=settings.aws_conn_id(), region_name=p.region, role_arn=p.role_arn,
                            role_session_name=_session_name(spec), external_id=p.external_id)


def find_promoted(spec: ModelSpec, source_arn: str, prod=None) -> dict | None:
    """The prod version promoted from ``source_arn``, if any (a group not created yet holds none)."""
    from hybrid_mlops.hooks.registry import metadata_text

    return (prod or prod_registry(spec)).find_in_group(prod_group(spec), SOURCE_KEY, metadata_text(source_arn))


def _s3_uris(value) -> list[str]:
    if isinstance(value, dict):
        return [u for v in value.values() for u in _s3_uris(v)]
    if isinstance(value, list):
        return [u for v in value for u in _s3_uris(v)]
    return [value] if isinstance(value, str) and value.startswith("s3://") else []


def _rewrite(value, mapping: dict[str, str]):
    """``value`` with every S3 URI of ``mapping`` replaced by its prod copy (and without the dev
    object's ``ModelDataETag``: SageMaker records the prod copy's own)."""
    if isinstance(value, dict):
        return {k: _rewrite(v, mapping) for k, v in value.items() if k != "ModelDataETag"}
    if isinstance(value, list):
        return [_rewrite(v, mapping) for v in value]
    return mapping.get(value, value) if isinstance(value, str) else value


#: The version's blocks a promotion carries over (their S3 URIs rewritten to the prod copies).
CARRIED = ("InferenceSpecification", "AdditionalInferenceSpecifications", "ModelMetrics", "DriftCheckBaselines",
           "MetadataProperties", "SamplePayloadUrl", "Domain", "Task")


def plan(spec: ModelSpec, version: str, stage: str) -> dict:
    """What the run would promote: the dev version (Approved), its metrics and stage, the objects to copy,
    and the prod version already promoted from it (if any). Checks the form's fields, naming them."""
    from hybrid_mlops.hooks.registry import APPROVAL_STAGES

    p = promotion_of(spec)
    wanted = str(version or LATEST).strip()
    if wanted != LATEST and not wanted.isdigit():
        _fail(f"version={version!r} must be {LATEST!r} or a version number of {spec.registry.model_package_group}")
    if stage not in APPROVAL_STAGES:
        _fail(f"stage={stage!r} must be one of {list(APPROVAL_STAGES)}")
    group = spec.registry.model_package_group
    dev = dev_registry()
    package = dev.latest_package(group, "Approved") if wanted == LATEST else dev.package_by_version(group, int(wanted))
    if package is None:
        _fail(f"version={wanted}: model package group {group!r} has "
              + ("no Approved version" if wanted == LATEST else f"no version {wanted}"))
    if package["ModelApprovalStatus"] != "Approved":
        _fail(f"version={wanted}: {group} version {package['ModelPackageVersion']} is "
              f"{package['ModelApprovalStatus']}; only Approved versions are promoted")
    arn = package["ModelPackageArn"]
    source_account = arn.split(":")[4]
    if source_account == p.account_id:
        _fail(f"promotion.account_id={p.account_id!r} is the account {group} is registered in; "
              "name the prod account")
    model_data = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    s3 = _dev_s3()
    bucket, key = s3.parse_s3_url(model_data)
    folder = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    sources = [f"s3://{bucket}/{k}" for k in s3.list_keys(bucket_name=bucket, prefix=folder, delimiter="/")]
    referenced = _s3_uris({k: package.get(k) for k in CARRIED})
    objects = []
    for uri in dict.fromkeys([*referenced, *sources]):
        objects.append({"source": uri, "target": f"s3://{p.bucket}/{s3.parse_s3_url(uri)[1]}"})
    existing = find_promoted(spec, arn)
    props = package.get("CustomerMetadataProperties") or {}
    metrics = {m: props[m] for m in TASK_METRICS[spec.task] if m in props}
    lifecycle = package.get("ModelLifeCycle") or {}
    result = {
        "package_arn": arn, "version": package["ModelPackageVersion"], "group": group,
        "source_account": source_account, "source_region": arn.split(":")[3],
        "prod_account": p.account_id, "prod_region": p.region, "prod_group": prod_group(spec),
        "stage": stage, "metrics": metrics, "lifecycle": lifecycle, "objects": objects,
        "prod_package_arn": existing["ModelPackageArn"] if existing else None,
    }
    result["summary"] = _summary(spec, result)
    log.info("%s", result["summary"])
    return result


def _summary(spec: ModelSpec, plan_: dict) -> str:
    lifecycle = plan_["lifecycle"]
    lines = [
        f"**{plan_['group']} version {plan_['version']}** ({plan_['package_arn']})",
        f"- from account {plan_['source_account']} ({plan_['source_region']}) to account {plan_['prod_account']} "
        f"({plan_['prod_region']}), group `{plan_['prod_group']}`, lifecycle stage **{plan_['stage']}**",
        "- metrics: " + (", ".join(f"{k} {v}" for k, v in plan_["metrics"].items()) or "none recorded"),
        f"- dev lifecycle stage: {lifecycle.get('Stage', 'unknown')} / {lifecycle.get('StageStatus', '-')}"
        + (f" ({lifecycle['StageDescription']})" if lifecycle.get("StageDescription") else ""),
        f"- artifacts copied to s3://{promotion_of(spec).bucket}/ (SSE-KMS {promotion_of(spec).kms_key_arn}): "
        + ", ".join(o["source"].rsplit("/", 1)[-1] for o in plan_["objects"]),
    ]
    if plan_["prod_package_arn"]:
        lines.append(f"- already promoted: {plan_['prod_package_arn']}")
    return "\n".join(lines)


def _dev_s3():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=settings.aws_conn_id(), region_name=settings.region())


def grant_prod_read(spec: ModelSpec, plan_: dict) -> dict:
    """The dev group's resource policy lets the prod account read the group and its versions."""
    from hybrid_mlops.hooks.promotion import cross_account_read_statements, merge_statements

    dev = dev_registry()
    group = plan_["group"]
    current = dev.group_policy(group)
    wanted = merge_statements(current, cross_account_read_statements(dev.group_arn(group), plan_["prod_account"]))
    if current == wanted:
        log.info("%s already lets account %s read it", group, plan_["prod_account"])
        return {"group": group, "changed": False}
    dev.put_group_policy(group, wanted)
    log.info("%s resource policy now lets account %s read the group and its versions", group, plan_["prod_account"])
    return {"group": group, "changed": True}


def copy_artifacts(spec: ModelSpec, plan_: dict) -> list[dict]:
    """Each object into the prod bucket, SSE-KMS with the prod key, checksum verified."""
    from hybrid_mlops.hooks.promotion import ChecksumMismatch, CopyFailed

    p = promotion_of(spec)
    s3 = prod_s3(spec)
    copies = []
    for obj in plan_["objects"]:
        try:
            copies.append(s3.copy_verified(obj["source"], obj["target"], p.kms_key_arn,
                                           source_owner=plan_["source_account"], target_owner=p.account_id))
        except ChecksumMismatch:
            raise  # a retry copies again
        except CopyFailed as err:
            _fail(f"{err} as {p.role_arn} (promotion.bucket={p.bucket!r}, promotion.kms_key_arn={p.kms_key_arn!r}; "
                  "the role needs s3:GetObject on the source, s3:PutObject on the bucket, kms:GenerateDataKey on the key)")
    return copies


def register_in_prod(spec: ModelSpec, plan_: dict, approval: dict | None, run_id: str) -> dict:
    """The version in the prod group (created, tagged, when missing): Approved, in the chosen stage,
    with the dev version's inference specification and metrics pointing at the prod copies."""
    from hybrid_mlops.hooks.registry import model_life_cycle

    prod = prod_registry(spec)
    group = plan_["prod_group"]
    tags = {**spec.cost_tags(), "environment": "prod", "source-account": plan_["source_account"]}
    prod.ensure_group(group, spec.registry.description or f"{spec.name} (promoted from {plan_['source_account']})", tags)
    existing = find_promoted(spec, plan_["package_arn"], prod)
    if existing:
        log.info("%s version %s was promoted earlier as %s; nothing to register", plan_["group"], plan_["version"],
                 existing["ModelPackageArn"])
        return _registered(existing, reused=True)
    source = dev_registry().describe_package(plan_["package_arn"])
    mapping = {o["source"]: o["target"] for o in plan_["objects"]}
    who = (approval or {}).get("responded_by_user") or {}
    approved_by = who.get("name") or who.get("id") or "unknown"
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    reason = (f"Promoted from account {plan_['source_account']} ({plan_['group']} version {plan_['version']}), "
              f"approved by {approved_by} in Airflow (human-in-the-loop)")
    request = {k: _rewrite(source[k], mapping) for k in CARRIED if source.get(k)}
    unmapped = [u for u in _s3_uris(request) if not u.startswith(f"s3://{promotion_of(spec).bucket}/")]
    if unmapped:
        _fail(f"{unmapped} would still point at the dev account after the copy; nothing was registered")
    request.update({
        "ModelPackageGroupName": group,
        "ModelPackageDescription": f"{source.get('ModelPackageDescription', '')} ({reason})"[:1024],
        # CreateModelPackage takes no ApprovalDescription: the reason is in the description and StageDescription
        "ModelApprovalStatus": "Approved",
        "CustomerMetadataProperties": {
            **{k: v for k, v in (source.get("CustomerMetadataProperties") or {}).items() if k not in DEV_STATE_KEYS},
            "source_account": plan_["source_account"],
            "source_region": plan_["source_region"],
            SOURCE_KEY: plan_["package_arn"],
            "source_version": plan_["version"],
            "promoted_by": approved_by,
            "promoted_at": now,
            "promotion_run": run_id,
        },
        # ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,35}$: one per dev version, so a lost response is not a second version
        "ClientToken": "promote-" + hashlib.sha256(plan_["package_arn"].encode()).hexdigest()[:28],
        "ModelLifeCycle": model_life_cycle(plan_["stage"], "Approved", reason),
    })
    arn = prod.create_package(request)
    described = prod.describe_package(arn)
    log.info("Registered %s version %s in account %s (%s), stage %s", group, described["ModelPackageVersion"],
             plan_["prod_account"], arn, plan_["stage"])
    return _registered(described, reused=False)


def _registered(described: dict, reused: bool) -> dict:
    return {"ModelPackageArn": described["ModelPackageArn"], "ModelPackageVersion": described["ModelPackageVersion"],
            "ModelApprovalStatus": described["ModelApprovalStatus"],
            "ModelDataUrl": described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"], "reused": reused}


def record_promotion(spec: ModelSpec, plan_: dict, registered: dict | None) -> dict:
    """The dev version says where it went: ``promoted_to`` and its lifecycle's StageStatus ``Promoted``
    (its Stage unchanged). Skipped when nothing was promoted (rejected) or it already says so."""
    from airflow.sdk.exceptions import AirflowSkipException

    from hybrid_mlops.hooks.registry import model_life_cycle

    prod_arn = (registered or {}).get("ModelPackageArn") or plan_.get("prod_package_arn")
    if not prod_arn:
        raise AirflowSkipException(f"{plan_['group']} version {plan_['version']} was not promoted: nothing to record")
    dev = dev_registry()
    current = dev.describe_package(plan_["package_arn"])
    props = current.get("CustomerMetadataProperties") or {}
    if props.get(PROMOTED_KEY) == prod_arn:
        raise AirflowSkipException(f"{plan_['group']} version {plan_['version']} already records {prod_arn}")
    prod_props = prod_registry(spec).describe_package(prod_arn).get("CustomerMetadataProperties") or {}
    stage = (current.get("ModelLifeCycle") or {}).get("Stage") or plan_["stage"]
    note = (f"Promoted to account {plan_['prod_account']} ({plan_['prod_region']}) as {prod_arn}, "
            f"stage {plan_['stage']}, approved by {prod_props.get('promoted_by', 'unknown')}")
    dev.update_package(plan_["package_arn"], properties={
        PROMOTED_KEY: prod_arn, "promoted_by": prod_props.get("promoted_by"), "promoted_at": prod_props.get("promoted_at"),
    }, lifecycle=model_life_cycle(stage, "Promoted", note))
    log.info("%s version %s: %s", plan_["group"], plan_["version"], note)
    return {"package_arn": plan_["package_arn"], PROMOTED_KEY: prod_arn}
