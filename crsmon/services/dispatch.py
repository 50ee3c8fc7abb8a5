"""How stored records reach a grader: the seam between intake and workers.

Intake commits records as ``pending`` (the database is the queue of record);
after the commit it hands the touched patient ids to a :class:`Dispatcher`.
``InProcessDispatcher`` grades at once (the embedded default, no broker);
the Celery dispatcher (``workers``) sends one message per patient with ids
only. Losing a notification costs latency, never data: the sweeper re-finds
every pending record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from crsmon.domain.rules import RuleSet
from crsmon.services.grading import GradingRun, grade_patient


class Dispatcher(Protocol):
    """Something that gets patients with pending records graded."""

    def notify(self, patient_ids: Iterable[int]) -> None:
        """Ask for these patients to be graded (after the records are committed)."""


class InProcessDispatcher:
    """Grades each patient immediately, in its own transaction."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        rules: RuleSet,
        stale_after_h: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.rules = rules
        self.stale_after_h = stale_after_h
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
                    stale_after_h=self.stale_after_h,
                )
            self.runs.append(run)
