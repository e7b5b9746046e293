"""The Models page: the Airflow UI's view of every model's registry, serving, drift and cost."""
