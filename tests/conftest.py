"""Shared fixtures: real SQLite files and a real PostgreSQL database.

The one conftest of the suite (the test folders are not packages, so a second
``conftest`` module would clash under mypy); the integration, API and worker
suites all use these.

PostgreSQL is the machine's server on 127.0.0.1:5432 (trust auth). Each test
session creates its own uniquely named database and drops it afterwards. When
the server is not answering, PostgreSQL tests are skipped locally but *fail*
under ``CI=true``: CI must never pass by skipping a backend.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI") == "true"


def require(available: bool, message: str) -> None:
    """Skip a test whose service or binary is missing, except under CI=true,
    where it fails: CI must never pass by skipping what it cannot run."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service fails, never skips)")
    pytest.skip(message)


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session."""
    require(_pg_available(), "PostgreSQL is not answering on 127.0.0.1:5432")
    name = f"crsmon_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_schema(url: str) -> str:
    """Empty a PostgreSQL database (drop and recreate its public schema)."""
    admin_url = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend (PostgreSQL: reset per test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crsmon.sqlite3'}"
    return reset_schema(request.getfixturevalue("postgres_url"))


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head, disposed after the test."""
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def sessions(migrated_engine: Engine) -> sessionmaker[Session]:
    """A session factory on the migrated database."""
    return make_sessions(migrated_engine)


@contextmanager
def guards_off(engine: Engine, table: str) -> Iterator[None]:
    """Lift the append-only triggers of ``table`` for a test's deliberate edit.

    Tests use this to fabricate states the service never produces (a stale
    grade, grades wiped to regrade from nothing); the triggers come back after.
    """
    found: list[Any] = []
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:
            found = [
                *connection.execute(
                    text(
                        "SELECT name, sql FROM sqlite_master "
                        "WHERE type = 'trigger' AND tbl_name = :t"
                    ),
                    {"t": table},
                )
            ]
            for name, _ in found:
                connection.execute(text(f"DROP TRIGGER {name}"))
    try:
        yield
    finally:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
            else:
                for _, sql in found:
                    connection.execute(text(sql))


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Undo ``configure_logging`` (``crsmon serve`` in process) after each test."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "celery")
    saved = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).level,
            logging.getLogger(name).propagate,
        )
        for name in names
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
