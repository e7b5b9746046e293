# The Airflow image for docker-compose: the official image plus the project's pinned requirements
# (what MWAA installs from requirements.txt). DAGs and plugins are mounted, not baked in.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt requirements.lock /tmp/project/
RUN grep -vE '^(moto|kmock|pytest|jsonschema)' /tmp/project/requirements.lock > /tmp/project/runtime.lock \
 && pip install --no-cache-dir -r /tmp/project/requirements.txt -c /tmp/project/runtime.lock
