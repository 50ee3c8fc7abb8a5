"""Alembic environment: crsmon's metadata, the URL from the caller's config.

Batch mode on SQLite (it cannot ALTER most things); types compared on autogenerate.
"""

from __future__ import annotations

from alembic import context

from crsmon.db.engine import make_engine
from crsmon.db.migrate import render_item
from crsmon.db.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
if url is None:  # pragma: no cover - crsmon.db.migrate always sets it
    raise RuntimeError("sqlalchemy.url is not set")

engine = make_engine(url)
try:
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
finally:  # a failed (or refused) migration must not leave a connection open
    engine.dispose()
