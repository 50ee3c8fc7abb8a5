"""Operations endpoints outside ``/v1``: health checks and Prometheus metrics.

``/health/live``: the process answers. ``/health/ready``: the database answers
``SELECT 1`` and, when a broker is configured, Redis answers ``PING`` within a
short timeout; a failing check names its component (503), with the error's
class as the reason, never a URL or a password. ``/metrics``: see
:mod:`crsmon.api.metrics`.
"""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from crsmon.api.deps import ContextDep, SettingsDep
from crsmon.api.schemas import Liveness, Readiness

router = APIRouter(tags=["operations"])
logger = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 2.0
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def check_database(engine: Engine) -> str:
    """``ok``, or why the database did not answer."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        logger.warning("readiness: database unavailable (%s)", type(exc).__name__)
        return f"unavailable ({type(exc).__name__})"
    return "ok"


def check_broker(url: str | None) -> str:
    """``ok``, ``not configured``, or why the broker did not answer ``PING``."""
    if url is None:
        return "not configured"
    if not url.startswith(REDIS_SCHEMES):
        return "unavailable (not a Redis URL)"
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=BROKER_TIMEOUT_S,
            socket_connect_timeout=BROKER_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        logger.warning("readiness: broker unavailable (%s)", type(exc).__name__)
        return f"unavailable ({type(exc).__name__})"
    return "ok"


@router.get("/health/live", response_model=Liveness)
def live() -> Liveness:
    """The process is up (no dependency is checked)."""
    return Liveness(status="ok")


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is down."}},
)
def ready(context: ContextDep, settings: SettingsDep) -> JSONResponse:
    """The database and (when configured) the broker answer; the risk model in
    force (or why there is none) is reported, and never makes the service unready."""
    checks = {
        "database": check_database(context.engine),
        "broker": check_broker(settings.broker_url),
    }
    up = all(v in ("ok", "not configured") for v in checks.values())
    # Informational: grading runs without a risk model, and says so here.
    checks["risk_model"] = context.risk_status
    body = Readiness(status="ready" if up else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if up else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(context: ContextDep) -> Response:
    """Prometheus exposition: intake counts, grading lag, open alerts, quarantine."""
    body = generate_latest(context.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
