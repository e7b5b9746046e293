"""Daily cost report: Cost Explorer queries and parsing, attribution, signals and rendering.

Pure code only (no boto3, no Airflow): the hooks fetch, these modules compute, the operators wire.

- :mod:`.explorer`: the bounded set of ``GetCostAndUsage`` requests of one run, and their parsing
- :mod:`.maths`: per-job training cost and spot saving, per-version serving cost, budget and anomaly rules
- :mod:`.report`: the ``cost.json`` document (schema in ``SCHEMA.md``), ``cost.csv`` and ``report.html``
- :mod:`.pricing`: the pinned SageMaker training price table under ``include/pricing/``
- :mod:`.demo`: seeds the local target with realistic figures and prints a report's headline
"""
