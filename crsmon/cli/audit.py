"""``crsmon audit``: verify the hash chains; show a patient's or a chain's events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy.orm import Session, sessionmaker

from crsmon.cli.tables import console
from crsmon.db.audit import events, patient_chain, verify
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.repository import UnknownPatientError, patient_by_pseudonym
from crsmon.settings import load_settings


@contextmanager
def _sessions() -> Iterator[sessionmaker[Session]]:
    engine = make_engine(load_settings().database_url)
    try:
        yield make_sessions(engine)
    finally:
        engine.dispose()


@click.group()
def audit() -> None:
    """The append-only, hash-chained audit trail (CRSMON_DATABASE_URL)."""


@audit.command("verify")
@click.option("--chain", default=None, help="Only this chain (default: all).")
@click.option("--json", "as_json", is_flag=True, help="The result as JSON.")
def verify_command(chain: str | None, as_json: bool) -> None:
    """Recompute every chain; exit 1 if any event was altered, removed or inserted.

    Prints each chain's head hash: keep them outside the database (a log,
    a ticket, an export header) to anchor the trail.
    """
    with _sessions() as sessions, sessions() as session:
        result = verify(session, chain)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "chains": result.chains,
                    "events": result.events,
                    "breaks": [
                        {"chain": b.chain, "seq": b.seq, "problem": b.problem}
                        for b in result.breaks
                    ],
                    "heads": result.heads,
                },
                indent=2,
            )
        )
    else:
        for name, head in sorted(result.heads.items()):
            click.echo(f"{name}\t{head}")
        for problem in result.breaks:
            click.echo(
                f"BROKEN {problem.chain} at seq {problem.seq}: {problem.problem}",
                err=True,
            )
        verdict = "verified" if result.ok else f"{len(result.breaks)} chain(s) broken"
        click.echo(f"{result.events} events in {result.chains} chains: {verdict}")
    raise SystemExit(0 if result.ok else 1)


@audit.command("show")
@click.option("--patient", "pseudonym", default=None, help="A patient's pseudonym.")
@click.option("--chain", default=None, help="A chain: admin, security, quarantine.")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
def show_command(
    pseudonym: str | None, chain: str | None, limit: int, as_json: bool
) -> None:
    """The events of one patient (--patient) or one chain (--chain), oldest first."""
    if (pseudonym is None) == (chain is None):
        raise click.UsageError("give exactly one of --patient and --chain")
    with _sessions() as sessions, sessions() as session:
        if pseudonym is not None:
            try:
                patient = patient_by_pseudonym(session, pseudonym)
            except UnknownPatientError:
                raise click.BadParameter(
                    "no patient is enrolled under it", param_hint="--patient"
                ) from None
            chain = patient_chain(patient.id)
        rows = events(session, chain=chain, limit=limit)
    if as_json:
        for row in rows:
            click.echo(
                json.dumps(
                    {
                        "chain": row.chain,
                        "seq": row.seq,
                        "occurred_at": row.occurred_at.isoformat(),
                        "actor": row.actor,
                        "actor_role": row.actor_role,
                        "action": row.action,
                        "entity": row.entity,
                        "entity_id": row.entity_id,
                        "reason": row.reason,
                        "details": row.details,
                        "request_id": row.request_id,
                        "hash": row.hash,
                    }
                )
            )
        return
    from rich.table import Table

    table = Table("seq", "when (UTC)", "actor", "action", "entity", "why")
    for row in rows:
        table.add_row(
            str(row.seq),
            f"{row.occurred_at:%Y-%m-%d %H:%M:%S}",
            f"{row.actor} ({row.actor_role})",
            row.action,
            f"{row.entity} {row.entity_id or ''}".strip(),
            row.reason or "",
        )
    console().print(table)
