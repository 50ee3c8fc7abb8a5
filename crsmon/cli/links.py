"""``crsmon links add|list|remove``: a site's patient references, linked to
crsmon patients.

The standard feeds name patients the site's way: a FHIR ``Patient/<id>``
reference, a FHIR identifier or an HL7 v2 PID-3 id (``system|value``). An
administrator links each to the pseudonymous crsmon patient; only the
reference's keyed hash is stored (CRSMON_KEY_PEPPER), never the reference.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from crsmon.cli.keys import database
from crsmon.cli.options import local_actor
from crsmon.services.interfaces import (
    LINK_KINDS,
    LinkError,
    link_patient,
    list_links,
    unlink,
)


@click.group()
def links() -> None:
    """Link site patient references to crsmon patients (standard feeds)."""


@links.command("add")
@click.option(
    "--kind",
    type=click.Choice(LINK_KINDS),
    required=True,
    help="reference: a FHIR 'Patient/<id>'; identifier: 'system|value' (FHIR "
    "identifier, HL7 v2 PID-3 as 'authority|id').",
)
@click.option("--ref", required=True, help="The site's reference (not stored).")
@click.option("--patient", required=True, help="The crsmon pseudonym.")
def add_command(kind: str, ref: str, patient: str) -> None:
    """Link one reference (idempotent; audited on the patient's chain)."""
    with database() as (sessions, settings):
        try:
            with sessions.begin() as session:
                link = link_patient(
                    session,
                    kind=kind,
                    ref=ref,
                    pseudonym=patient,
                    pepper=settings.pepper(),
                    actor=local_actor(),
                    now=datetime.now(UTC),
                )
                link_id = link.id
        except LinkError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"linked ({kind}, link {link_id}) to {patient}")


@links.command("list")
@click.option("--patient", default=None, help="Only this crsmon pseudonym's links.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of lines.")
def list_command(patient: str | None, as_json: bool) -> None:
    """Every link, oldest first: id, kind, patient, when and by whom (never the
    site's reference, which is not stored)."""
    with database() as (sessions, _), sessions() as session:
        rows = list_links(session, patient)
    for row in rows:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "id": row.id,
                        "kind": row.kind,
                        "patient": row.patient,
                        "created_at": row.created_at.isoformat(),
                        "created_by": row.created_by,
                    }
                )
            )
        else:
            click.echo(
                f"{row.id}\t{row.kind}\t{row.patient}\t"
                f"{row.created_at.isoformat()}\t{row.created_by}"
            )
    if not rows and not as_json:
        click.echo("no links", err=True)


@links.command("remove")
@click.argument("link_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
def remove_command(link_id: int, reason: str) -> None:
    """Remove one link (audited with its reason). Records already received
    through it stay with its patient: retract them if they were not theirs."""
    with database() as (sessions, _):
        try:
            with sessions.begin() as session:
                row = unlink(
                    session,
                    link_id,
                    reason=reason,
                    actor=local_actor(),
                    now=datetime.now(UTC),
                )
        except LinkError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"removed link {row.id} ({row.kind}) of {row.patient}")
