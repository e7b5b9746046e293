"""Operator extra links: the console URLs built for known inputs, the plugin that registers them, and a
link persisted by a real run against the moto server, read back the way the UI reads it."""

from __future__ import annotations

from datetime import datetime

import pytest

from hybrid_mlops.links.kserve import InferenceServiceLink
from hybrid_mlops.links.registry import ModelPackageLink
from hybrid_mlops.links.reports import CostReportLink, DriftReportLink
from hybrid_mlops.links.sagemaker import SageMakerTrainingJobLink

GROUP = "fraud-detection-models"


class FakeTI:
    def __init__(self):
        self.xcom: dict = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


@pytest.mark.parametrize("link, conf, url", [
    (SageMakerTrainingJobLink(), {"job_name": "fraud-detection-20260101-ab12"},
     "https://console.aws.amazon.com/sagemaker/home?region=us-west-2#/jobs/fraud-detection-20260101-ab12"),
    (ModelPackageLink(), {"model_package_group": GROUP},
     f"https://console.aws.amazon.com/sagemaker/home?region=us-west-2#/model-registry/{GROUP}"),
    (DriftReportLink(), {"bucket": "hybrid-mlops-test", "prefix": "monitoring/fraud-detection/2026/01/02/03/"},
     "https://console.aws.amazon.com/s3/buckets/hybrid-mlops-test?region=us-west-2"
     "&prefix=monitoring/fraud-detection/2026/01/02/03/&showversions=false"),
    (CostReportLink(), {"bucket": "hybrid-mlops-test", "prefix": "cost-reports/2026-01-02/"},
     "https://console.aws.amazon.com/s3/buckets/hybrid-mlops-test?region=us-west-2"
     "&prefix=cost-reports/2026-01-02/&showversions=false"),
])
def test_console_urls(link, conf, url):
    assert link.format_link(region_name="us-west-2", aws_domain=link.get_aws_domain("aws"), **conf) == url
    china = link.format_link(region_name="cn-north-1", aws_domain=link.get_aws_domain("aws-cn"), **conf)
    assert china.startswith("https://console.amazonaws.cn/") and "region=cn-north-1" in china
    assert link.format_link(region_name="us-west-2") == ""  # a missing field gives no link, not an error


def test_operators_persist_quoted_names_with_their_hook_region():
    from hybrid_mlops.operators.cost import CostReportOperator
    from hybrid_mlops.operators.sagemaker import TrainModelOperator

    ti = FakeTI()
    train = TrainModelOperator(task_id="train", config={"TrainingJobName": "job a/1"}, aws_conn_id=None,
                               region_name="eu-west-1")
    train._persist_link({"ti": ti})
    conf = ti.xcom[SageMakerTrainingJobLink.key]
    assert conf == {"region_name": "eu-west-1", "aws_domain": "aws.amazon.com", "job_name": "job%20a%2F1"}
    assert SageMakerTrainingJobLink().format_link(**conf).endswith("?region=eu-west-1#/jobs/job%20a%2F1")

    report = CostReportOperator(task_id="report", day="2026-01-02", models=[], bucket="b", cost_explorer=None,
                                training_jobs=None, predictions=None, aws_conn_id=None, region_name="ap-northeast-2")
    CostReportLink.persist_prefix({"ti": ti}, report, "b", "cost-reports/2026-01-02/")
    assert CostReportLink().format_link(**ti.xcom[CostReportLink.key]) == (
        "https://console.aws.amazon.com/s3/buckets/b?region=ap-northeast-2&prefix=cost-reports/2026-01-02/"
        "&showversions=false"
    )
    # an operator that pushes no XCom persists no link, and a context without a TI breaks nothing
    train.do_xcom_push = False
    ti.xcom.clear()
    train._persist_link({"ti": ti})
    assert ti.xcom == {}
    TrainModelOperator(task_id="t2", config={"TrainingJobName": "j"}, aws_conn_id=None,
                       region_name="eu-west-1")._persist_link({})


def test_plugin_registers_every_link():
    from hybrid_mlops_plugin import HybridMlopsPlugin

    from airflow import plugins_manager

    names = {type(link) for link in HybridMlopsPlugin.operator_extra_links}
    assert names == {SageMakerTrainingJobLink, ModelPackageLink, InferenceServiceLink, DriftReportLink,
                     CostReportLink}
    assert all(not link.operators for link in HybridMlopsPlugin.operator_extra_links)  # declared on operators
    loaded = {type(link).__name__ for link in plugins_manager.get_operator_extra_links()}
    assert {"SageMakerTrainingJobLink", "ModelPackageLink", "InferenceServiceLink", "DriftReportLink",
            "CostReportLink"} <= loaded, loaded


def test_operators_declare_their_links():
    from hybrid_mlops.operators.cost import CostReportOperator
    from hybrid_mlops.operators.drift import DriftReportOperator
    from hybrid_mlops.operators.kserve import DeployInferenceServiceOperator
    from hybrid_mlops.operators.registry import RegisterModelVersionOperator
    from hybrid_mlops.operators.sagemaker import TrainModelOperator

    for operator, link in ((TrainModelOperator, SageMakerTrainingJobLink),
                           (RegisterModelVersionOperator, ModelPackageLink),
                           (DriftReportOperator, DriftReportLink), (CostReportOperator, CostReportLink),
                           (DeployInferenceServiceOperator, InferenceServiceLink)):
        assert [type(x) for x in operator.operator_extra_links] == [link], operator


def test_register_link_is_read_back_like_the_ui_does(aws, airflow_db):
    """Run the register task (moto registry) under dag.test(), then resolve the link as the API server's
    extra-links endpoint does: the serialized DAG's task reads the URL the worker stored under the link's
    xcom_key when the task finished."""
    from airflow.sdk import DAG
    from airflow.models.serialized_dag import SerializedDagModel

    from hybrid_mlops.operators.registry import RegisterModelVersionOperator

    with DAG("links_register", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        RegisterModelVersionOperator(
            task_id="register", aws_conn_id=None, region_name="us-west-2", model_package_group=GROUP,
            model_data_url="s3://hybrid-mlops-test/models/fraud-detection/job-1/output/model.tar.gz",
            inference_image="img:1", customer_metadata={"training_job": "job-1"},
        )
    _serialize(dag)
    run = dag.test()
    assert run.state == "success"
    ti = next(t for t in run.get_task_instances() if t.task_id == "register")

    task = SerializedDagModel.get_dag("links_register").get_task("register")  # what the API server loads
    assert list(task.extra_links) == ["Model Package"]
    url = task.get_extra_links(ti, "Model Package")
    assert url == f"https://console.aws.amazon.com/sagemaker/home?region=us-west-2#/model-registry/{GROUP}"


def _serialize(dag) -> None:
    """Write ``dag`` to the metadata DB as the DAG processor would (``dag.test()`` needs a serialized
    version, and this DAG lives in no DAG file)."""
    import os

    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=os.devnull)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
