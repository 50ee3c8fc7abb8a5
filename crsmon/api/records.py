"""``/v1/records``: feed records in, one at a time or as an NDJSON batch.

Every record kind of the bedside feed goes here, enrolment (``kind: patient``)
included. The idempotency key is the sender plus its own id
(``source_system`` + ``source_record_id``): the same key with the same content
again stores nothing and returns the original ids; with other content it is a
conflict.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from crsmon.api.deps import JsonBody, NdjsonBody
from crsmon.api.errors import ApiError
from crsmon.api.intake import IntakeDep
from crsmon.api.schemas import BatchResult, ErrorBody, RecordResult

router = APIRouter(prefix="/v1/records", tags=["records"])

FEED_RECORD_REF = "#/components/schemas/FeedRecord"
_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "Body over the size limit."},
    415: {"model": ErrorBody, "description": "Wrong content type."},
}


@router.post(
    "",
    status_code=201,
    response_model=RecordResult,
    responses={
        200: {"model": RecordResult, "description": "Already received: original ids."},
        409: {"model": ErrorBody, "description": "Key reused with other content."},
        422: {
            "model": ErrorBody,
            "description": "Refused (kept in quarantine): each field and why. "
            "A record for a patient who is not enrolled is refused with field "
            "`patient`.",
        },
        **_ERRORS,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": FEED_RECORD_REF}}},
        }
    },
)
def post_record(body: JsonBody, intake: IntakeDep, response: Response) -> RecordResult:
    """Take one feed record (JSON exactly as a feed line), store it once, grade."""
    outcome = intake.one(body)
    if outcome.status == "conflict":
        raise ApiError.from_text(409, outcome.error)
    if outcome.status == "refused":
        raise ApiError.from_text(422, outcome.error)
    response.status_code = 201 if outcome.status == "stored" else 200
    return RecordResult.of(outcome)


@router.post(
    "/batch",
    response_model=BatchResult,
    responses={
        413: {"model": ErrorBody, "description": "Body or record count over limit."},
        415: _ERRORS[415],
        422: {"model": ErrorBody, "description": "The body holds no records."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "NDJSON: one feed record per line, exactly as the feed "
            "file `crsmon ingest` reads. Blank lines are skipped.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
def post_batch(body: NdjsonBody, intake: IntakeDep) -> BatchResult:
    """Take many records; each is stored or refused on its own, in order."""
    return BatchResult.of(intake.batch(body))
