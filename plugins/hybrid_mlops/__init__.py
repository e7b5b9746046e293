"""Hybrid MLOps on Airflow: train on SageMaker, govern in the Model Registry, serve on EKS/KServe."""
