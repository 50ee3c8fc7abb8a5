"""``/v1/exports`` (the research tables, streamed) and ``/v1/review/cohort``.

The tables are built as they are sent, twenty-five patients at a time, so a
large registry never sits in memory; a header names the notice, and each
table's column dictionary is at ``/v1/exports/{table}/dictionary``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.deps import NO_NUL, ActorDep, ContextDep, SessionDep
from crsmon.db.audit import ADMIN, record_event
from crsmon.domain.rules import RuleSet
from crsmon.services.exports import (
    NOTICE,
    TableName,
    cohort_summary,
    csv_chunks,
    dictionary,
    grade_rows,
    parquet_chunks,
    table_rows,
)

router = APIRouter(tags=["exports"])

_MEDIA = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


def _rows(
    sessions: sessionmaker[Session], rules: RuleSet, table: TableName, now: datetime
) -> Iterator[dict[str, Any]]:
    with sessions() as session:
        grades = grade_rows(session, rules, now=now)
        yield from table_rows(table, grades)


@router.get(
    "/v1/exports/{table}",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
            "description": "The table, streamed; its dictionary is at .../dictionary.",
        }
    },
)
def get_export(
    table: TableName,
    context: ContextDep,
    actor: ActorDep,
    format: Literal["csv", "parquet"] = "csv",
    purpose: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=NO_NUL,
            description="Why the table is taken (audited).",
        ),
    ] = None,
) -> StreamingResponse:
    """The grade table, ``efs_long`` or the ADTTE-style table, under the live
    rule set (pseudonymous; research data, not for clinical decisions).

    Every export is audited (who, which table, format, rule set, purpose)
    before the first byte is sent."""
    now = datetime.now(UTC)
    with context.sessions.begin() as session:
        record_event(
            session,
            chain=ADMIN,
            actor=actor,
            action="export",
            entity="table",
            entity_id=table,
            now=now,
            reason=purpose,
            details={"format": format, "rule_set": context.rules.key},
        )
    rows = _rows(context.sessions, context.rules, table, now)
    body = csv_chunks(table, rows) if format == "csv" else parquet_chunks(table, rows)
    name = f"crsmon-{table}.{format}"
    return StreamingResponse(
        body,
        media_type=_MEDIA[format],
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Crsmon-Notice": NOTICE,
            "X-Crsmon-Rule-Set": f"{context.rules.key} v{context.rules.version}",
            "Link": f'</v1/exports/{table}/dictionary>; rel="describedby"',
        },
    )


@router.get("/v1/exports/{table}/dictionary")
def get_dictionary(table: TableName) -> dict[str, Any]:
    """The notice and each column's name, type, unit and derivation."""
    return dictionary(table)


@router.get("/v1/review/cohort")
def get_cohort(session: SessionDep, context: ContextDep) -> dict[str, Any]:
    """CRS incidence, grade distribution, median onset and duration,
    tocilizumab and steroid use and ICU-level support, over every patient."""
    rows = grade_rows(session, context.rules, now=datetime.now(UTC))
    return {
        "rule_set": context.rules.key,
        "rule_set_version": context.rules.version,
        **cohort_summary(rows),
    }
