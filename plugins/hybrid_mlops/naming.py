"""Names of remote objects, derived from the model and the Airflow run.

A retried task derives the same name again, finds what the first try created and reuses it.
Names are DNS-safe (lowercase, digits, hyphens) and at most 63 characters, which fits SageMaker
job names, model package metadata and Kubernetes object names alike.
"""

from __future__ import annotations

import hashlib
import re

MAX_LEN = 63


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def run_key(dag_id: str, run_id: str) -> str:
    """A short, stable key of one DAG run: readable date part plus a hash of dag_id and run_id."""
    digest = hashlib.sha256(f"{dag_id}/{run_id}".encode()).hexdigest()[:8]
    stamp = re.search(r"(\d{4})-?(\d{2})-?(\d{2})T?(\d{2}):?(\d{2})", run_id)
    date = "".join(stamp.groups()) if stamp else ""
    return f"{date}-{digest}" if date else digest


def resource_name(model: str, kind: str, key: str) -> str:
    """``<model>-<kind>-<key>``, trimmed from the model part so the run key always survives."""
    tail = f"-{_slug(kind)}-{_slug(key)}"
    head = _slug(model)[: MAX_LEN - len(tail)].rstrip("-")
    return f"{head}{tail}"


def training_job_name(model: str, key: str) -> str:
    return resource_name(model, "train", key)
