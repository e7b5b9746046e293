"""Deploy tasks and the ``deploy_<model>`` DAG (redeploy or roll back a chosen version from the UI).

:func:`deploy_tasks` adds the deploy step to whichever DAG is open (the retrain DAG calls it after its
approval gate) and returns its first and last task::

    resolve_model_package ─┬─ aws:   deploy_kserve[region] (mapped over serving.regions)
                           ├─ local: serve_locally (predictor behind the local front door)
                           └─ serving.target sagemaker, both targets: deploy_sagemaker[region]
                                     └─ record_deployment (registry metadata + asset event)

On ``aws`` each mapped task rolls the version out to ``serving.cluster_name`` in its region (canary,
smoke test, promote or roll back: :class:`~hybrid_mlops.operators.kserve.DeployInferenceServiceOperator`).
``record_deployment`` waits for every region (``all_done_min_one_success``): when some regions fail
and roll back, it still records the regions that now serve the version, then fails the run naming
the others. It is skipped when the deploy was skipped, and upstream-failed when nothing deployed.
``HYBRID_MLOPS_KUBERNETES_CONN_ID`` (e.g. ``kserve_{region}``) names Kubernetes connections to use
instead of EKS. Nothing here creates a client or reads anything but the spec at parse time.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Asset, Param, task

from hybrid_mlops import settings
from hybrid_mlops.assets import deployed_asset_uri
from hybrid_mlops.specs.model import ModelSpec

LATEST = "latest-approved"


def _params(spec: ModelSpec) -> dict:
    return {
        "version": Param(
            LATEST, type="string", pattern=rf"^({LATEST}|[0-9]+)$",
            description=f"Model package version to serve, or {LATEST!r} (the newest Approved one). "
                        "An older number rolls back to it.",
        ),
        "regions": Param(
            list(spec.serving.regions), type="array", minItems=1,
            items={"type": "string", "enum": list(spec.serving.regions)},
            description="Regions whose InferenceService to update (aws target; local serves one place).",
        ),
        "canary": Param(
            True, type="boolean",
            description=f"Send {spec.serving.canary_traffic_percent} % of the traffic to the version first, "
                        "smoke-test it, then promote (off: switch at once, still smoke-tested).",
        ),
    }


def build(specs: list[ModelSpec]) -> list[DAG]:
    return [_build_one(spec.model_copy(deep=True)) for spec in specs]


def _build_one(spec: ModelSpec) -> DAG:
    with DAG(
        dag_id=f"deploy_{spec.dag_suffix}",
        description=f"Deploy, redeploy or roll back {spec.name} (KServe on EKS, or the local server)",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params=_params(spec),
        tags=["hybrid-mlops", spec.name, "deploy", f"team:{spec.team}"],
        doc_md=__doc__,
    ) as dag:
        deploy_tasks(spec, version="{{ params.version }}", regions="params", canary="{{ params.canary }}")
    return dag


def deploy_tasks(spec: ModelSpec, *, version: str = LATEST, regions: list[str] | str | None = None,
                 canary: bool | str = True):
    """Create the deploy tasks for the current target inside the open DAG; returns ``(first, last)``.

    :param spec: the model spec.
    :param version: ``"latest-approved"`` or a version number (may be a Jinja template).
    :param regions: regions to deploy to: ``None`` for all of ``serving.regions``, ``"params"`` to read
        them from the run's ``regions`` param at run time, or a list.
    :param canary: canary first (may be a Jinja template).
    """
    package = _resolve_task(spec)(version)
    sagemaker = spec.serving.target == "sagemaker"
    if settings.is_local() and not sagemaker:
        result = _serve_locally_task(spec)(package)
        region_list = ["local"]
    else:
        from hybrid_mlops.operators.kserve import DeployInferenceServiceOperator
        from hybrid_mlops.operators.sagemaker_endpoint import DeploySageMakerEndpointOperator

        if regions == "params":
            region_list = _regions_task(spec)()
            package >> region_list
        else:
            region_list = list(regions or spec.serving.regions)
    if sagemaker:  # both targets: the control plane on moto (local) or SageMaker (aws)
        served = DeploySageMakerEndpointOperator.partial(
            task_id="deploy_sagemaker",
            model_name=spec.name,
            serving=spec.serving.model_dump(mode="json"),
            package=package,
            canary=canary,
            id_column=spec.data_schema.id,
            aws_conn_id=settings.aws_conn_id(),
            extra_tags=spec.cost_tags(),
            deferrable=True,
            map_index_template="{{ task.region }}",
        ).expand(region=region_list)
        result = served.output
    elif not settings.is_local():
        served = DeployInferenceServiceOperator.partial(
            task_id="deploy_kserve",
            model_name=spec.name,
            serving=spec.serving.model_dump(mode="json"),
            package=package,
            canary=canary,
            kubernetes_conn_id=os.environ.get("HYBRID_MLOPS_KUBERNETES_CONN_ID") or None,
            cluster_name=spec.serving.cluster_name,
            aws_conn_id=settings.aws_conn_id(),
            extra_labels=spec.cost_tags(),
            capture_bucket=settings.bucket(),
            timeout=spec.serving.ready_timeout_seconds,
            deferrable=True,
            map_index_template="{{ task.region }}",
        ).expand(region=region_list)
        result = served.output
    record = _record_task(spec)(package, result, region_list)
    return package.operator, record.operator


def _resolve_task(spec: ModelSpec):
    @task(task_id="resolve_model_package")
    def resolve_model_package(version: str) -> dict:
        """The package to serve: the newest Approved one, or the Approved version asked for."""
        from airflow.sdk.exceptions import AirflowFailException

        from hybrid_mlops.hooks.artifacts import read_smoke_sample
        from hybrid_mlops.hooks.registry import ModelRegistryHook
        from hybrid_mlops.serving.manifest import ModelRef

        group = spec.registry.model_package_group
        hook = ModelRegistryHook(aws_conn_id=settings.aws_conn_id(), region_name=settings.region())
        wanted = str(version).strip() or LATEST
        if wanted == LATEST:
            package = hook.latest_package(group, status="Approved")
            if package is None:
                raise AirflowFailException(
                    f"model package group {group!r} has no Approved version; approve one "
                    f"(retrain_{spec.dag_suffix}, or the registry) or pass a version number"
                )
        else:
            if not wanted.isdigit():
                raise AirflowFailException(f"version={wanted!r} must be {LATEST!r} or a version number")
            package = hook.package_by_version(group, int(wanted))
            if package is None:
                raise AirflowFailException(f"model package group {group!r} has no version {wanted}")
            if package.get("ModelApprovalStatus") != "Approved":
                raise AirflowFailException(
                    f"{group} version {wanted} is {package.get('ModelApprovalStatus')}; only Approved "
                    "versions are served: approve it in the registry first"
                )
        ref = ModelRef.from_package(package)
        print(f"Serving {group} version {ref.version}: {ref.package_arn} ({ref.storage_uri})")
        try:
            sample = read_smoke_sample(ref.storage_uri, settings.aws_conn_id())
        except FileNotFoundError as err:
            raise AirflowFailException(str(err)) from None
        return {**ref.to_dict(), "smoke_sample": sample}

    return resolve_model_package


def _regions_task(spec: ModelSpec):
    @task(task_id="choose_regions")
    def choose_regions(**context) -> list[str]:
        """The run's ``regions`` param, checked against the spec."""
        from airflow.sdk.exceptions import AirflowFailException

        chosen = list(dict.fromkeys(context["params"].get("regions") or spec.serving.regions))
        unknown = sorted(set(chosen) - set(spec.serving.regions))
        if unknown:
            raise AirflowFailException(
                f"regions {unknown} are not in serving.regions {list(spec.serving.regions)} of {spec.name}"
            )
        return chosen

    return choose_regions


