"""``crsmon db``: database schema management."""

from __future__ import annotations

import click

from crsmon.db.migrate import check, upgrade
from crsmon.settings import load_settings


@click.group()
def db() -> None:
    """Manage the database schema (CRSMON_DATABASE_URL; SQLite file by default)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def upgrade_command(revision: str) -> None:
    """Apply migrations up to REVISION (run once, before the API and workers)."""
    upgrade(load_settings().database_url, revision)


@db.command("check")
def check_command() -> None:
    """Fail if the models and the migrations disagree."""
    check(load_settings().database_url)


@db.command("grant-app-role")
@click.argument("role")
def grant_command(role: str) -> None:
    """Give PostgreSQL ROLE the application's least privileges (run as owner).

    The API and workers then connect as ROLE: they can write records and
    grades but cannot update or delete the audit trail, grades or
    adjudications, nor rewrite a clinical value in place.
    """
    from crsmon.db.engine import make_engine
    from crsmon.db.grants import grant_app_role

    engine = make_engine(load_settings().database_url)
    try:
        statements = grant_app_role(engine, role)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    for statement in statements:
        click.echo(f"{statement};")
