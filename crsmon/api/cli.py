"""``crsmon serve``: run the HTTP API with uvicorn (after ``crsmon db upgrade``)."""

from __future__ import annotations

import click
import uvicorn

from crsmon.settings import Settings, load_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(host: str, port: int, log_level: str) -> None:
    """Serve the HTTP API (CRSMON_* settings; run `crsmon db upgrade` first).

    OpenAPI at /openapi.json, docs at /docs, the API under /v1, health checks
    at /health/live and /health/ready, Prometheus metrics at /metrics.
    """
    from crsmon.api.app import create_app  # FastAPI loads only for this command
    from crsmon.logs import configure_logging

    configure_logging(log_level)
    settings = load_settings()
    app = create_app(settings)
    if settings.mode == "embedded":
        _print_local_admin_key(settings)
    # No uvicorn access log (it prints paths and query strings): crsmon's own
    # (crsmon.api.access) logs route templates and ids. log_config=None keeps
    # the JSON logging configured above.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        log_config=None,
    )


def _print_local_admin_key(settings: Settings) -> None:
    """Embedded mode with no admin key yet: make one and print it, once.

    Production never does this: its first admin key comes from
    ``crsmon keys create --role admin`` on the server.
    """
    from datetime import UTC, datetime

    from sqlalchemy import select

    from crsmon.cli.options import local_actor
    from crsmon.db.engine import make_engine, make_sessions
    from crsmon.db.models import ApiKey
    from crsmon.services.keys import create_key

    engine = make_engine(settings.database_url)
    try:
        with make_sessions(engine).begin() as session:
            now = datetime.now(UTC)
            active = session.scalar(
                select(ApiKey.id).where(
                    ApiKey.role == "admin", ApiKey.revoked_at.is_(None)
                )
            )
            if active is not None:
                return
            _, text = create_key(
                session,
                name="local admin (embedded mode)",
                role="admin",
                units=[],
                expires_at=None,
                actor=local_actor(),
                now=now,
                pepper=settings.pepper(),
            )
    finally:
        engine.dispose()
    click.echo(
        "embedded mode: created a local admin key (shown once; make others with "
        f"`crsmon keys create`):\n{text}",
        err=True,
    )
