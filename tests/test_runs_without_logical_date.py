"""Runs created without a logical date (``logical_date: null``, what the REST API and the UI's trigger
without a date create): the monitor and the cost report still know which hour / day they report.

Each run is a real ``dag.test(logical_date=None, run_after=...)`` on the moto server: the task context
then has no ``ds`` / ``data_interval_start``, exactly as for a REST-triggered run.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from test_cost_report import report
from test_monitor_dag import HOUR, _read, _register_baseline
from hybrid_mlops.layout import monitoring_prefix


def test_dags_pin_their_timetables(spec):
    """Which hour / day a run reports does not depend on ``[scheduler] create_cron_data_intervals``."""
    from hybrid_mlops.dags import cost_report, monitor

    (mon,) = monitor.build([spec])
    assert type(mon.timetable).__name__ == "CronDataIntervalTimetable"
    (cost,) = cost_report.build([spec])
    assert type(cost.timetable).__name__ == "CronTriggerTimetable"


def test_monitor_without_logical_date_reports_the_hour_before_run_after(aws, airflow_db, spec, tmp_path):
    from airflow.utils.state import DagRunState

    from hybrid_mlops.dags.monitor import build

    _register_baseline(spec, tmp_path)
    (dag,) = build([spec])
    dag.get_task("wait_for_capture").timeout = 2
    dag.get_task("wait_for_capture").poke_interval = 0.5
    run = dag.test(logical_date=None, run_after=HOUR + timedelta(hours=1, minutes=7))
    assert run.logical_date is None
    assert run.state == DagRunState.SUCCESS, {ti.task_id: ti.state for ti in run.get_task_instances()}
    report_doc = _read(monitoring_prefix("fraud-detection", HOUR) + "report.json")
    assert report_doc["status"] == "empty_window"
    assert report_doc["window_start"].startswith("2026-05-01T10:00")


@pytest.mark.parametrize("day_param", ["", "2026-04-20"])
def test_cost_report_without_logical_date_reports_the_day_before_run_after(aws, airflow_db, day_param):
    from hybrid_mlops.factory import build_dags

    dag = build_dags("cost_report")["cost_report"]
    run_after = datetime.now(timezone.utc).replace(microsecond=0)
    run = dag.test(logical_date=None, run_after=run_after, run_conf={"day": day_param} if day_param else None)
    assert run.logical_date is None
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    day = day_param or (run_after.date() - timedelta(days=1)).isoformat()
    assert report(datetime.fromisoformat(day).date())["day"] == day


def test_watch_without_logical_date_reads_reports_of_the_hour_before_run_after(aws, airflow_db, spec):
    """No ``data_interval_start`` in the context: the first run counts reports written since an hour before
    ``run_after`` (it failed rendering ``modified_after`` before)."""
    from test_drift_watch import MM_PREFIX, _put_report, _sdk_violations, _serialize, _watching

    from hybrid_mlops.dags.watch import build

    _put_report(MM_PREFIX + "2026/05/01/11/constraint_violations.json", _sdk_violations())
    (dag,) = build([_watching(spec).model_copy(update={"name": "watch-no-logical-date"})])
    _serialize(dag)
    run = dag.test(logical_date=None, run_after=datetime.now(timezone.utc).replace(microsecond=0))
    assert run.logical_date is None
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and states["signal_drift"] == "success", states
