# The Airflow image for docker-compose: MWAA 3.3.1's Airflow and Python (3.12) with the project's exact
# lock (requirements.lock: what the test suite runs on, moto server included), plus the two other
# environments the local target starts as processes: training (.venv-train's lock) and serving
# (.venv-serve's lock), each on the Python its lock was resolved for. The project itself (dags/,
# plugins/, include/) is mounted read-only; the local target's state lives in HYBRID_MLOPS_LOCAL_DIR.
#
#   docker compose -p hybrid-mlops build
ARG AIRFLOW_IMAGE=apache/airflow:3.3.1-python3.12
FROM ${AIRFLOW_IMAGE}

ARG UV_VERSION=0.13.8
ARG SIDE_ENV_PYTHON=3.11

USER root
RUN mkdir -p /opt/hybrid-mlops/state /opt/hybrid-mlops/venvs \
 && chown -R airflow:0 /opt/hybrid-mlops && chmod -R g+rwX /opt/hybrid-mlops
USER airflow

ENV UV_PYTHON_INSTALL_DIR=/opt/hybrid-mlops/python \
    UV_NO_CACHE=1 \
    PIP_NO_CACHE_DIR=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

COPY --chown=airflow:0 requirements.lock /tmp/project/requirements.lock
COPY --chown=airflow:0 include/training/requirements.lock /tmp/project/training.lock
COPY --chown=airflow:0 include/serving/requirements.lock /tmp/project/serving.lock

# Airflow's env: the lock as tested, without the test runners (moto stays: the compose file's AWS stand-in).
RUN grep -vE '^(pytest|pytest-asyncio|pytest-timeout|kmock)==' /tmp/project/requirements.lock > /tmp/project/runtime.lock \
 && uv pip install --python "$(command -v python)" -r /tmp/project/runtime.lock \
 && python -c "import airflow, moto, psycopg2; print('airflow', airflow.__version__, 'moto', moto.__version__)"

# Training and serving envs (Airflow never imports torch, onnxruntime or kserve).
RUN uv python install "${SIDE_ENV_PYTHON}" \
 && uv venv --python "${SIDE_ENV_PYTHON}" /opt/hybrid-mlops/venvs/train \
 && VIRTUAL_ENV=/opt/hybrid-mlops/venvs/train uv pip sync /tmp/project/training.lock \
 && uv venv --python "${SIDE_ENV_PYTHON}" /opt/hybrid-mlops/venvs/serve \
 && VIRTUAL_ENV=/opt/hybrid-mlops/venvs/serve uv pip sync /tmp/project/serving.lock \
 && /opt/hybrid-mlops/venvs/train/bin/python -c "import torch, onnx" \
 && /opt/hybrid-mlops/venvs/serve/bin/python -c "import kserve, onnxruntime"

ENV HYBRID_MLOPS_HOME=/opt/airflow/project \
    HYBRID_MLOPS_LOCAL_DIR=/opt/hybrid-mlops/state \
    HYBRID_MLOPS_TRAINING_PYTHON=/opt/hybrid-mlops/venvs/train/bin/python \
    HYBRID_MLOPS_SERVING_PYTHON=/opt/hybrid-mlops/venvs/serve/bin/python
