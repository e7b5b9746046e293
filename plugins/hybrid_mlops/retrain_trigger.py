"""Whether a retrain run goes ahead: time and manual runs always; drift runs outside the cooldown.

The cooldown's memory is an Airflow Variable per model (``hybrid_mlops.<model>.last_drift_retrain``),
set when a drift-triggered run goes ahead, so a storm of drift events starts one retrain.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from hybrid_mlops.drift.cooldown import should_retrain, triggering_drift_report
from hybrid_mlops.specs import ModelSpec

log = logging.getLogger(__name__)


def cooldown_variable(model: str) -> str:
    return f"hybrid_mlops.{model}.last_drift_retrain"


def should_run(spec: ModelSpec, context) -> bool:
    from airflow.sdk import Variable

    report = triggering_drift_report(context.get("triggering_asset_events"), spec.name)
    if report is None:
        log.info("Run %s was started by its schedule or a person: going ahead.", context["run_id"])
        return True
    now = datetime.now(timezone.utc)
    last = Variable.get(cooldown_variable(spec.name), default=None)
    proceed, reason = should_retrain(now, datetime.fromisoformat(last) if last else None,
                                     spec.schedule.drift_retrain_cooldown_hours)
    log.info("Drift report %s (features %s): %s -> %s", report["report_uri"], report["violated_features"],
             reason, "retraining" if proceed else "skipping this run")
    if proceed:
        Variable.set(cooldown_variable(spec.name), now.isoformat())
    return proceed
