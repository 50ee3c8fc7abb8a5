"""``crsmon mllp``: the HL7 v2 MLLP listener (``crsmon ingest --hl7`` reads files)."""

from __future__ import annotations

import asyncio

import click

from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.logs import configure_logging
from crsmon.services.dispatch import BackgroundDispatcher
from crsmon.services.mllp import serve
from crsmon.settings import load_settings


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback unless you say otherwise).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=2575,
    show_default=True,
    help="TCP port (0: any free port, printed).",
)
def mllp(host: str, port: int) -> None:
    """Take HL7 v2 ORU^R01 over MLLP and answer each with an ACK.

    Only sending facilities in CRSMON_HL7_FACILITIES are taken (others: AR).
    """
    from crsmon.api.app import default_dispatcher  # FastAPI loads for this only

    settings = load_settings()
    upgrade(settings.database_url)
    configure_logging()
    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)
    facilities = frozenset(settings.hl7_facilities)
    if not facilities:
        click.echo("warning: CRSMON_HL7_FACILITIES is empty: every message gets AR",
                   err=True)  # fmt: skip

    def ready(bound: int) -> None:
        click.echo(f"crsmon mllp listening on {host}:{bound}", err=True)

    dispatcher = default_dispatcher(sessions, settings)
    try:
        asyncio.run(
            serve(
                sessions,
                dispatcher,
                host=host,
                port=port,
                facilities=facilities,
                pepper=settings.pepper(),
                ready=ready,
            )
        )
    except KeyboardInterrupt:
        pass
    finally:
        if isinstance(dispatcher, BackgroundDispatcher):
            dispatcher.close()
        engine.dispose()
