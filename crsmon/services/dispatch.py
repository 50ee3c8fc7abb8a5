"""How stored records reach a grader: the seam between intake and workers.

Intake commits records as ``pending`` (the database is the queue of record);
after the commit it hands the touched patient ids to a :class:`Dispatcher`.
``InProcessDispatcher`` grades at once (the embedded default, no broker);
the Celery dispatcher (``workers``) sends one message per patient with ids
only. Losing a notification costs latency, never data: the sweeper re-finds
every pending record.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from crsmon.domain.rules import RuleSet
from crsmon.services.grading import GradingRun, grade_patient
from crsmon.services.monitoring import AlertPolicy
from crsmon.services.webhooks import DeliveryReport, WebhookPolicy, deliver_due

logger = logging.getLogger(__name__)


def wall_clock() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


class Dispatcher(Protocol):
    """Something that gets patients with pending records graded."""

    def notify(self, patient_ids: Iterable[int]) -> None:
        """Ask for these patients to be graded (after the records are committed)."""


class InProcessDispatcher:
    """Grades each patient immediately, in its own transaction.

    With a webhook policy, the pushes a run raised are sent right after its
    commit (failed ones wait for the next ``crsmon sweep``).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        rules: RuleSet,
        policy: AlertPolicy,
        clock: Callable[[], datetime] = wall_clock,
        webhooks: WebhookPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.rules = rules
        self.policy = policy
        self.webhooks = webhooks
        self.deliveries: deque[DeliveryReport] = deque(maxlen=1000)
        # A replay grades as of its own feed time, not the wall clock.
        self.clock = clock
        # The latest runs only: a long-running server must not grow without bound.
        self.runs: deque[GradingRun] = deque(maxlen=1000)

    def notify(self, patient_ids: Iterable[int]) -> None:
        """Grade each patient now."""
        for patient_id in sorted(set(patient_ids)):
            with self.sessions.begin() as session:
                run = grade_patient(
                    session,
                    patient_id,
                    self.rules,
                    now=self.clock(),
                    policy=self.policy,
                )
            self.runs.append(run)
            if self.webhooks is not None and any(d.push for d in run.alerts_raised):
                self._push(self.webhooks, len(run.alerts_raised))

    def _push(self, webhooks: WebhookPolicy, alerts: int) -> None:
        """Send this run's pushes now; a failure waits for the next sweep."""
        limit = alerts * len(webhooks.urls)
        try:
            report = deliver_due(self.sessions, webhooks, clock=wall_clock, limit=limit)
        except Exception as exc:  # the rows are stored: `crsmon sweep` retries
            logger.warning("webhook delivery deferred (%s)", type(exc).__name__)
            return
        self.deliveries.append(report)


class BackgroundDispatcher:
    """Hands notifications to another dispatcher on a thread of its own, so a
    request never waits for the broker (reliability.md T2: intake answers in
    time while Redis is paused or gone).

    :meth:`notify` only records the patient ids (a set: ten notifications of
    one patient before the thread runs are one message) and returns. The
    thread sends what has gathered, in batches; a failed send is the inner
    dispatcher's to log. Losing what is gathered (a crash, a failed send)
    costs latency, never data: the records are committed as pending and the
    sweeper re-finds them.
    """

    def __init__(self, inner: Dispatcher, *, name: str = "crsmon-publisher") -> None:
        self.inner = inner
        self.name = name
        self.failures = 0
        """Sends that raised (each logged; the sweeper re-finds their records)."""
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._pending: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def notify(self, patient_ids: Iterable[int]) -> None:
        """Queue these patients for the thread; never blocks on the broker."""
        if os.getpid() != self._pid:
            # A forked child has no thread and may hold a copy of a taken lock:
            # it starts its own.
            self._start()
        with self._lock:
            if self._closed:
                logger.warning(
                    "grading notification after shutdown; records stay pending"
                )
                return
            before = len(self._pending)
            self._pending.update(patient_ids)
            if len(self._pending) == before:
                return
            self._idle.clear()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, set()
                closed = self._closed
            if batch:
                try:
                    self.inner.notify(batch)
                except BaseException as exc:  # the thread must outlive any send
                    self.failures += 1
                    logger.warning(
                        "grading notification failed (%s); records stay pending",
                        type(exc).__name__,
                    )
            with self._lock:
                if not self._pending:
                    self._idle.set()
            if closed:
                return

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far was handed on; False on timeout."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Hand on what is queued (within ``timeout``), stop the thread, and
        close the inner dispatcher when it has a ``close``."""
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        close = getattr(self.inner, "close", None)
        if callable(close) and not self._thread.is_alive():
            close()
