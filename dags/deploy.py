"""Airflow DAGs ``deploy_<model>``: one per model spec in include/models/.

Redeploy or roll back a chosen model version (KServe on EKS per region, or the local server) from
the UI; the DAG shape lives in hybrid_mlops.dags.deploy, and this file only wires it in.
"""

from hybrid_mlops.factory import build_dags

globals().update(build_dags("deploy"))
