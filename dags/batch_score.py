"""Airflow DAGs ``batch_score_<model>``: one per model spec in include/models/.

Score the files under an S3 prefix with an approved version (SageMaker Batch Transform, or the local
predictor); the DAG shape lives in hybrid_mlops.dags.batch_score, and this file only wires it in.
"""

from hybrid_mlops.factory import build_dags

globals().update(build_dags("batch_score"))
