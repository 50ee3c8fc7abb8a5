"""Request body limits: 413 before a large body is read into memory.

A declared ``Content-Length`` over the limit is refused at once, unread. A body
sent without one (chunked) or longer than it claims is counted as it streams
in; the read that crosses the limit raises :class:`BodyTooLarge`, an HTTP error
that FastAPI answers with 413 (the handler has not replied yet, as it is still
reading its body).
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crsmon.api.errors import ApiError


class BodyTooLarge(ApiError):
    """The request body is over the configured limit."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, "$", f"request body is larger than {max_bytes} bytes")


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, if it sent a valid one."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """ASGI middleware refusing bodies over ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse by header, else count the body as the app reads it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            error = BodyTooLarge(self.max_bytes)
            response = JSONResponse({"detail": error.detail}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)
