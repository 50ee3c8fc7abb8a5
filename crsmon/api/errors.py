"""One error shape for every refusal: ``{"detail": [{"field", "reason"}]}``.

Reasons name the field and the rule that refused it; they never echo the value
that was sent (a rejected value may be a mistyped identifier). FastAPI's own
request-validation errors are re-shaped the same way, without their ``input``.
"""

from __future__ import annotations

import re

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException as StarletteHTTPException

from crsmon.schemas.errors import field_path

_NEXT_FIELD = re.compile(r"; (?=[$A-Za-z_][A-Za-z0-9_.\[\]]*: )")
"""Where the next ``path: reason`` starts (a reason may itself hold ``; ``)."""


def problems(error: str | None) -> list[dict[str, str]]:
    """The intake's ``"a: why; b.c: why"`` error text as field/reason pairs."""
    found = []
    for part in _NEXT_FIELD.split(error or "$: refused"):
        field, sep, reason = part.partition(": ")
        found.append(
            {"field": field, "reason": reason}
            if sep
            else {"field": "$", "reason": part}
        )
    return found


class ApiError(HTTPException):
    """A refusal with the shared error body (FastAPI renders ``detail`` as is)."""

    def __init__(
        self,
        status_code: int,
        field: str = "$",
        reason: str = "refused",
        *,
        detail: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            status_code,
            detail=detail or [{"field": field, "reason": reason}],
            headers=headers,
        )

    @classmethod
    def from_text(cls, status_code: int, error: str | None) -> ApiError:
        """An error from the intake's ``path: reason; ...`` text."""
        return cls(status_code, detail=problems(error))


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for parameters and bodies, without the submitted input."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {
            "field": field_path(tuple(e["loc"])[1:]) or "$",
            "reason": str(e["msg"]).removeprefix("Value error, "),
        }
        for e in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def http_error(_request: Request, exc: Exception) -> Response:
    """Framework refusals in the shared shape too.

    FastAPI and Starlette raise their own errors with a plain-text ``detail``:
    400 for a JSON body they cannot read (not UTF-8), 404 for an unknown path,
    405 for a method a path does not have. They get ``[{"field": "$",
    "reason": ...}]``, like every :class:`ApiError` (which passes unchanged).
    """
    if not isinstance(exc, StarletteHTTPException):  # registered for it only
        raise exc
    headers = getattr(exc, "headers", None)
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=headers)
    detail = (
        exc.detail
        if isinstance(exc.detail, list)
        else [{"field": "$", "reason": str(exc.detail)}]
    )
    return JSONResponse(
        {"detail": detail}, status_code=exc.status_code, headers=headers
    )


RETRY_AFTER_S = 5
"""What a 503 asks the client to wait before it resends (same key: stored once)."""


async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """The database is down or busy: 503 with ``Retry-After``, never a 500 trace.

    Nothing was committed (the transaction rolled back with the error), so the
    sender can resend the same records with the same keys; each is stored once.
    The driver's message is not sent (it may name hosts or hold SQL).
    """
    reason = f"database unavailable ({type(exc).__name__}): nothing was stored; retry"
    return JSONResponse(
        {"detail": [{"field": "$", "reason": reason}]},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
