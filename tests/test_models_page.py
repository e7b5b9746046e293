"""The Models page through Airflow's own api-server app (the plugin's FastAPI app mounted as the
api-server mounts it, Airflow's auth manager issuing the token), reading a seeded registry, deployment
record, drift reports and cost report on the moto server."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from hybrid_mlops.local.fleet import seed_cost_report, seed_model


@pytest.fixture(scope="module")
def api(airflow_db):
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    client = TestClient(create_app(apps="core"))
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    return client, token


@pytest.fixture
def fleet(aws, spec):
    from hybrid_mlops.ui import app as page

    page._overview = None  # each test starts with cold caches against its reset server
    seeded = seed_model(spec, 4, hours=3)
    day = (date.today() - timedelta(days=1)).isoformat()
    seed_cost_report([spec], day)
    return seeded


def test_plugin_mounts_the_app_and_puts_the_page_in_the_nav():
    from airflow import plugins_manager

    apps, _ = plugins_manager.get_fastapi_plugins()
    assert any(a["url_prefix"] == "/hybrid-mlops" for a in apps)
    views, _ = plugins_manager._get_ui_plugins()
    view = next(v for v in views if v.get("url_route") == "models")
    assert view["href"] == "/hybrid-mlops/models" and view["destination"] == "nav"


def test_the_page_honours_airflow_auth(api, fleet):
    client, _token = api
    client.cookies.clear()
    assert client.get("/hybrid-mlops/api/models").status_code == 401
    page = client.get("/hybrid-mlops/models", follow_redirects=False)
    assert page.status_code == 303 and "login" in page.headers["location"]
    assert client.get("/hybrid-mlops/api/models", headers={"Authorization": "Bearer not-a-token"}).status_code == 403


def test_models_page_shows_registry_serving_drift_and_cost(api, fleet, spec):
    client, token = api
    client.cookies.set("_token", token)
    data = client.get("/hybrid-mlops/api/models").json()
    model = next(m for m in data["models"] if m["model"] == spec.name)
    versions = {v["version"]: v for v in model["versions"]}
    assert sorted(versions) == [1, 2, 3, 4]
    assert (versions[4]["status"], versions[4]["stage"]) == ("PendingManualApproval", "dev")
    assert (versions[3]["status"], versions[3]["stage"], versions[3]["stage_status"]) == ("Approved", "prod", "Deployed")
    assert versions[1]["stage"] == "archived"
    assert set(versions[3]["metrics"]) >= set(spec.approval.rules)
    assert model["deployment"]["version"] == 3
    assert {r: e["traffic_percent"] for r, e in model["deployment"]["regions"].items()} == \
        {r: 100 for r in spec.serving.regions}
    assert model["drift"]["status"] == "violations" and model["drift"]["violated_features"]
    assert model["drift"]["window_start"].startswith(fleet["drift_window"][:13])
    assert model["cost"]["total_usd"] == 12.5 and model["cost"]["cost_per_1k_predictions_usd"] == pytest.approx(0.034)
    assert model["links"]["registry_console"].startswith("https://console.aws.amazon.com/sagemaker/home?region=")
    assert model["links"]["retrain_runs"] == f"dags/retrain_{spec.dag_suffix}/runs"

    html = client.get("/hybrid-mlops/models").text
    section = html[html.index(f"id='model-{spec.name}'"):]
    assert "<span class='deployed-version'>3</span>" in section
    assert "drift-verdict bad'>violations" in section and "<span class='cost-total'>$12.50</span>" in section
    assert 'href="/dags/retrain_fraud_detection/runs" target="_top"' in section

    report = client.get(f"/hybrid-mlops/{model['links']['drift_report']}")
    assert report.status_code == 200 and report.json()["status"] == "violations"
    assert client.get("/hybrid-mlops/reports/local-registry-mirror/x.json").status_code == 404


def test_the_index_spares_describes_and_a_change_outside_the_project_shows(api, fleet, spec):
    import boto3

    from hybrid_mlops.hooks.registry import ModelRegistryHook, model_life_cycle
    from hybrid_mlops.ui import app as page

    client, token = api
    client.cookies.set("_token", token)

    def version(n: int) -> dict:
        data = client.get("/hybrid-mlops/api/models").json()
        return next(v for m in data["models"] for v in m["versions"] if m["model"] == spec.name and v["version"] == n)

    assert version(4)["stage"] == "dev"
    assert page.overview().requests == 0  # cold: every version from the index the registry writes kept
    hook = ModelRegistryHook(aws_conn_id="aws_default")
    group = spec.registry.model_package_group
    pending = hook.package_by_version(group, 4)
    hook.update_package(pending["ModelPackageArn"], status="Approved", reason="ok",
                        lifecycle=model_life_cycle("staging", "Approved", "ok"))
    assert (version(4)["status"], version(4)["stage"]) == ("Approved", "staging")
    assert page.overview().requests == 0  # the project's own change is in the index

    # Rejected in the SageMaker console (no index update): the listed status disagrees, the version is described.
    boto3.client("sagemaker").update_model_package(ModelPackageArn=pending["ModelPackageArn"],
                                                   ModelApprovalStatus="Rejected", ApprovalDescription="by hand")
    seen = version(4)
    assert (seen["status"], seen["approval_description"]) == ("Rejected", "by hand")
    assert page.overview().requests == 1
    version(4)
    assert page.overview().requests == 0  # described once per state


def test_concurrent_index_writers_keep_each_others_versions(aws, spec):
    """Two hooks register versions of one group at once: the conditional writes lose no entry."""
    from concurrent.futures import ThreadPoolExecutor

    from hybrid_mlops.hooks.registry import ModelRegistryHook

    seeded = seed_model(spec, 1, hours=1)
    hook = ModelRegistryHook(aws_conn_id="aws_default")
    group = spec.registry.model_package_group
    first = hook.package_by_version(group, 1)
    request = {k: first[k] for k in ("ModelPackageGroupName", "InferenceSpecification")}

    def register(i: int) -> str:
        return ModelRegistryHook(aws_conn_id="aws_default").create_package(
            {**request, "ModelApprovalStatus": "PendingManualApproval", "CustomerMetadataProperties": {"run_id": f"r{i}"}})

    with ThreadPoolExecutor(4) as pool:
        arns = list(pool.map(register, range(4)))
    index = hook.registry_index(arns[0])
    assert sorted(index, key=int) == ["1", "2", "3", "4", "5"], seeded
    assert {index[str(v)]["ModelPackageArn"] for v in range(2, 6)} == set(arns)
    assert index["1"]["ModelLifeCycle"]["Stage"] == "prod"
