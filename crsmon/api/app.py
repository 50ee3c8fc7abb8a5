"""The HTTP API: :func:`create_app` builds one FastAPI application from settings.

Nothing is global: the engine, session factory, rule set, dispatcher and
metrics registry belong to the app (``app.state.crsmon``) and the engine is
disposed when the app shuts down. The app never migrates the schema: run
``crsmon db upgrade`` first (tests call :func:`crsmon.db.migrate.upgrade`).

Serve it with ``crsmon serve``, or with uvicorn's factory mode:
``uvicorn --factory crsmon.api.app:app_from_environment``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from crsmon import __version__
from crsmon.api import (
    admin,
    alerts,
    cds,
    fhir,
    operations,
    patients,
    records,
    review,
)
from crsmon.api.access import AccessLog
from crsmon.api.deps import AppContext, RateLimit, authorize
from crsmon.api.errors import database_unavailable, http_error, validation_error
from crsmon.api.limits import BodyLimit
from crsmon.api.metrics import app_metrics
from crsmon.api.tables import router as tables_router
from crsmon.auth.policy import rule_for
from crsmon.db.engine import make_engine, make_sessions
from crsmon.domain.catalog import resolve_rule_set
from crsmon.intake.schemas import FeedRecord
from crsmon.risk.scoring import load_scorer, model_status
from crsmon.services.dispatch import (
    BackgroundDispatcher,
    Dispatcher,
    InProcessDispatcher,
)
from crsmon.services.monitoring import AlertPolicy
from crsmon.services.webhooks import WebhookPolicy
from crsmon.settings import Settings, load_settings

DispatcherFactory = Callable[[sessionmaker[Session], Settings], Dispatcher]
"""Builds the app's dispatcher from its session factory and settings."""

DESCRIPTION = """\
Monitoring of cytokine release syndrome (ASTCT 2019 grading) over HTTP.

*Research software for monitoring and analysis, not a medical device.*

- **Intake** (`/v1/records`): every bedside feed record kind, enrolment
  (`kind: patient`) included, one JSON record per request or an NDJSON batch.
  Idempotent by `source_system` + `source_record_id`. Refused records are kept
  in quarantine with their reason.
- **Reading** (`/v1/patients`, `/v1/alerts`): patients, grade timelines with
  their reasons and rule-set key, alerts (and their acknowledgement).
- **Review** (`/v1/review/...`): who is on monitoring now and how severe, open
  alerts by kind, severity and age, one patient's timeline (JSON and PNG),
  adjudication of the maximum grade, and the cohort summary.
- **Research exports** (`/v1/exports/{table}`, streamed CSV or Parquet): the
  grade table, `efs-long` and `adtte`, pseudonymous, with the grading version
  on every row and a column dictionary at `/v1/exports/{table}/dictionary`.
- **Operations**: `/health/live`, `/health/ready`, `/metrics` (Prometheus).
- **Administration** (`/v1/admin/...`): API keys (created, listed, revoked)
  and the audit trail's verifier.

**Access.** Every route but the two health probes needs
`Authorization: Bearer <API key>`. A key has one role (`bedside` writes
records for its care units; `reviewer` reads and acknowledges for its units;
`analyst` reads the pseudonymous research tables; `admin` manages keys) and,
for bedside and reviewer keys, care units: another unit's patient answers
exactly like a missing one. 401: no, bad, expired or revoked key; 403: the
role may not call the route; 429: the key's rate limit (`Retry-After`).
Each operation below lists the roles that may call it.

Every refusal has the body `{"detail": [{"field", "reason"}]}`; it names the
field and the rule, never the value sent.
"""


def default_dispatcher(
    sessions: sessionmaker[Session], settings: Settings
) -> Dispatcher:
    """With a broker, one Celery message per patient, sent from a thread of
    its own: a request never waits for the broker, even a paused one
    (reliability.md §1.3, F12; T2). Without a broker, grade in process.
    """
    if settings.broker_url:
        from workers.celery_app import make_celery
        from workers.tasks import CeleryDispatcher

        return BackgroundDispatcher(
            CeleryDispatcher(
                make_celery(settings), dedup=True, batch=settings.grading_batch
            )
        )
    rules = resolve_rule_set(settings.rule_set)
    return InProcessDispatcher(
        sessions,
        rules,
        AlertPolicy.from_settings(settings),
        webhooks=WebhookPolicy.from_settings(settings),
    )