def _serve_locally_task(spec: ModelSpec):
    @task(task_id="serve_locally")
    def serve_locally(package: dict) -> dict:
        """Start the version's predictor on 127.0.0.1, smoke-test it, swap it in behind the front door."""
        from hybrid_mlops.hooks.kserve import smoke_test
        from hybrid_mlops.local.serving import LocalServing, s3_fetch

        serving = LocalServing(
            spec.name, capture_bucket=settings.bucket(), ready_timeout=spec.serving.ready_timeout_seconds,
            id_column=spec.data_schema.id,
        )
        sample = package["smoke_sample"]
        result = serving.deploy(
            int(package["version"]), package["storage_uri"], package_arn=package["package_arn"],
            fetch=s3_fetch(settings.aws_conn_id()),
            smoke_test=lambda url: smoke_test(url, spec.name, sample),
        )
        print(f"Version {result['version']} serves at {result['url']} ({result['outcome']})")
        return result

    return serve_locally


def _record_task(spec: ModelSpec):
    asset = Asset(deployed_asset_uri(spec.name))

    # Runs once every region is done and at least one upstream task succeeded, so a partial rollout
    # is recorded too; skipped when the deploy was skipped (retrain: rejected, or deploy=False).
    @task(task_id="record_deployment", outlets=[asset], trigger_rule="all_done_min_one_success")
    def record_deployment(package: dict | None, results, regions_asked, **context) -> dict:
        """Registry metadata (deployed_regions, deployed_at), lifecycle stages and a ``deployed`` asset event.

        The version moves to lifecycle stage ``prod`` (``Deployed``). Every other version of the group in
        ``prod`` that this one now replaces in all the regions it served moves to ``archived``
        (``Retired``); one still served somewhere else stays in ``prod``.

        Records only the regions whose deploy succeeded. When others failed (and rolled back), the
        succeeded ones are still recorded, then the task fails naming the failed regions: no asset
        event, and the run fails. Skipped (no event) when every region already served this version
        and the registry says so.
        """
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from hybrid_mlops.hooks.registry import (
            STAGE_ARCHIVED,
            STAGE_PROD,
            ModelRegistryHook,
            metadata_list,
            model_life_cycle,
            split_metadata_list,
        )

        if not package:
            raise AirflowFailException("resolve_model_package returned no package: nothing to record")
        if results is None:
            results = []
        results = [results] if isinstance(results, dict) else [r for r in results if r]
        regions = sorted({r["region"] for r in results})
        failed = sorted(set(regions_asked or []) - set(regions))
        if not regions:
            raise AirflowFailException(f"version {package['version']} was deployed to no region; failed: {failed}")
        hook = ModelRegistryHook(aws_conn_id=settings.aws_conn_id(), region_name=settings.region())
        arn = package["package_arn"]
        props = hook.describe_package(arn).get("CustomerMetadataProperties") or {}
        known = set(split_metadata_list(props.get("deployed_regions")))
        if not failed and all(r["outcome"] == "unchanged" for r in results) and set(regions) <= known:
            raise AirflowSkipException(f"version {package['version']} already served in {regions}: nothing to record")
        deployed_at = datetime.now().astimezone().isoformat(timespec="seconds")
        serving_now = known | set(regions)
        hook.update_package(arn, properties={
            "deployed_regions": metadata_list(serving_now),
            "deployed_at": deployed_at,
            "deployed_target": settings.target(),
        }, lifecycle=model_life_cycle(
            STAGE_PROD, "Deployed",
            f"Served in {' '.join(sorted(serving_now))} ({settings.target()}) since {deployed_at}",
        ))
        _write_deployment_record(spec, package, results, deployed_at)
        # The previously served prod version(s): archived once this version replaced them everywhere.
        for old in hook.packages_in_stage(spec.registry.model_package_group, STAGE_PROD):
            if old["ModelPackageArn"] == arn:
                continue
            old_regions = set(split_metadata_list((old.get("CustomerMetadataProperties") or {}).get("deployed_regions")))
            still = sorted(old_regions - serving_now)
            if still:
                print(f"Version {old['ModelPackageVersion']} stays in prod: it still serves {still}")
                continue
            removed = _remove_archived_serving(spec, old["ModelPackageVersion"], sorted(old_regions))
            hook.set_stage(
                old["ModelPackageArn"], STAGE_ARCHIVED, "Retired",
                f"Replaced in prod by version {package['version']} in {' '.join(sorted(regions))} at {deployed_at}"
                + (f"; serving removed: {removed}" if removed else ""),
            )
            print(f"Version {old['ModelPackageVersion']} archived: replaced by version {package['version']}")
        if failed:  # a retry of this task cannot fix a region: fail without one
            raise AirflowFailException(
                f"version {package['version']} is recorded as deployed to {regions}; the deploy failed in "
                f"{failed} (see deploy_kserve for those regions: they were rolled back where a previous "
                f"version existed). Deploy them again with deploy_{spec.dag_suffix} and regions={failed}."
            )
        extra = {
            "version": int(package["version"]),
            "package_arn": arn,
            "storage_uri": package["storage_uri"],
            "regions": regions,
            "urls": {r["region"]: r.get("url") for r in results},
            "deployed_at": deployed_at,
        }
        context["outlet_events"][asset].extra = extra
        return extra

    return record_deployment


