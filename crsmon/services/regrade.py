"""Regrade the stored history under another rule set, in batches, on one or
several processes.

Each batch of patients is one transaction and one risk-model call (see
:func:`crsmon.services.grading.grade_patients`, ``live=False``): grade rows
only, beside the live ones. Batches hold disjoint patients, so processes never
wait on each other's locks; a live grader of the same patient waits for the
batch (or the batch for it), as any two graders do. A batch that fails stops
the run (see :func:`regrade_all`); batches already committed stay (they are
complete and idempotent: running the regrade again writes only what is
missing).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import make_url, select
from sqlalchemy.orm import Session, sessionmaker
from threadpoolctl import threadpool_limits

from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.models import Patient
from crsmon.domain.rules import RuleSet
from crsmon.services.grading import grade_patients
from crsmon.services.monitoring import AlertPolicy
from crsmon.settings import Settings

REGRADE_BATCH = 32
"""Patients regraded per transaction (their moments scored in one call).
Larger batches measured no faster (docs/performance.md)."""


@dataclass(frozen=True, slots=True)
class Regraded:
    """What a regrade run did: patients read, grade rows written by the
    batches that committed, the processes that ran them, and the first
    batch's error when the run stopped on one (``None``: complete)."""

    patients: int
    grade_rows_written: int
    pids: frozenset[int]
    failure: BaseException | None = None

    @property
    def processes(self) -> int:
        """How many processes regraded batches."""
        return len(self.pids)


def regrade_batch(
    sessions: sessionmaker[Session],
    patient_ids: list[int],
    rule_set: RuleSet,
    policy: AlertPolicy,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Regrade one batch in one transaction; the grade rows written."""
    with sessions.begin() as session:
        runs = grade_patients(
            session, patient_ids, rule_set, now=now(), policy=policy, live=False
        )
    return sum(run.grades_written for run in runs.values())


def batches(patient_ids: list[int], size: int | None = None) -> Iterator[list[int]]:
    """``patient_ids`` in runs of ``size`` (default :data:`REGRADE_BATCH`)."""
    step = REGRADE_BATCH if size is None else size
    for start in range(0, len(patient_ids), step):
        yield patient_ids[start : start + step]


def regrade_all(settings: Settings, rule_set: RuleSet, *, jobs: int = 1) -> Regraded:
    """Regrade every patient under ``rule_set`` on ``jobs`` processes (1: in
    this process).

    A batch that fails stops the run: no batch starts after it, the ones
    already running finish, and the result carries the error with the rows
    the committed batches wrote (the caller audits the run either way).

    Raises:
        ValueError: ``jobs`` below 1, or above 1 on SQLite (one writer at a
            time: parallel batches would only queue for its lock, and time
            out behind long ones).
    """
    if jobs < 1:
        raise ValueError("jobs: at least 1")
    if jobs > 1 and make_url(settings.database_url).get_backend_name() == "sqlite":
        raise ValueError("jobs: more than 1 needs PostgreSQL (SQLite has one writer)")
    policy = AlertPolicy.from_settings(settings)  # the model, loaded once
    engine = make_engine(settings.database_url)
    try:
        sessions = make_sessions(engine)
        with sessions() as session:
            patient_ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
        if jobs == 1:
            here = frozenset({os.getpid()} if patient_ids else ())
            written = 0
            for ids in batches(patient_ids):
                try:
                    written += regrade_batch(sessions, ids, rule_set, policy)
                except Exception as exc:  # returned, to be audited, then raised
                    return Regraded(len(patient_ids), written, here, exc)
            return Regraded(len(patient_ids), written, here)
    finally:
        engine.dispose()  # no connection is inherited by, or shared with, a child
    return _in_processes(settings.database_url, rule_set, policy, patient_ids, jobs)


def _in_processes(
    database_url: str,
    rule_set: RuleSet,
    policy: AlertPolicy,
    patient_ids: list[int],
    jobs: int,
) -> Regraded:
    written = 0
    processes: set[int] = set()
    failure: BaseException | None = None
    with ProcessPoolExecutor(
        max_workers=jobs,
        # fork: a child starts with the modules and the risk model already
        # loaded (spawn took seconds to load them again in every child); the
        # parent holds no connection then (disposed above) and runs no thread.
        mp_context=multiprocessing.get_context("fork"),
        initializer=_child_init,
        initargs=(database_url, rule_set, policy),
    ) as pool:
        futures = [pool.submit(_child_batch, ids) for ids in batches(patient_ids)]
        for future in as_completed(futures):
            if future.cancelled():
                continue
            error = future.exception()
            if error is not None:
                if failure is None:
                    failure = error
                    for waiting in futures:
                        waiting.cancel()  # those not started yet
                continue
            pid, rows = future.result()
            processes.add(pid)
            written += rows
    return Regraded(len(patient_ids), written, frozenset(processes), failure)


@dataclass(frozen=True, slots=True)
class _Child:
    """A child process's own engine, policy and rule set."""

    sessions: sessionmaker[Session]
    policy: AlertPolicy
    rule_set: RuleSet


_CHILD: list[_Child] = []  # set once per child process by _child_init


def _child_init(database_url: str, rule_set: RuleSet, policy: AlertPolicy) -> None:
    # One thread per process: the model's OpenMP pool would otherwise start a
    # thread per core in every child, and on two cores two children spun four.
    threadpool_limits(1)
    _CHILD.append(_Child(make_sessions(make_engine(database_url)), policy, rule_set))


def _child_batch(patient_ids: list[int]) -> tuple[int, int]:
    """One batch in a child: its process id and the grade rows written."""
    child = _CHILD[0]
    rows = regrade_batch(child.sessions, patient_ids, child.rule_set, child.policy)
    return os.getpid(), rows
