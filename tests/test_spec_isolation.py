"""One bad spec among good ones: Airflow shows exactly that model's error, every other DAG loads.

The DAG files are parsed by Airflow's own DagBag (what the dag-processor runs), over a specs folder
holding the three shipped models plus broken ones: a YAML syntax error, an unknown field, a cron that
is no cron, and a model that claims another's package group.
"""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from conftest import ROOT
from hybrid_mlops.factory import KINDS

SHIPPED = ("fraud-detection", "wine-cultivar", "diabetes-progression")


@pytest.fixture
def specs_dir(tmp_path, monkeypatch):
    path = tmp_path / "models"
    path.mkdir()
    for name in SHIPPED:
        shutil.copy(ROOT / "include" / "models" / f"{name}.yaml", path)
    wine = yaml.safe_load((path / "wine-cultivar.yaml").read_text())
    (path / "broken-syntax.yaml").write_text("name: broken-syntax\nschema: [unclosed\n")
    typo = {**wine, "name": "typo-model", "registry": {**wine["registry"], "model_package_group": "typo-models"},
            "training": {**wine["training"], "instnce_type": "ml.m5.xlarge"}}
    (path / "typo-model.yaml").write_text(yaml.safe_dump(typo))
    cron = {**wine, "name": "bad-cron", "registry": {**wine["registry"], "model_package_group": "bad-cron-models"},
            "schedule": {"retrain": "0 25 * * *"}}
    (path / "bad-cron.yml").write_text(yaml.safe_dump(cron))  # .yml is read too
    twin = {**wine, "name": "wine-twin"}  # same package group as wine-cultivar
    (path / "wine-twin.yaml").write_text(yaml.safe_dump(twin))
    monkeypatch.setenv("HYBRID_MLOPS_MODELS_DIR", str(path))
    return path


def test_a_bad_spec_removes_only_its_own_dags(specs_dir, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    models = {"fraud_detection", "wine_cultivar", "diabetes_progression"}
    for kind in ("retrain", "deploy", "monitor"):
        assert {f"{kind}_{m}" for m in models} <= set(bag.dag_ids), sorted(bag.dag_ids)
    assert "cost_report" in bag.dag_ids
    assert not any(re.search("typo|bad_cron|broken|twin|invalid", d) for d in bag.dag_ids), sorted(bag.dag_ids)

    errors = {path.rsplit("/", 1)[-1]: text for path, text in bag.import_errors.items()}
    assert set(errors) == {f"{kind}.py" for kind in KINDS}, errors  # each DAG file: one per kind
    for text in errors.values():
        assert "5 model spec(s) invalid" not in text and "4 model spec(s) invalid" in text
        assert "broken-syntax.yaml: not valid YAML" in text
        assert "typo-model.yaml: training.instnce_type: is not a known field" in text
        assert "bad-cron.yml: schedule.retrain='0 25 * * *': is not a cron expression" in text
        assert ("wine-twin.yaml: registry.model_package_group='wine-cultivar-models' is already used by "
                in text and "wine-cultivar.yaml" in text)
    # the cost report still covers the good models
    cost = bag.get_dag("cost_report")
    assert cost is not None


def test_good_specs_load_without_an_import_error(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert {"retrain_fraud_detection", "retrain_wine_cultivar", "retrain_diabetes_progression"} <= set(bag.dag_ids)


def test_no_fraud_feature_name_in_generic_code():
    """The platform is generic: fraud's feature names live only in its spec and the synthetic source."""
    from hybrid_mlops.data.generator import CATEGORICAL_FEATURES, NUMERIC_FEATURES

    names = {*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, "transaction_id", "fraud"}
    allowed = {ROOT / "plugins" / "hybrid_mlops" / "data" / "generator.py"}
    generic = [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "include" / "training").rglob("*.py"),
               *(ROOT / "include" / "serving").rglob("*.py")]
    found = []
    for path in generic:
        if path in allowed or "__pycache__" in path.parts:
            continue
        text = path.read_text()
        for name in names:
            # as a column name: quoted (a form field of the same name, ``"hour": Param(...)``, is not a column)
            if re.search(rf"[\"'`]{re.escape(name)}[\"'`](?!:\s*Param\()", text):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    assert found == [], found
