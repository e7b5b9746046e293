"""Airflow DAGs ``retrain_<model>``: one per model spec in include/models/.

Data -> SageMaker training -> Model Registry -> approval gate -> KServe deploy.
The DAG shape lives in hybrid_mlops.dags.retrain; this file only wires it in.
"""

from hybrid_mlops.factory import build_dags

globals().update(build_dags("retrain"))
