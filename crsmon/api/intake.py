"""Feed records over HTTP: the same path as ``crsmon ingest``, then grading.

Each record's text goes through :func:`crsmon.services.ingest.ingest_text`
(strict validation, stored once, refusals quarantined); a batch through
:func:`~crsmon.services.ingest.ingest_many`, which takes each record exactly as
that would but stores runs of plain records together. One bad record never
costs the good ones. After the stored
records are committed, the dispatcher is told which patients changed. A failed
notification costs latency, never data: the records stay ``pending`` in the
database (the queue of record) for the next grading run or the sweeper.

A body that is not UTF-8 cannot be read as JSON at all; it is quarantined here
with that reason, so it is not lost either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.deps import ActorDep, ContextDep, DispatcherDep, SessionsDep
from crsmon.api.errors import ApiError
from crsmon.api.metrics import AppMetrics
from crsmon.db.audit import QUARANTINE, Actor, record_event
from crsmon.db.repository import quarantine
from crsmon.services.dispatch import Dispatcher
from crsmon.services.ingest import Outcome, ingest_many, ingest_text

logger = logging.getLogger(__name__)

NOT_UTF8 = "$: not valid UTF-8 text"


@dataclass(frozen=True, slots=True)
class Line:
    """One record of a batch: its 1-based line number and what became of it."""

    line: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Intake:
    """Ingest records for one request, count them, and notify the grader."""

    sessions: sessionmaker[Session]
    dispatcher: Dispatcher
    metrics: AppMetrics
    max_batch_records: int
    actor: Actor

    def one(self, raw: bytes) -> Outcome:
        """One record (``POST /v1/records``)."""
        outcome = self._ingest(raw, datetime.now(UTC), "api", None)
        self.notify([outcome])
        return outcome

    def batch(self, raw: bytes) -> list[Line]:
        """Every non-blank line of an NDJSON body, in order.

        Raises:
            ApiError: 413 over ``max_batch_records`` (nothing stored), 422 empty.
        """
        lines = [
            (n, text.rstrip(b"\r"))
            for n, text in enumerate(raw.split(b"\n"), start=1)
            if text.strip()
        ]
        if len(lines) > self.max_batch_records:
            raise ApiError(
                413, "$", f"more than {self.max_batch_records} records in one batch"
            )
        if not lines:
            raise ApiError(422, "$", "the batch holds no records")
        now = datetime.now(UTC)
        readable: list[tuple[int | None, str]] = []
        outcomes: dict[int, Outcome] = {}
        for n, raw_line in lines:
            try:
                readable.append((n, raw_line.decode("utf-8")))
            except UnicodeDecodeError:
                outcomes[n] = self._quarantine_bytes(raw_line, "api-batch", n)
        stored = ingest_many(
            self.sessions, readable, now=now, channel="api-batch", actor=self.actor
        )
        for (number, _), outcome in zip(readable, stored, strict=True):
            outcomes[number or 0] = outcome
        done = [Line(n, outcomes[n]) for n, _ in lines]
        for d in done:
            self.metrics.intake.labels(status=d.outcome.status).inc()
        self.notify(d.outcome for d in done)
        return done

    def _ingest(
        self, raw: bytes, now: datetime, channel: str, line_no: int | None
    ) -> Outcome:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            outcome = self._quarantine_bytes(raw, channel, line_no)
        else:
            outcome = ingest_text(
                self.sessions,
                text,
                now=now,
                channel=channel,
                line_no=line_no,
                actor=self.actor,
            )
        self.metrics.intake.labels(status=outcome.status).inc()
        return outcome

    def _quarantine_bytes(
        self, raw: bytes, channel: str, line_no: int | None
    ) -> Outcome:
        with self.sessions.begin() as session:
            row = quarantine(
                session,
                channel=channel,
                error=NOT_UTF8,
                payload=raw.decode("utf-8", "backslashreplace"),
                line_no=line_no,
            )
            record_event(
                session,
                chain=QUARANTINE,
                actor=self.actor,
                action="refuse",
                entity="quarantine",
                entity_id=row.id,
                now=datetime.now(UTC),
                reason=NOT_UTF8,
                details={"channel": channel},
            )
        return Outcome("refused", error=NOT_UTF8)

    def notify(self, outcomes: Iterable[Outcome]) -> None:
        """Tell the dispatcher which patients have new stored records."""
        touched = {
            o.patient_id
            for o in outcomes
            if o.status == "stored" and o.patient_id is not None
        }
        if not touched:
            return
        try:
            with self.metrics.dispatch_seconds.time():
                self.dispatcher.notify(touched)
        except Exception:
            self.metrics.dispatch_failures.inc()
            logger.exception("grading notification failed; records stay pending")


def get_intake(
    context: ContextDep,
    sessions: SessionsDep,
    dispatcher: DispatcherDep,
    actor: ActorDep,
) -> Intake:
    """The intake for one request (sessions scoped to the caller's units)."""
    return Intake(
        sessions,
        dispatcher,
        context.metrics,
        context.settings.max_batch_records,
        actor,
    )


IntakeDep = Annotated[Intake, Depends(get_intake)]
