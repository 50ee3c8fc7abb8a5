"""``crsmon regrade``: grade the stored history again under another rule set."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from sqlalchemy import select

from crsmon.cli.options import local_actor, rule_set_option
from crsmon.db.audit import ADMIN, record_event
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.models import Patient
from crsmon.domain.rules import RuleSet
from crsmon.services.grading import grade_patients
from crsmon.services.monitoring import AlertPolicy
from crsmon.settings import load_settings

REGRADE_BATCH = 32
"""Patients regraded per transaction (their new moments scored in one call)."""


@click.command()
@rule_set_option
def regrade(rule_set: RuleSet) -> None:
    """Regrade every patient's history under --rule-set, writing new grade rows.

    Rows of other rule sets are never changed or removed; no alerts are raised.
    The run is one event in the audit trail (admin chain), not one per row.
    """
    settings = load_settings()
    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)
    written = 0
    started = datetime.now(UTC)
    try:
        with sessions() as session:
            patient_ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
        policy = AlertPolicy.from_settings(settings)
        for start in range(0, len(patient_ids), REGRADE_BATCH):
            with sessions.begin() as session:  # one transaction, one model call
                runs = grade_patients(
                    session,
                    patient_ids[start : start + REGRADE_BATCH],
                    rule_set,
                    now=datetime.now(UTC),
                    policy=policy,
                    live=False,
                )
            written += sum(run.grades_written for run in runs.values())
        with sessions.begin() as session:  # one event per run, not per row
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
                    "patients": len(patient_ids),
                    "grade_rows_written": written,
                    "started_at": started.isoformat(),
                },
            )
    finally:
        engine.dispose()
    click.echo(
        f"regraded {len(patient_ids)} patients under {rule_set.key}: "
        f"{written} grade rows written"
    )
