"""Dependency providers: everything a route needs comes from its app's context.

``create_app`` builds one :class:`AppContext` (settings, engine, sessions, rule
set, dispatcher, metrics, rate limiter) and keeps it on ``app.state``; nothing
is global, and a test can override any provider with ``app.dependency_overrides``.

Access control lives here too, because every session a route can get passes
through it: :func:`authorize` runs for every route (the app declares it as a
global dependency), looks the route up in the policy table
(:mod:`crsmon.auth.policy`; a route missing from it is refused for everyone),
checks the bearer key, its role and its rate limit, and audits each denial.
:func:`get_sessions` depends on it, so a route's sessions are scoped to the
caller's care units (:mod:`crsmon.db.scope`) before any query runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.errors import ApiError
from crsmon.api.metrics import AppMetrics
from crsmon.auth.policy import Rule, allowed, rule_for
from crsmon.db.audit import SECURITY, Actor, record_event
from crsmon.db.scope import scoped_sessions
from crsmon.domain.rules import RuleSet
from crsmon.services.dispatch import Dispatcher
from crsmon.services.keys import Principal, authenticate
from crsmon.settings import Settings


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per-caller request budget (the limits library, moving window)."""

    limiter: MovingWindowRateLimiter
    item: RateLimitItem

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimit:
        """The limit and storage the settings name."""
        storage = storage_from_string(settings.rate_limit_storage)
        return cls(MovingWindowRateLimiter(storage), parse(settings.rate_limit))

    def spend(self, caller: str) -> None:
        """Count one request of ``caller``.

        Raises:
            ApiError: 429 with ``Retry-After`` when the budget is spent.
        """
        if self.limiter.hit(self.item, caller):
            return
        stats = self.limiter.get_window_stats(self.item, caller)
        wait = max(1, int(stats.reset_time - time.time()) + 1)
        raise ApiError(
            429,
            "$",
            f"rate limit of {self.item} exceeded; retry later",
            headers={"Retry-After": str(wait)},
        )


@dataclass(frozen=True, slots=True)
class AppContext:
    """What one app instance is built on."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    rules: RuleSet
    dispatcher: Dispatcher
    metrics: AppMetrics
    rate_limit: RateLimit
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


ROW_ID_MAX = 2**31 - 1
"""The largest row id (``INTEGER`` keys are 32-bit on PostgreSQL).

An id from a request is bounded by it (``le=ROW_ID_MAX``): a larger one is
refused with 422 instead of overflowing the driver (a 500).
"""
OFFSET_MAX = 2**63 - 1
"""The largest page offset both databases bind (64-bit; SQLite overflows past it)."""
NO_NUL = r"^[^\x00]*$"
"""The pattern of every free-text parameter and field: no NUL character.

PostgreSQL text cannot hold one; sent on, it fails the query (a 500), so it is
refused with 422 like any other invalid value.
"""

UNAUTHENTICATED = {"WWW-Authenticate": 'Bearer realm="crsmon"'}
_REFUSED = {
    "missing": "send Authorization: Bearer <API key>",
    "malformed": "not a crsmon API key",
    "unknown": "invalid API key",
    "wrong secret": "invalid API key",
    "expired": "the API key has expired",
    "revoked": "the API key was revoked",
}


def _deny(
    context: AppContext,
    request: Request,
    *,
    actor: Actor,
    status: int,
    why: str,
    route: str,
) -> None:
    """Write the denial's security audit event (no PHI: route template only)."""
    with context.sessions.begin() as session:
        record_event(
            session,
            chain=SECURITY,
            actor=actor,
            action="deny",
            entity="route",
            entity_id=route,
            now=datetime.now(UTC),
            reason=why,
            details={"status": status, "client": _client(request)},
        )


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else "not-a-bearer-token"


def authorize(request: Request, context: ContextDep) -> Principal | None:
    """The caller of a protected route, authenticated and allowed; None: public.

    Raises:
        ApiError: 401 (no, bad, unknown, expired or revoked key), 403 (the
            key's role may not call this route, or the route is not in the
            policy), 429 (rate limit).
    """
    request_id = uuid.uuid4().hex
    request.state.request_id = request_id
    route = getattr(request.scope.get("route"), "path", request.url.path)
    rule: Rule | None = rule_for(request.method, route)
    if rule is not None and rule.public:
        return None
    where = f"{request.method} {route}"
    token = _bearer(request)
    with context.sessions() as session:
        found = authenticate(
            session,
            token,
            pepper=context.settings.pepper(),
            now=datetime.now(UTC),
        )
    if isinstance(found, str):
        context.rate_limit.spend(f"client:{_client(request)}")
        anonymous = Actor("anonymous", "none", request_id)
        _deny(context, request, actor=anonymous, status=401, why=found, route=where)
        raise ApiError(401, "authorization", _REFUSED[found], headers=UNAUTHENTICATED)
    context.rate_limit.spend(f"key:{found.key_id}")
    if not allowed(rule, found.role):
        why = "route not in the access policy" if rule is None else "role not allowed"
        actor = found.actor(request_id)
        _deny(context, request, actor=actor, status=403, why=why, route=where)
        raise ApiError(403, "authorization", f"a {found.role} key may not do this")
    request.state.principal = found
    return found


PrincipalDep = Annotated[Principal | None, Depends(authorize)]


def actor_of(request: Request, principal: Principal | None) -> Actor:
    """The audit trail's actor for this request."""
    request_id = getattr(request.state, "request_id", None)
    if principal is None:
        return Actor("anonymous", "none", request_id)
    return principal.actor(request_id)


def get_actor(request: Request, principal: PrincipalDep) -> Actor:
    """The caller as the audit trail names it."""
    return actor_of(request, principal)


ActorDep = Annotated[Actor, Depends(get_actor)]


def get_sessions(context: ContextDep, principal: PrincipalDep) -> sessionmaker[Session]:
    """Sessions for this caller: scoped to its care units unless it has all."""
    if principal is None or principal.all_units:
        return context.sessions
    return scoped_sessions(context.engine, principal.units)


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
