"""Airflow DAG ``cost_report``: the daily cost report (training vs serving, per model and version).

The dag is generated from the model specs in ``include/models/`` by the project's factory; see
``plugins/hybrid_mlops/dags/cost_report.py`` for what it does and ``plugins/hybrid_mlops/cost/SCHEMA.md``
for what it writes.
"""

from hybrid_mlops.factory import build_dags

globals().update(build_dags("cost_report"))
