"""``crsmon regrade``: grade the stored history again under another rule set."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from crsmon.cli.options import local_actor, rule_set_option
from crsmon.db.audit import ADMIN, record_event
from crsmon.db.engine import make_engine, make_sessions
from crsmon.domain.rules import RuleSet
from crsmon.services.regrade import regrade_all
from crsmon.settings import load_settings


@click.command()
@rule_set_option
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes regrading batches of patients side by side (one core "
    "each; PostgreSQL only: SQLite has one writer).",
)
def regrade(rule_set: RuleSet, jobs: int) -> None:
    """Regrade every patient's history under --rule-set, writing new grade rows.

    Rows of other rule sets are never changed or removed; no alerts are raised.
    The run is one event in the audit trail (admin chain), not one per row,
    also when a batch fails and stops it (with what the committed batches
    wrote; running it again writes only what is missing).
    """
    settings = load_settings()
    started = datetime.now(UTC)
    try:
        done = regrade_all(settings, rule_set, jobs=jobs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--jobs") from None
    engine = make_engine(settings.database_url)
    try:
        with make_sessions(engine).begin() as session:  # one event per run
            record_event(
                session,
                chain=ADMIN,
                actor=local_actor(),
                action="regrade",
                entity="rule_set",
                entity_id=rule_set.key,
                now=datetime.now(UTC),
                details={
                    "rule_set": rule_set.key,
                    "patients": done.patients,
                    "grade_rows_written": done.grade_rows_written,
                    "started_at": started.isoformat(),
                    "jobs": jobs,
                    "processes": done.processes,
                    "complete": done.failure is None,
                    # the class only: a message may quote stored values
                    "failure": None
                    if done.failure is None
                    else type(done.failure).__name__,
                },
            )
    finally:
        engine.dispose()
    if done.failure is not None:
        click.echo(
            f"regrade under {rule_set.key} stopped by a failed batch: "
            f"{done.grade_rows_written} grade rows written by the batches that "
            "committed; run it again to finish",
            err=True,
        )
        raise done.failure
    click.echo(
        f"regraded {done.patients} patients under {rule_set.key}: "
        f"{done.grade_rows_written} grade rows written"
    )
