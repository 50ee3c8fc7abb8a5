"""Regrade the stored history under another rule set, in batches, on one or
several processes.

Each batch of patients is one transaction and one risk-model call (see
:func:`crsmon.services.grading.grade_patients`, ``live=False``): grade rows
only, beside the live ones. Batches hold disjoint patients, so processes never
wait on each other's locks; a live grader of the same patient waits for the
batch (or the batch for it), as any two graders do. A batch that fails stops
the run with its error; batches already committed stay (they are complete
and idempotent: running the regrade again writes only what is missing).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
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
    """What a regrade run did: patients read, grade rows written."""

    patients: int
    grade_rows_written: int


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
    this process). Raises whatever a batch raised."""
    if jobs < 1:
        raise ValueError("jobs: at least 1")
    policy = AlertPolicy.from_settings(settings)  # the model, loaded once
    engine = make_engine(settings.database_url)
    try:
        sessions = make_sessions(engine)
        with sessions() as session:
            patient_ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
        if jobs == 1:
            written = sum(
                regrade_batch(sessions, ids, rule_set, policy)
                for ids in batches(patient_ids)
            )
            return Regraded(len(patient_ids), written)
    finally:
        engine.dispose()  # no connection is inherited by, or shared with, a child
    with ProcessPoolExecutor(
        max_workers=jobs,
        # fork: a child starts with the modules and the risk model already
        # loaded (spawn took seconds to load them again in every child); the
        # parent holds no connection then (disposed above) and runs no thread.
        mp_context=multiprocessing.get_context("fork"),
        initializer=_child_init,
        initargs=(settings.database_url, rule_set, policy),
    ) as pool:
        written = sum(pool.map(_child_batch, batches(patient_ids)))
    return Regraded(len(patient_ids), written)


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


def _child_batch(patient_ids: list[int]) -> int:
    child = _CHILD[0]
    return regrade_batch(child.sessions, patient_ids, child.rule_set, child.policy)
