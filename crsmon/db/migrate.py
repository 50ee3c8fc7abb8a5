"""Run Alembic migrations from inside the package (``crsmon db upgrade``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config

from crsmon.db.models import UtcDateTime

MIGRATIONS = Path(__file__).parent / "migrations"


# Alembic calls render_item(kind, obj, autogen); the context is not needed here.
def render_item(kind: str, obj: Any, autogen: AutogenContext) -> str | Literal[False]:  # noqa: ARG001
    """Render UtcDateTime as the plain column type it stores (no package import)."""
    if kind == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def alembic_config(database_url: str) -> Config:
    """An Alembic config for ``database_url`` using the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database schema up to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)


def check(database_url: str) -> None:
    """Fail if the models and the migrations disagree (``alembic check``)."""
    command.check(alembic_config(database_url))
