"""The API's access log: one structured line per request, with ids only.

Uvicorn's own access log prints the concrete path and query string, which can
hold a pseudonym or a free-text parameter; ``crsmon serve`` turns it off and
this middleware logs instead the method, the route template, the status, the
duration, the request id and the caller's key id (reliability.md §3.5).
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("crsmon.access")


class AccessLog:
    """ASGI middleware writing the access log after each HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; log how it ended."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state") or {}
            principal = state.get("principal")
            route = getattr(scope.get("route"), "path", None)
            logger.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "route": route or "(no route)",
                    "status": status[0],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "request_id": state.get("request_id"),
                    "key_id": getattr(principal, "key_id", None),
                    "role": getattr(principal, "role", None),
                },
            )
