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
