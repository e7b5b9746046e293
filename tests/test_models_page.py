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


def test_a_warm_load_describes_only_what_changed(api, fleet, spec):
    from hybrid_mlops.hooks.registry import ModelRegistryHook, model_life_cycle
    from hybrid_mlops.ui import app as page

    client, token = api
    client.cookies.set("_token", token)
    client.get("/hybrid-mlops/api/models")
    assert page.overview().requests == 8  # 4 describes + 4 mirror reads, cold
    client.get("/hybrid-mlops/api/models")
    assert page.overview().requests == 0
    hook = ModelRegistryHook(aws_conn_id="aws_default")
    pending = hook.package_by_version(spec.registry.model_package_group, 4)
    hook.update_package(pending["ModelPackageArn"], status="Approved", reason="ok",
                        lifecycle=model_life_cycle("staging", "Approved", "ok"))
    data = client.get("/hybrid-mlops/api/models").json()
    assert page.overview().requests == 2  # that version's mirror block and its describe
    version = next(v for m in data["models"] for v in m["versions"] if m["model"] == spec.name and v["version"] == 4)
    assert (version["status"], version["stage"]) == ("Approved", "staging")
