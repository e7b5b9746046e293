"""Run a DAG in-process with ``dag.test()`` on the local target, with stand-ins for the scheduler and the person.

``dag.test()`` has no scheduler and no UI:
- a human-in-the-loop task would wait forever. When a run reaches one, :class:`HitlResponder`
  answers it from a helper thread with the same database writes the REST API makes when a person
  clicks in the UI (recorded as that named responder);
- no run is ever started by asset events. :func:`run_dag` can hand the run the asset events the
  scheduler would have consumed for it (``dag_run.consumed_asset_events``), so the tasks see them
  as ``context["triggering_asset_events"]`` exactly as in a scheduled asset-triggered run.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Any

log = logging.getLogger(__name__)


class HitlResponder:
    """Answers every pending human-in-the-loop request of ``dag_id`` with ``choice``.

    :param dag_id: the DAG whose requests to answer.
    :param choice: the option to choose (e.g. "Approve to staging" / "Reject"); None answers nothing.
    :param responder: the name recorded as the person who answered.
    """

    SETTLE_SECONDS = 1.0

    def __init__(self, dag_id: str, choice: str | None, responder: str = "local-operator"):
        self.dag_id, self.choice, self.responder = dag_id, choice, responder
        self.answered: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> HitlResponder:
        # import in the calling thread first: first imports racing in a helper thread can deadlock
        from airflow.models.taskinstance import TaskInstance  # noqa: F401
        from airflow.models.trigger import handle_event_submit  # noqa: F401
        from airflow.triggers.base import TriggerEvent  # noqa: F401
        from airflow.utils.session import create_session  # noqa: F401

        if self.choice:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        from sqlalchemy import select
        from sqlalchemy.orm import joinedload

        from airflow.models.taskinstance import TaskInstance as TI
        from airflow.models.trigger import handle_event_submit
        from airflow.sdk.timezone import utcnow
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState

        while not self._stop.is_set():
            try:
                with create_session() as session:
                    pending = session.scalars(
                        select(TI)
                        .where(TI.dag_id == self.dag_id, TI.state == TaskInstanceState.AWAITING_INPUT)
                        .options(joinedload(TI.hitl_detail))
                    ).all()
                    now = utcnow()
                    for ti in pending:
                        detail = ti.hitl_detail
                        if detail is None:
                            continue
                        # An answer that lands while the asking try is still parking itself is lost (the
                        # try's end sets the task back to awaiting input): answer once the request has
                        # settled, and send the answer again if the task is still parked after it.
                        if detail.responded_at is None:
                            if (now - detail.created_at).total_seconds() < self.SETTLE_SECONDS:
                                continue
                            detail.chosen_options = [self.choice]
                            detail.params_input = {}
                            detail.responded_at = now
                            detail.responded_by = {"id": self.responder, "name": self.responder}
                            log.warning("%s answers %s.%s: %s", self.responder, ti.dag_id, ti.task_id, self.choice)
                            self.answered.append(ti.task_id)
                        elif (now - detail.responded_at).total_seconds() < 3 * self.SETTLE_SECONDS:
                            continue
                        else:
                            log.warning("%s.%s is still awaiting input after its answer: sending it again",
                                        ti.dag_id, ti.task_id)
                        handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti,
                                            session=session)
            except Exception:  # keep answering; the run itself reports real failures
                log.exception("answering human-in-the-loop requests failed")
            time.sleep(0.5)


@contextmanager
def consuming_asset_events(event_ids: list[int]):
    """While active, runs created by ``dag.test()`` consume these asset events, as the scheduler's would."""
    import airflow.models.dagrun as dagrun_module
    from sqlalchemy import select

    from airflow.models.asset import AssetEvent

    original = dagrun_module.get_or_create_dagrun

    def create_consuming(**kwargs):
        run = original(**kwargs)
        session = kwargs["session"]
        events = session.scalars(select(AssetEvent).where(AssetEvent.id.in_(event_ids))).all()
        run.consumed_asset_events.extend(events)
        session.commit()
        log.warning("run %s consumes asset event(s) %s", run.run_id, [e.id for e in events])
        return run

    dagrun_module.get_or_create_dagrun = create_consuming
    try:
        yield
    finally:
        dagrun_module.get_or_create_dagrun = original


def asset_event_ids(uri: str) -> list[int]:
    """Ids of every event recorded for the asset ``uri``, oldest first."""
    from sqlalchemy import select

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return list(session.scalars(
            select(AssetEvent.id).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri).order_by(AssetEvent.id)
        ))


def record_asset_event(uri: str, extra: dict) -> int:
    """Record an asset event the way ``POST /api/v2/assets/events`` does; returns its id.

    The DAGs folder is synced first so the asset is known (as the DAG processor would have done).
    """
    from sqlalchemy import select

    from airflow.assets.manager import AssetManager
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.uri == uri))
    if asset is None:
        manager = DagBundlesManager()
        manager.sync_bundles_to_db()
        for bundle in manager.get_all_dag_bundles():
            bundle.initialize()
            bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
            sync_bag_to_db(bag, bundle.name, bundle.version)
    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.uri == uri))
        if asset is None:
            raise LookupError(f"no DAG declares the asset {uri!r}")
        event = AssetManager.register_asset_change(asset=asset, extra=extra, session=session, source_is_api=True)
        session.commit()
        return event.id


def run_dag(dag, *, conf: dict[str, Any] | None = None, logical_date=None, hitl_choice: str | None = None,
            responder: str = "local-operator", asset_events: list[int] | None = None):
    """``dag.test()`` with a responder for human-in-the-loop tasks; returns the DagRun.

    :param asset_events: ids of asset events the run consumes (an asset-triggered run).
    """
    events = consuming_asset_events(asset_events) if asset_events else nullcontext()
    with events, HitlResponder(dag.dag_id, hitl_choice, responder):
        return dag.test(run_conf=conf or {}, logical_date=logical_date)
