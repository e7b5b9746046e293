"""Run a DAG in-process with ``dag.test()`` on the local target, with a stand-in for the person.

``dag.test()`` has no scheduler and no UI, so a human-in-the-loop task would wait forever. When a
run reaches one, :class:`HitlResponder` answers it from a helper thread with the same database
writes the REST API makes when a person clicks in the UI (recorded as that named responder).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


class HitlResponder:
    """Answers every pending human-in-the-loop request of ``dag_id`` with ``choice``.

    :param dag_id: the DAG whose requests to answer.
    :param choice: the option to choose ("Approve" / "Reject"); None answers nothing.
    :param responder: the name recorded as the person who answered.
    """

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
                    for ti in pending:
                        detail = ti.hitl_detail
                        if detail is None or detail.responded_at is not None:
                            continue
                        detail.chosen_options = [self.choice]
                        detail.params_input = {}
                        detail.responded_at = utcnow()
                        detail.responded_by = {"id": self.responder, "name": self.responder}
                        log.warning("%s answers %s.%s: %s", self.responder, ti.dag_id, ti.task_id, self.choice)
                        handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti,
                                            session=session)
                        self.answered.append(ti.task_id)
            except Exception:  # keep answering; the run itself reports real failures
                log.exception("answering human-in-the-loop requests failed")
            time.sleep(0.5)


def run_dag(dag, *, conf: dict[str, Any] | None = None, logical_date=None, hitl_choice: str | None = None,
            responder: str = "local-operator"):
    """``dag.test()`` with a responder for human-in-the-loop tasks; returns the DagRun."""
    with HitlResponder(dag.dag_id, hitl_choice, responder):
        return dag.test(run_conf=conf or {}, logical_date=logical_date)
