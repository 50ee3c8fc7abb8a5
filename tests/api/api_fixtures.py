"""Fixtures of the API tests: ``pytest_plugins = ("api_fixtures",)`` loads them.

A second ``conftest.py`` would clash with ``tests/integration/conftest.py``
under mypy (the test folders are not packages), so the fixtures live here. The
database fixtures follow ``tests/integration/conftest.py``: a SQLite file and a
real PostgreSQL database per test, migrated to head as ``crsmon db upgrade``
would; PostgreSQL is skipped locally when absent but fails under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
from api_feed import MakeClient, TestClient
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.app import DispatcherFactory, create_app
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.settings import Settings

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def api_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session."""
    if not _pg_available():
        message = "PostgreSQL is not answering on 127.0.0.1:5432"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = f"crsmon_api_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def api_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend, migrated to head (as `crsmon db upgrade`)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'crsmon.sqlite3'}"
    else:
        url = request.getfixturevalue("api_postgres_url")
        admin_url = url.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
    upgrade(url)
    return url


@pytest.fixture
def make_client(api_database_url: str) -> Iterator[MakeClient]:
    """Build a started app on the test database: ``make_client(**settings)``."""
    with ExitStack() as stack:

        def make(
            dispatcher_factory: DispatcherFactory | None = None, **overrides: Any
        ) -> TestClient:
            fields = {"database_url": api_database_url, "broker_url": None}
            settings = Settings(**(fields | overrides))
            app = create_app(settings, dispatcher_factory)
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    """A started app with the default settings (in-process grading)."""
    return make_client()


@pytest.fixture
def db_sessions(api_database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test database, to look behind the API."""
    engine = make_engine(api_database_url)
    try:
        yield make_sessions(engine)
    finally:
        engine.dispose()
