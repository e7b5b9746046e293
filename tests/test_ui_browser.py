"""The Airflow UI as the control room, in a real browser: Debian's chromium driven through its chromedriver
(Selenium) against the real stack of the ``airflow_stack`` fixture (api-server with this plugin, scheduler,
dag-processor, triggerer, PostgreSQL, moto server).

In order: the retrain trigger form filled and submitted (the run starts with those values); a bad value in
the monitor's form refused, the field named; the run's human review answered "Approve to staging" on the
task's Required actions page (the registry records the stage and who); the Models page, opened from the
nav, shows the deployed version, its drift verdict and the cost figure. The drift report and the cost
report the page reads are written into the stack's bucket in the monitor's and the cost report's shapes
(running those DAGs needs captured traffic and a day of Cost Explorer data). Screenshots go to
``docs/screenshots/``.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

selenium = pytest.importorskip("selenium", reason="selenium (requirements-dev.txt) drives the browser")
if not (shutil.which("chromium") and shutil.which("chromedriver")):
    pytest.skip("needs Debian's chromium and chromium-driver (bin/setup installs them)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
RETRAIN, MONITOR, MODEL = "retrain_fraud_detection", "monitor_fraud_detection", "fraud-detection"
state: dict = {}


@pytest.fixture(scope="module")
def browser(airflow_stack):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    airflow_stack.api.request("GET", "/version")  # the REST client's token, fetched before the browser loads it
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    # Signed in as the UI signs in: Airflow's JWT in its _token cookie (the stack's admin user).
    driver.get(f"{airflow_stack.base_url}/api/v2/version")
    driver.add_cookie({"name": "_token", "value": airflow_stack.token(), "path": "/"})
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 60):
    # React re-renders replace elements under a search: such a look is simply tried again
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def _open_trigger_form(driver, base: str, dag_id: str) -> None:
    driver.get(f"{base}/dags/{dag_id}")
    _wait(driver, ec.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Trigger Dag']"))).click()
    _wait(driver, ec.presence_of_element_located((By.NAME, next(iter(FIELDS[dag_id])))))


def _fill(driver, name: str, value: str) -> None:
    field = driver.find_element(By.NAME, name)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", field)
    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(value, Keys.TAB)


def _submit(driver) -> None:
    button = next(b for b in driver.find_elements(By.TAG_NAME, "button")
                  if b.text.strip() == "Trigger" and b.get_attribute("aria-label") is None)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()


FIELDS = {RETRAIN: {"element_epochs": "2", "element_learning_rate": "0.02", "element_rows": "3000"},
          MONITOR: {"element_hour": "2026-13-01T10"}}


def test_retrain_form_starts_a_run_with_the_values_entered(airflow_stack, browser):
    api = airflow_stack.api
    _open_trigger_form(browser, airflow_stack.base_url, RETRAIN)
    for name, value in FIELDS[RETRAIN].items():
        _fill(browser, name, value)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", browser.find_element(By.NAME, "element_epochs"))
    browser.save_screenshot(str(SHOTS / "retrain-form.png"))
    _submit(browser)
    _wait(browser, lambda d: "/runs/" in d.current_url)  # the UI opens the new run
    run_id = urllib.parse.unquote(browser.current_url.split("/runs/", 1)[1].split("/")[0])
    conf = api.run(RETRAIN, run_id)["conf"]
    assert (conf["epochs"], conf["learning_rate"], conf["rows"]) == (2, 0.02, 3000), conf
    state["run_id"] = run_id


def test_a_bad_value_is_refused_naming_the_field(airflow_stack, browser):
    api = airflow_stack.api
    def manual_runs() -> int:  # (the form unpauses the DAG, so its schedule may start runs meanwhile)
        return sum(r["dag_run_id"].startswith("manual__") for r in api.runs(MONITOR))

    before = manual_runs()
    _open_trigger_form(browser, airflow_stack.base_url, MONITOR)
    _fill(browser, "element_hour", FIELDS[MONITOR]["element_hour"])
    _submit(browser)
    alert = _wait(browser, lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "[role=alert], .chakra-alert__root")
                                           if "Invalid input for param hour" in e.text), None), 30)
    assert "does not match" in alert.text
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", alert)
    browser.save_screenshot(str(SHOTS / "bad-value-refused.png"))
    assert manual_runs() == before  # the refused trigger created no run


def test_the_person_approves_to_staging_in_the_hitl_ui(airflow_stack, browser):
    api, run_id = airflow_stack.api, state["run_id"]
    detail = api.wait_for_hitl(RETRAIN, run_id, timeout=600)
    assert detail["options"] == ["Approve to staging", "Approve to prod", "Reject"]
    # Airflow 3.3: an answer within seconds of the request can race the scheduler's handling of the task's
    # pause (it then sees a late executor event, puts the task up for retry, and the resumed try is refused
    # with 409). A person takes longer than this; the test waits as long.
    time.sleep(15)
    quoted = urllib.parse.quote(run_id, safe="")
    browser.get(f"{airflow_stack.base_url}/dags/{RETRAIN}/runs/{quoted}/tasks/human_review/required_actions")
    button = _wait(browser, lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button")
                                            if b.text.strip() == "Approve to staging"), None))
    assert "candidate v" in browser.find_element(By.TAG_NAME, "body").text  # the review's markdown table
    browser.save_screenshot(str(SHOTS / "human-review.png"))
    driver_scroll_click(browser, button)
    run = api.wait_for_run(RETRAIN, run_id, timeout=600)
    assert run["state"] == "success", api.task_states(RETRAIN, run_id)
    summary = api.xcom(RETRAIN, run_id, "summary")
    sm = airflow_stack.client("sagemaker")
    package = sm.describe_model_package(ModelPackageName=summary["model_package_arn"])
    assert package["ApprovalDescription"] == "Approved to staging by admin in Airflow (human-in-the-loop)"
    assert (package["CustomerMetadataProperties"]["decided_by"], package["CustomerMetadataProperties"]["decided_stage"]) \
        == ("admin", "staging")
    state["version"] = summary["version"]


def driver_scroll_click(driver, element) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def _seed_reports(airflow_stack, version: int) -> None:
    """The newest drift report and yesterday's cost report, as the monitor and the cost report write them."""
    s3 = airflow_stack.client("s3")
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    report = {"model": MODEL, "window_start": hour.isoformat(), "window_end": (hour + timedelta(hours=1)).isoformat(),
              "status": "violations", "rows": 1200, "violations": 2, "violated_features": ["amount", "channel"],
              "message": "2 violation(s) on ['amount', 'channel']"}
    s3.put_object(Bucket=airflow_stack.bucket, Key=f"monitoring/{MODEL}/{hour:%Y/%m/%d/%H}/report.json",
                  Body=json.dumps(report).encode(), ContentType="application/json")
    day = (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()
    cost = {"schema": "hybrid-mlops/cost-report/v1", "day": day, "target": "local", "status": "ok", "final": True,
            "models": [{"model": MODEL, "budget_usd": 40, "predictions": 250000, "cost_per_1k_predictions_usd": 0.034,
                        "totals": {"training_usd": 4.0, "serving_usd": 8.5, "total_usd": 12.5}}]}
    s3.put_object(Bucket=airflow_stack.bucket, Key=f"cost-reports/{day}/cost.json", Body=json.dumps(cost).encode(),
                  ContentType="application/json")


def test_models_page_shows_the_deployed_version_its_drift_and_its_cost(airflow_stack, browser):
    version = state["version"]
    _seed_reports(airflow_stack, version)
    browser.get(f"{airflow_stack.base_url}/dags")
    _wait(browser, ec.element_to_be_clickable((By.CSS_SELECTOR, "a[href$='/plugin/models']"))).click()  # the nav
    _wait(browser, lambda d: d.current_url.endswith("/plugin/models"))
    frame = _wait(browser, ec.presence_of_element_located((By.TAG_NAME, "iframe")))
    browser.switch_to.frame(frame)
    try:
        section = _wait(browser, ec.presence_of_element_located((By.ID, f"model-{MODEL}")))
        browser.save_screenshot(str(SHOTS / "models-page.png"))  # the page framed in the UI, once it rendered
        assert section.find_element(By.CLASS_NAME, "deployed-version").text == str(version)
        assert section.find_element(By.CLASS_NAME, "drift-verdict").text == "violations"
        assert "amount, channel" in section.find_element(By.CLASS_NAME, "violated").text
        assert section.find_element(By.CLASS_NAME, "cost-total").text == "$12.50"
        assert section.find_element(By.CLASS_NAME, "cost-per-1k").text == "$0.03"
        row = section.find_element(By.CSS_SELECTOR, f"tr.version[data-version='{version}']")
        assert "prod" in row.text and "admin" in row.text
    finally:
        browser.switch_to.default_content()