def _write_deployment_record(spec: ModelSpec, package: dict, results: list[dict], deployed_at: str) -> None:
    """``deployments/<model>.json``: what serves where (the Models page reads it). Regions this deploy did not
    touch keep their entry; each region's traffic is 100 % (the deploy promoted, or failed before here)."""
    from hybrid_mlops.hooks.records import RecordsHook

    hook = RecordsHook(aws_conn_id=settings.aws_conn_id(), region_name=settings.region())
    bucket, local = settings.bucket(), settings.is_local()
    record = hook.deployment_record(bucket, spec.name) or {}
    regions = dict(record.get("regions") or {}) if record.get("target") == settings.target() else {}
    for r in results:
        regions[r["region"]] = {
            "version": int(package["version"]),
            "traffic_percent": 100,
            "min_replicas": 1 if local else spec.serving.min_replicas,
            "max_replicas": 1 if local else spec.serving.max_replicas,
            "url": r.get("url"),
            "inference_service": r.get("inference_service"),
            "namespace": r.get("namespace"),
            "outcome": r.get("outcome"),
            "deployed_at": deployed_at,
        }
    previous = record.get("version")
    hook.put_deployment_record(bucket, spec.name, {
        "model": spec.name,
        "target": settings.target(),
        "version": int(package["version"]),
        "package_arn": package["package_arn"],
        "storage_uri": package["storage_uri"],
        "previous_version": previous if previous != int(package["version"]) else record.get("previous_version"),
        "deployed_at": deployed_at,
        "regions": regions,
    })


