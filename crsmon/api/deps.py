"""Dependency providers: everything a route needs comes from its app's context.

``create_app`` builds one :class:`AppContext` (settings, engine, sessions, rule
set, dispatcher, metrics) and keeps it on ``app.state``; nothing is global, and
a test can override any provider with ``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.errors import ApiError
from crsmon.api.metrics import AppMetrics
from crsmon.domain.rules import RuleSet
from crsmon.services.dispatch import Dispatcher
from crsmon.settings import Settings


@dataclass(frozen=True, slots=True)
class AppContext:
    """What one app instance is built on."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    rules: RuleSet
    dispatcher: Dispatcher
    metrics: AppMetrics
    risk_status: str = "not configured"
    """The risk model in force, or why there is none (``/health/ready``)."""


def get_context(request: Request) -> AppContext:
    """The app's context."""
    context: AppContext = request.app.state.crsmon
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_settings(context: ContextDep) -> Settings:
    """The app's settings."""
    return context.settings


def get_sessions(context: ContextDep) -> sessionmaker[Session]:
    """The app's session factory."""
    return context.sessions


def get_dispatcher(context: ContextDep) -> Dispatcher:
    """Who gets stored records graded (in process by default)."""
    return context.dispatcher


SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(sessions: SessionsDep) -> Iterator[Session]:
    """A read session for one request, closed (rolled back) afterwards."""
    with sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def json_body(request: Request) -> bytes:
    """The raw body of a JSON request, unparsed (the intake parses it strictly)."""
    media = _media_type(request)
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise ApiError(415, "content-type", "must be application/json")
    return await request.body()


async def ndjson_body(request: Request) -> bytes:
    """The raw body of an NDJSON request (one feed record a line)."""
    if _media_type(request) not in NDJSON_TYPES:
        raise ApiError(415, "content-type", "must be application/x-ndjson")
    return await request.body()


JsonBody = Annotated[bytes, Depends(json_body)]
NdjsonBody = Annotated[bytes, Depends(ndjson_body)]
