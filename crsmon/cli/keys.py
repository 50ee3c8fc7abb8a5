"""``crsmon keys``: create, list and revoke API keys (run on the server).

The command line acts with the database's own credentials, as the local
operator (``local:<os user>`` in the audit trail); it is how the first admin
key is made. A key's full text is printed once, at creation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import click
from sqlalchemy.orm import Session, sessionmaker

from crsmon.auth.policy import ROLES
from crsmon.cli.options import local_actor
from crsmon.cli.tables import console
from crsmon.db.engine import make_engine, make_sessions
from crsmon.services.keys import KeyRefusal, create_key, list_keys, revoke_key
from crsmon.settings import Settings, load_settings


@contextmanager
def database() -> Iterator[tuple[sessionmaker[Session], Settings]]:
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        yield make_sessions(engine), settings
    finally:
        engine.dispose()


@click.group()
def keys() -> None:
    """Manage API keys (CRSMON_DATABASE_URL, CRSMON_KEY_PEPPER)."""


@keys.command("create")
@click.option("--name", required=True, help="Who holds it: a person or a device.")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option(
    "--unit",
    "units",
    multiple=True,
    help="A care unit it acts for (repeat); '*' for every unit. "
    "Needed for bedside and reviewer keys.",
)
@click.option(
    "--expires-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Expire after this many days (default: never; rotate by revoking).",
)
def create_command(
    name: str, role: str, units: tuple[str, ...], expires_days: float | None
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    now = datetime.now(UTC)
    expires = None if expires_days is None else now + timedelta(days=expires_days)
    try:
        with database() as (sessions, settings), sessions.begin() as session:
            row, text = create_key(
                session,
                name=name,
                role=role,
                units=list(units),
                expires_at=expires,
                actor=local_actor(),
                now=now,
                pepper=settings.pepper(),
            )
    except KeyRefusal as exc:
        raise click.BadParameter(exc.reason, param_hint=f"--{exc.field}") from None
    click.echo(
        f"created {row.role} key {row.key_id} for {row.name!r} "
        f"(units: {', '.join(row.units)}"
        + (f"; expires {row.expires_at:%Y-%m-%dT%H:%MZ}" if row.expires_at else "")
        + "). The key, shown this once:",
        err=True,
    )
    click.echo(text)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def list_command(as_json: bool) -> None:
    """Every key, newest first (never a secret)."""
    with database() as (sessions, _), sessions() as session:
        rows = list_keys(session)
    now = datetime.now(UTC)
    if as_json:
        for row in rows:
            click.echo(
                json.dumps(
                    {
                        "key_id": row.key_id,
                        "name": row.name,
                        "role": row.role,
                        "units": row.units,
                        "created_at": row.created_at.isoformat(),
                        "expires_at": row.expires_at and row.expires_at.isoformat(),
                        "revoked_at": row.revoked_at and row.revoked_at.isoformat(),
                    }
                )
            )
        return
    from rich.table import Table

    table = Table("key id", "name", "role", "units", "created", "state")
    for row in rows:
        if row.revoked_at is not None:
            state = f"revoked {row.revoked_at:%Y-%m-%d}"
        elif row.expires_at is not None and row.expires_at <= now:
            state = f"expired {row.expires_at:%Y-%m-%d}"
        else:
            state = "active"
        table.add_row(
            row.key_id,
            row.name,
            row.role,
            ", ".join(row.units),
            f"{row.created_at:%Y-%m-%d}",
            state,
        )
    console().print(table)


@keys.command("revoke")
@click.argument("key_id")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
def revoke_command(key_id: str, reason: str) -> None:
    """Revoke a key now; it stops working on its next request."""
    try:
        with database() as (sessions, _), sessions.begin() as session:
            row = revoke_key(
                session,
                key_id,
                reason=reason,
                actor=local_actor(),
                now=datetime.now(UTC),
            )
    except KeyRefusal as exc:
        raise click.ClickException(f"{exc.field}: {exc.reason}") from None
    click.echo(f"revoked {row.key_id} ({row.name}) at {row.revoked_at:%Y-%m-%dT%H:%MZ}")
