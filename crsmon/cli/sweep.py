"""``crsmon sweep``: the embedded default's periodic duties (beat's, for workers)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click
from sqlalchemy.exc import SQLAlchemyError

from crsmon.db.engine import make_engine, make_sessions
from crsmon.domain.catalog import resolve_rule_set
from crsmon.services.dispatch import InProcessDispatcher
from crsmon.services.monitoring import AlertPolicy
from crsmon.services.sweep import SweepReport, sweep_in_process
from crsmon.services.webhooks import WebhookPolicy
from crsmon.settings import load_settings


def describe(report: SweepReport) -> str:
    """One line: what the sweep graded, raised and delivered."""
    d = report.deliveries
    return (
        f"sweep: {report.waiting_patients} waiting and {report.quiet_patients} "
        f"quiet patients graded ({report.failed_patients} failed), "
        f"{report.alerts_raised} alerts raised; webhooks: "
        f"{d.attempted} attempted, {d.delivered} delivered, {d.retrying} to retry, "
        f"{d.failed} failed"
    )


@click.command()
@click.option(
    "--every",
    type=click.FloatRange(min=1),
    default=None,
    metavar="SECONDS",
    help="Sweep again every SECONDS until interrupted (default: once).",
)
def sweep(every: float | None) -> None:
    """Grade waiting and quiet patients, and send due webhook pushes.

    On the embedded default (no CRSMON_BROKER_URL) nothing else does this: run
    it from cron or a timer, or with --every beside `crsmon serve`. With a
    broker, `crsmon beat` schedules the same work for the workers.
    """
    settings = load_settings()
    engine = make_engine(settings.database_url)
    dispatcher = InProcessDispatcher(
        make_sessions(engine),
        resolve_rule_set(settings.rule_set),
        AlertPolicy.from_settings(settings),
        webhooks=WebhookPolicy.from_settings(settings),
    )
    try:
        while True:
            try:
                report = sweep_in_process(
                    dispatcher,
                    now=datetime.now(UTC),
                    pending_after_s=settings.sweep_pending_after_s,
                )
            except SQLAlchemyError as exc:
                if every is None:
                    raise click.ClickException(
                        f"sweep failed: the database did not answer "
                        f"({type(exc).__name__})"
                    ) from None
                # A loop that stopped would end quiet-patient monitoring unnoticed.
                click.echo(f"sweep failed ({type(exc).__name__}); retrying", err=True)
            else:
                click.echo(describe(report))
                if every is None:
                    return
            time.sleep(every)
    finally:
        engine.dispose()