class CrsmonAPI(FastAPI):
    """FastAPI with the feed records' JSON Schema in the OpenAPI components."""

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, built once, with each route's access rule."""
        if self.openapi_schema is None:
            document = super().openapi()
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(feed_record_schemas())
            components.setdefault("securitySchemes", {})["apiKey"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "A crsmon API key (crsmon_<key_id>_<secret>).",
            }
            document_refusals(document)
            document_access(document)
        return self.openapi_schema or {}


REFUSED = {"$ref": "#/components/schemas/ErrorBody"}
FASTAPI_422 = {"$ref": "#/components/schemas/HTTPValidationError"}


def document_refusals(document: dict[str, Any]) -> None:
    """FastAPI's 422 as the app really sends it (``ErrorBody``).

    FastAPI documents its 422 with its ``HTTPValidationError``, but the app's
    handler answers ``{"detail": [{"field", "reason"}]}`` (:mod:`.errors`).
    """
    paths = document.get("paths", {})
    for methods in paths.values():
        for operation in methods.values():
            refusal = operation.get("responses", {}).get("422", {})
            content = refusal.get("content", {}).get("application/json", {})
            if content.get("schema") == FASTAPI_422:
                refusal["description"] = "Refused: each field and why."
                content["schema"] = REFUSED
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{unused}"' not in json.dumps(document):
            schemas.pop(unused, None)


def document_access(document: dict[str, Any]) -> None:
    """Put the policy table's rule on every operation (security, roles, 401/403)."""
    refused = REFUSED
    for path, methods in document.get("paths", {}).items():
        for method, operation in methods.items():
            rule = rule_for(method, path)
            if rule is not None and rule.public:
                operation["security"] = []
                continue
            roles = ", ".join(sorted(rule.roles)) if rule else "nobody"
            operation["security"] = [{"apiKey": []}]
            operation["x-crsmon-roles"] = sorted(rule.roles) if rule else []
            operation["description"] = (
                f"{operation.get('description', '')}\n\n**Roles:** {roles}"
                + (f" ({rule.scope} scope)" if rule else "")
            ).strip()
            responses = operation.setdefault("responses", {})
            for status, what in (
                ("401", "No, bad, expired or revoked API key."),
                ("403", "This key's role may not call this route."),
                ("429", "Rate limit: retry after Retry-After seconds."),
            ):
                responses.setdefault(
                    status,
                    {
                        "description": what,
                        "content": {"application/json": {"schema": refused}},
                    },
                )


def feed_record_schemas() -> dict[str, Any]:
    """``FeedRecord`` and the models it refers to, as OpenAPI component schemas."""
    schema = TypeAdapter(FeedRecord).json_schema(
        ref_template="#/components/schemas/{model}"
    )
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, "FeedRecord": schema}


def create_app(
    settings: Settings, dispatcher_factory: DispatcherFactory | None = None
) -> FastAPI:
    """The API on ``settings.database_url`` (already migrated).

    Raises:
        ValueError: ``settings.rule_set`` names no released rule set.
    """
    rules = resolve_rule_set(settings.rule_set)
    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)
    dispatcher = (dispatcher_factory or default_dispatcher)(sessions, settings)
    if settings.broker_url:
        # The workers score; the API only says which model they will use
        # (checked, not loaded: scikit-learn stays out of the API process).
        risk_status = model_status(settings.risk_model_dir, settings.risk_threshold)
    else:
        _, risk_status = load_scorer(settings.risk_model_dir, settings.risk_threshold)
    context = AppContext(
        settings,
        engine,
        sessions,
        rules,
        dispatcher,
        app_metrics(sessions),
        RateLimit.from_settings(settings),
        risk_status,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if isinstance(dispatcher, BackgroundDispatcher):
                dispatcher.close()  # hand on what is queued, within 5 s
            engine.dispose()

    production = settings.mode == "production"
    app = CrsmonAPI(
        title="crsmon",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Every route runs the authorization dependency (deny by default).
        dependencies=[Depends(authorize)],
        docs_url=None if production else "/docs",
        redoc_url=None if production else "/redoc",
    )
    app.state.crsmon = context
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # Connection refused or lost, SQLite busy, pool exhausted: 503, retry later.
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)
    for module in (records, fhir, patients, alerts, cds, review, operations, admin):
        app.include_router(module.router)
    app.include_router(tables_router)
    return app


def app_from_environment() -> FastAPI:
    """The API configured from ``CRSMON_*`` (for ``uvicorn --factory``)."""
    return create_app(load_settings())
