"""``crsmon serve``: run the HTTP API with uvicorn (after ``crsmon db upgrade``)."""

from __future__ import annotations

import click
import uvicorn

from crsmon.settings import load_settings


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

    app = create_app(load_settings())
    uvicorn.run(app, host=host, port=port, log_level=log_level)
