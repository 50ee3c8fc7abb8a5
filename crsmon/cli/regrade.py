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
    "each; on SQLite they take turns at the one writer lock).",
)
def regrade(rule_set: RuleSet, jobs: int) -> None:
    """Regrade every patient's history under --rule-set, writing new grade rows.

    Rows of other rule sets are never changed or removed; no alerts are raised.
    The run is one event in the audit trail (admin chain), not one per row.
    """
    settings = load_settings()
    started = datetime.now(UTC)
    done = regrade_all(settings, rule_set, jobs=jobs)
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
                },
            )
    finally:
        engine.dispose()
    click.echo(
        f"regraded {done.patients} patients under {rule_set.key}: "
        f"{done.grade_rows_written} grade rows written"
    )