def _remove_archived_serving(spec: ModelSpec, version: int, regions: list[str]) -> str:
    """``serving.remove_archived``: remove what still serves an archived version (see
    :meth:`~hybrid_mlops.hooks.kserve.KServeHook.remove_previous_version` and
    :meth:`~hybrid_mlops.local.serving.LocalServing.remove_version`); returns what was done, "" when off.
    A failure is reported, not raised: the new version already serves, and the leftovers stay as they were."""
    if not spec.serving.remove_archived:
        return ""
    done = []
    for region in ["local"] if settings.is_local() else regions:
        try:
            if settings.is_local():  # one place serves on local
                from hybrid_mlops.local.serving import LocalServing

                out = LocalServing(spec.name).remove_version(version)
                done.append(f"local predictor {'stopped' if out['stopped_pid'] else 'not running'}, "
                            f"files {'deleted' if out['files_removed'] else 'absent'}")
            else:
                from hybrid_mlops.hooks.kserve import kserve_hook_for
                from hybrid_mlops.serving.manifest import inference_service_name

                hook = kserve_hook_for(region, cluster_name=spec.serving.cluster_name, aws_conn_id=settings.aws_conn_id(),
                                       kubernetes_conn_id=os.environ.get("HYBRID_MLOPS_KUBERNETES_CONN_ID") or None)
                out = hook.remove_previous_version(inference_service_name(spec.name), spec.serving.namespace, version)
                done.append(f"{region}: {out['reason']}")
        except Exception as err:  # noqa: BLE001 - reported; the deploy itself succeeded
            done.append(f"{region}: not removed ({type(err).__name__}: {err})")
    print(f"Serving of archived version {version}: {'; '.join(done)}")
    return "; ".join(done)
