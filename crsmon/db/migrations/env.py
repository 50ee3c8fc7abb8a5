"""Alembic environment: crsmon's metadata, the URL from the caller's config.

Batch mode on SQLite (it cannot ALTER most things); types compared on autogenerate.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext

from crsmon.db.engine import make_engine
from crsmon.db.models import Base, UtcDateTime


# Alembic calls render_item(kind, obj, autogen); the context is not needed here.
def render_item(kind: str, obj: Any, autogen: AutogenContext) -> str | Literal[False]:  # noqa: ARG001
    """Render UtcDateTime as the plain column type it stores (no package import)."""
    if kind == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


config = context.config
url = config.get_main_option("sqlalchemy.url")
if url is None:  # pragma: no cover - crsmon.db.migrate always sets it
    raise RuntimeError("sqlalchemy.url is not set")

engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
